"""Definitions (jobs, commands, executors) of a config and its orbs, by name.

A :class:`Namespace` is one config or one orb. Names inside it are local
(``install-packages``); an orb's elements are reached as ``alias/name`` from
the namespace that imports it, and an orb's own ``orbs:`` are private to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from circlet import settings
from circlet.config.errors import ORB_NOT_AVAILABLE, Problems
from circlet.config.load import YList, YMap, load_text
from circlet.config.orbs import OrbError, resolve_orb
from circlet.config.params import ParamSpec, parse_specs
from circlet.plan import Location

Kind = Literal["jobs", "commands", "executors"]
KINDS: tuple[Kind, ...] = ("jobs", "commands", "executors")
_ORB_KEYS = {
    "version",
    "description",
    "display",
    "orbs",
    "commands",
    "jobs",
    "executors",
    "examples",
}
_MAX_ORB_DEPTH = 20


@dataclass
class Definition:
    """A job, command or executor as written, with where to resolve its names."""

    kind: Kind
    name: str  # local name
    qualified: str  # name as the config's user sees it: "build", "python/test"
    body: YMap
    namespace: Namespace
    path: str  # config path of the definition: "jobs.build", "orbs.python.jobs.test"
    location: Location | None
    _params: dict[str, ParamSpec] | None = None

    def params(self, problems: Problems) -> dict[str, ParamSpec]:
        """The declared parameters (parsed once)."""
        if self._params is None:
            self._params = parse_specs(
                self.body.get("parameters"),
                f"{self.path}.parameters",
                problems,
                where=self.body.key_loc("parameters"),
            )
        return self._params

    @property
    def label(self) -> str:
        """How messages name it: "job 'build'"."""
        return f"{self.kind[:-1]} {self.qualified!r}"


@dataclass
class MissingOrb:
    """An orb that could not be loaded; referencing it is an error."""

    alias: str
    ref: str
    reason: str
    reported: bool = False  # its first use gave the full reason
    invalid: bool = False  # the reference itself is malformed (already an error)


@dataclass
class Namespace:
    """One config or orb: its definitions and the orbs it imports."""

    prefix: str  # "" for the config, "python" (or "a/b" nested) for an orb
    path: str  # config path of this orb: "" or "orbs.python"
    definitions: dict[str, dict[str, Definition]] = field(
        default_factory=lambda: {k: {} for k in KINDS}
    )
    orbs: dict[str, Namespace | MissingOrb] = field(default_factory=dict)
    used_orbs: set[str] = field(default_factory=set)

    def find(self, kind: Kind, name: str) -> Definition | MissingOrb | None:
        """The definition ``name`` refers to here (``alias/name`` goes into an orb)."""
        alias, slash, rest = name.partition("/")
        if slash:
            orb = self.orbs.get(alias)
            if orb is None:
                return None
            self.used_orbs.add(alias)
            if isinstance(orb, MissingOrb):
                return orb
            return orb.find(kind, rest)
        return self.definitions[kind].get(name)


def missing_orb_message(orb: MissingOrb) -> str:
    """The error for using an element of an orb that is not available.

    The first use says where circlet looked; later ones only name the orb.
    """
    if orb.reported:
        return f"{ORB_NOT_AVAILABLE} {orb.ref} (alias {orb.alias!r})"
    orb.reported = True
    return f"{ORB_NOT_AVAILABLE} {orb.ref} (alias {orb.alias!r}): {orb.reason}"


class ScopedName(str):
    """An executor name passed as an argument: resolved where it was written."""

    namespace: Namespace


class ScopedMap(YMap):
    """An executor mapping (``{name: …}``) passed as an argument."""

    __slots__ = ("namespace",)
    namespace: Namespace


class ScopedSteps(YList):
    """Steps passed as an argument: their commands are the caller's."""

    __slots__ = ("namespace",)
    namespace: Namespace


def scoped(kind: str, value: Any, caller: Namespace) -> Any:
    """An ``executor`` or ``steps`` argument tagged with the namespace it was written in.

    CircleCI resolves names in an argument where the argument is written, so a
    config's own command passed to an orb job's ``steps`` parameter still works.
    """
    out: Any
    if kind == "steps" and isinstance(value, YList) and not isinstance(value, ScopedSteps):
        out = ScopedSteps(value.file, value.line, value.col)
        out.item_locs = value.item_locs
        out.extend(value)
    elif kind == "executor" and isinstance(value, YMap) and not isinstance(value, ScopedMap):
        out = ScopedMap(value.file, value.line, value.col)
        out.key_locs = value.key_locs
        out.update(value)
    elif kind == "executor" and isinstance(value, str) and not isinstance(value, ScopedName):
        out = ScopedName(value)
    else:
        return value
    out.namespace = caller
    return out


OrbResolver = Callable[[str], tuple[str, str]]  # ref -> (yaml text, origin file)


