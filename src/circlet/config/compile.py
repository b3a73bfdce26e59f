"""Entry points: config text or file → :class:`plan.Pipeline` (or every problem)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from circlet import plan
from circlet.config.context import Context
from circlet.config.errors import ConfigError, Problem, Problems
from circlet.config.jobs import JobCompiler
from circlet.config.load import YMap, load_text
from circlet.config.namespace import MissingOrb, NamespaceBuilder
from circlet.config.subst import Bindings, Substituter
from circlet.config.values import complete_values, pipeline_parameters
from circlet.config.workflows import WorkflowCompiler
from circlet.plan import Location

TOP_LEVEL_KEYS = (
    "version",
    "jobs",
    "workflows",
    "orbs",
    "commands",
    "executors",
    "parameters",
    "setup",
)
_V21_ONLY = ("orbs", "commands", "executors", "parameters", "setup")


def _version(root: YMap, problems: Problems, filename: str) -> str | None:
    if "version" not in root:
        problems.error(
            "the config has no 'version' (expected 2.1)", root.loc() or Location(filename, 1, 1)
        )
        return None
    raw = root["version"]
    text = (
        str(raw).strip() if isinstance(raw, str | int | float) and not isinstance(raw, bool) else ""
    )
    if text in ("2", "2.0"):
        return "2"
    if text == "2.1":
        return "2.1"
    problems.error(
        f"version {raw!r} is not supported (expected 2, 2.0 or 2.1)",
        root.key_loc("version"),
        "version",
    )
    return None


def compile_with_problems(
    text: str,
    *,
    filename: str = "config.yml",
    values: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    orb_dirs: Sequence[Path] = (),
) -> tuple[plan.Pipeline | None, list[Problem]]:
    """Compile config text; (Pipeline or None when there are errors, every problem)."""
    problems = Problems()
    pipeline = _compile(
        text,
        filename=filename,
        values=values,
        params=params,
        orb_dirs=orb_dirs,
        problems=problems,
    )
    found = problems.sorted()
    if problems.has_errors:
        return None, found
    return pipeline, found


def _compile(
    text: str,
    *,
    filename: str,
    values: Mapping[str, Any] | None,
    params: Mapping[str, Any] | None,
    orb_dirs: Sequence[Path],
    problems: Problems,
) -> plan.Pipeline | None:
    root = load_text(text, filename, problems)
    if root is None:
        if not problems.has_errors:
            problems.error("the config is empty", Location(filename, 1, 1))
        return None
    if not isinstance(root, YMap):
        problems.error(
            "the config must be a mapping (version, jobs, workflows…)", Location(filename, 1, 1)
        )
        return None
    version = _version(root, problems, filename)
    v21 = version != "2"
    if not v21:
        for key in _V21_ONLY:
            if key in root:
                problems.error(f"{key} needs version 2.1", root.key_loc(key), key)
    setup = root.get("setup", False)
    if not isinstance(setup, bool):
        problems.error("setup must be true or false", root.key_loc("setup"), "setup")
        setup = False
    pvalues = complete_values(values)
    if setup:
        pvalues["pipeline.in_setup"] = True
    specs, pparams = pipeline_parameters(root, params if v21 else None, problems, filename)
    subst = Substituter(problems)
    base = Bindings(pipeline=pvalues, pipeline_params=pparams, enabled=v21)
    # Defaults of pipeline parameters may use pipeline values.
    for name in list(pparams):
        if name not in (params or {}):
            pparams[name] = subst.value(
                pparams[name], base, specs[name].location, f"parameters.{name}"
            )
    ctx = Context(problems=problems, subst=subst, base=base, v21=v21)

    def substitute_ref(value: str, where: Location | None, path: str) -> Any:
        return subst.value(value, base, where, path)

    builder = NamespaceBuilder(problems, orb_dirs, substitute_ref)
    namespace = builder.build(root if v21 else _without_orbs(root))
    jobs = JobCompiler(ctx, namespace)
    workflows = WorkflowCompiler(ctx, namespace, jobs).compile_all(root)
    for alias, orb in namespace.orbs.items():
        if isinstance(orb, MissingOrb) and not orb.invalid and alias not in namespace.used_orbs:
            problems.warning(
                f"orb {orb.ref} (alias {alias!r}) is not available, "
                f"but nothing uses it: {orb.reason}",
                root["orbs"].key_loc(alias),
                f"orbs.{alias}",
            )
    return plan.Pipeline(
        version=version or "2.1",
        workflows=tuple(workflows),
        setup=setup,
        pipeline_values=dict(pvalues),
        parameters=dict(pparams),
        orbs=dict(builder.refs),
        source=filename,
    )


def _without_orbs(root: YMap) -> YMap:
    out = root.derive()
    for key, value in root.items():
        if key not in _V21_ONLY:
            out[key] = value
    return out


def compile_text(
    text: str,
    *,
    filename: str = "config.yml",
    values: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    orb_dirs: Sequence[Path] = (),
) -> plan.Pipeline:
    """Compile config text; raises :class:`ConfigError` listing every error."""
    pipeline, problems = compile_with_problems(
        text, filename=filename, values=values, params=params, orb_dirs=orb_dirs
    )
    if pipeline is None:
        raise ConfigError([p for p in problems if p.is_error])
    return pipeline


def read_config(path: Path) -> str:
    """The text of a config file; a ConfigError (not OSError) when unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [Problem("error", f"cannot read config: {reason}", Location(str(path), 1, 1))]
        ) from None


def compile_file_with_problems(
    path: Path,
    *,
    values: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    orb_dirs: Sequence[Path] = (),
) -> tuple[plan.Pipeline | None, list[Problem]]:
    """Like :func:`compile_with_problems` for a file (an unreadable file is one error)."""
    try:
        text = read_config(path)
    except ConfigError as exc:
        return None, exc.problems
    return compile_with_problems(
        text, filename=str(path), values=values, params=params, orb_dirs=orb_dirs
    )


def compile_file(
    path: Path,
    *,
    values: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    orb_dirs: Sequence[Path] = (),
) -> plan.Pipeline:
    """Compile a config file; raises :class:`ConfigError` listing every error."""
    pipeline, problems = compile_file_with_problems(
        path, values=values, params=params, orb_dirs=orb_dirs
    )
    if pipeline is None:
        raise ConfigError([p for p in problems if p.is_error])
    return pipeline
