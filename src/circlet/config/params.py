"""Parameter declarations (``parameters:`` of jobs, commands, executors, pipelines)
and binding arguments to them with CircleCI's type checks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from circlet.config.errors import Problems
from circlet.config.load import YList, YMap
from circlet.plan import Location

TYPES = ("string", "boolean", "integer", "enum", "executor", "steps", "env_var_name")
PIPELINE_TYPES = ("string", "boolean", "integer", "enum")
_SPEC_KEYS = {"type", "default", "description", "enum"}
_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter."""

    name: str
    type: str
    default: Any = MISSING
    enum: tuple[str, ...] = ()
    location: Location | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING


def parse_specs(
    raw: Any,
    path: str,
    problems: Problems,
    *,
    types: tuple[str, ...] = TYPES,
    where: Location | None = None,
) -> dict[str, ParamSpec]:
    """Read a ``parameters:`` mapping; problems are recorded, bad entries skipped."""
    if raw is None:
        return {}
    if not isinstance(raw, YMap):
        problems.error("parameters must be a mapping of name to declaration", where, path)
        return {}
    specs: dict[str, ParamSpec] = {}
    for name, decl in raw.items():
        loc = raw.key_loc(name)
        ppath = f"{path}.{name}"
        if not isinstance(decl, YMap):
            problems.error(f"parameter {name!r} must be a mapping with a 'type'", loc, ppath)
            continue
        for key in decl:
            if key not in _SPEC_KEYS:
                problems.error(
                    f"unknown key {key!r} in parameter {name!r}", decl.key_loc(key), ppath
                )
        kind = decl.get("type")
        if kind not in types:
            problems.error(
                f"parameter {name!r} has type {kind!r}; expected one of {', '.join(types)}",
                decl.key_loc("type"),
                ppath,
            )
            continue
        enum: tuple[str, ...] = ()
        if kind == "enum":
            values = decl.get("enum")
            if not isinstance(values, YList) or not values:
                problems.error(f"enum parameter {name!r} needs a non-empty 'enum' list", loc, ppath)
                continue
            enum = tuple(_scalar_text(v) for v in values)
        spec = ParamSpec(name, kind, decl.get("default", MISSING), enum, loc)
        if not spec.required:
            ok, value = check(spec, spec.default)
            if not ok:
                problems.error(
                    f"default of parameter {name!r}: {value}", decl.key_loc("default"), ppath
                )
                continue
            spec = ParamSpec(name, kind, value, enum, loc)
        specs[name] = spec
    return specs


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def check(spec: ParamSpec, value: Any) -> tuple[bool, Any]:
    """(True, value coerced to the parameter's type) or (False, reason)."""
    kind = spec.type
    if kind == "string":
        # CircleCI turns a YAML number into its text (``3.10`` becomes "3.1").
        if value is None:
            return True, ""
        if isinstance(value, str | int | float):
            return True, _scalar_text(value)
        return False, f"expected a string, got {_describe(value)}"
    if kind == "boolean":
        if isinstance(value, bool):
            return True, value
        return False, f"expected a boolean, got {_describe(value)}"
    if kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        return False, f"expected an integer, got {_describe(value)}"
    if kind == "enum":
        if isinstance(value, str | int | float) and _scalar_text(value) in spec.enum:
            return True, _scalar_text(value)
        return False, f"{_describe(value)} is not one of {', '.join(spec.enum)}"
    if kind == "executor":
        if isinstance(value, str | YMap):
            return True, value
        return False, f"expected an executor name or mapping, got {_describe(value)}"
    if kind == "steps":
        if value is None:
            return True, YList()
        if isinstance(value, YList):
            return True, value
        return False, f"expected a list of steps, got {_describe(value)}"
    if kind == "env_var_name":
        if isinstance(value, str) and _ENV_VAR_NAME.fullmatch(value):
            return True, value
        return False, f"{_describe(value)} is not a valid environment variable name"
    return False, f"unknown parameter type {kind!r}"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def bind(
    specs: Mapping[str, ParamSpec],
    args: Mapping[str, Any],
    *,
    owner: str,
    problems: Problems,
    where: Location | None,
    path: str,
    arg_locs: YMap | None = None,
) -> dict[str, Any]:
    """Arguments checked against ``specs``, defaults filled in.

    Every problem (unknown argument, missing required one, wrong type) is
    recorded; the result still holds a best-effort value for each parameter.
    """
    bound: dict[str, Any] = {}
    for name, value in args.items():
        loc = arg_locs.key_loc(name) if arg_locs is not None else where
        spec = specs.get(name)
        if spec is None:
            declared = ", ".join(sorted(specs)) or "none"
            problems.error(
                f"unexpected argument {name!r} for {owner} (parameters: {declared})",
                loc,
                f"{path}.{name}" if path else name,
            )
            continue
        ok, result = check(spec, value)
        if not ok:
            problems.error(f"argument {name!r} of {owner}: {result}", loc, f"{path}.{name}")
            # Keep the name bound so its uses report nothing more.
            bound[name] = value
            continue
        bound[name] = result
    for name, spec in specs.items():
        if name in bound or name in args:
            continue
        if spec.required:
            problems.error(f"missing required argument {name!r} for {owner}", where, path)
            bound[name] = None  # bound all the same: its uses report nothing more
            continue
        bound[name] = spec.default
    # In declaration order, whatever the order of the arguments.
    return {name: bound[name] for name in specs if name in bound}