class NamespaceBuilder:
    """Builds the namespace tree of a config, loading orbs once per reference."""

    def __init__(
        self,
        problems: Problems,
        orb_dirs: Sequence[Path],
        substitute_ref: Callable[[str, Location | None, str], Any],
    ) -> None:
        self.problems = problems
        self.orb_dirs = tuple(orb_dirs)
        self.substitute_ref = substitute_ref
        self._loaded: dict[str, Namespace | MissingOrb] = {}
        self.refs: dict[str, str] = {}  # top-level alias -> ref or "<inline>"

    def build(self, root: YMap, prefix: str = "", path: str = "", depth: int = 0) -> Namespace:
        """The namespace of a config (or orb) mapping."""
        ns = Namespace(prefix, path)
        for kind in KINDS:
            section = root.get(kind)
            if section is None:
                continue
            spath = f"{path}.{kind}" if path else kind
            if not isinstance(section, YMap):
                self.problems.error(f"{kind} must be a mapping of names", root.key_loc(kind), spath)
                continue
            for name, body in section.items():
                loc = section.key_loc(name)
                dpath = f"{spath}.{name}"
                if "/" in name:
                    self.problems.error(f"{kind[:-1]} name {name!r} cannot contain '/'", loc, dpath)
                    continue
                if not isinstance(body, YMap):
                    self.problems.error(f"{kind[:-1]} {name!r} must be a mapping", loc, dpath)
                    continue
                qualified = f"{prefix}/{name}" if prefix else name
                ns.definitions[kind][name] = Definition(kind, name, qualified, body, ns, dpath, loc)
        orbs = root.get("orbs")
        if orbs is not None:
            self._orbs(ns, root, orbs, prefix=prefix, path=path, depth=depth)
        return ns

    def _orbs(
        self, ns: Namespace, root: YMap, orbs: Any, *, prefix: str, path: str, depth: int
    ) -> None:
        opath = f"{path}.orbs" if path else "orbs"
        if not isinstance(orbs, YMap):
            self.problems.error(
                "orbs must be a mapping of alias to orb", root.key_loc("orbs"), opath
            )
            return
        for alias, value in orbs.items():
            loc = orbs.key_loc(alias)
            apath = f"{opath}.{alias}"
            child_prefix = f"{prefix}/{alias}" if prefix else alias
            if isinstance(value, YMap):
                for key in value:
                    if key not in _ORB_KEYS:
                        self.problems.error(
                            f"unknown key {key!r} in inline orb {alias!r}",
                            value.key_loc(key),
                            apath,
                        )
                if depth >= _MAX_ORB_DEPTH:
                    self.problems.error("orbs nested too deeply", loc, apath)
                    continue
                ns.orbs[alias] = self.build(value, child_prefix, apath, depth + 1)
                if not path:
                    self.refs[alias] = "<inline>"
                continue
            if not isinstance(value, str):
                self.problems.error(
                    f"orb {alias!r} must be a reference like ns/name@version or an inline orb",
                    loc,
                    apath,
                )
                continue
            ref = self.substitute_ref(value, loc, apath)
            if not isinstance(ref, str):
                ref = str(ref)
            if not path:
                self.refs[alias] = ref
            ns.orbs[alias] = self._load(
                alias, ref, loc=loc, path=apath, prefix=child_prefix, depth=depth
            )

    def _load(
        self, alias: str, ref: str, *, loc: Location | None, path: str, prefix: str, depth: int
    ) -> Namespace | MissingOrb:
        key = f"{prefix}\0{ref}"
        if key in self._loaded:
            return self._loaded[key]
        if depth >= _MAX_ORB_DEPTH:
            self.problems.error(f"orbs nested too deeply at {ref}", loc, path)
            return MissingOrb(alias, ref, "orbs nested too deeply")
        try:
            # The registry cache is read offline; the network is only tried when allowed.
            source = resolve_orb(
                ref,
                orb_dirs=self.orb_dirs,
                cache_dir=Path(settings.HOME.get()) / "orb-cache",
                allow_network=settings.ORB_NETWORK.get() == "1",
            )
        except ValueError as exc:
            self.problems.error(str(exc), loc, path)
            result: Namespace | MissingOrb = MissingOrb(alias, ref, str(exc), invalid=True)
        except (OrbError, OSError) as exc:
            result = MissingOrb(alias, ref, str(exc))
        else:
            # Mark the slot first so an orb that imports itself ends here.
            self._loaded[key] = MissingOrb(alias, ref, "orb imports itself")
            data = load_text(source.text, source.origin, self.problems)
            if not isinstance(data, YMap):
                self.problems.error(f"orb {ref} ({source.origin}) is not a mapping", loc, path)
                result = MissingOrb(alias, ref, "not a mapping")
            else:
                result = self.build(data, prefix, path, depth + 1)
        self._loaded[key] = result
        return result
