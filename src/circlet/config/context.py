"""State shared by the compile stages of one config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from circlet.config.errors import Problems
from circlet.config.load import YList, YMap
from circlet.config.subst import Bindings, Substituter
from circlet.plan import Location


@dataclass
class Context:
    """One compilation: where problems go, the pipeline's bindings, the version."""

    problems: Problems
    subst: Substituter
    base: Bindings  # pipeline values and pipeline parameters, no parameters scope
    v21: bool

    def error(self, message: str, where: Location | None, path: str) -> None:
        """Record an error."""
        self.problems.error(message, where, path)

    def warning(self, message: str, where: Location | None, path: str) -> None:
        """Record a warning."""
        self.problems.warning(message, where, path)

    def check_keys(
        self, mapping: YMap, allowed: set[str] | frozenset[str], what: str, path: str
    ) -> None:
        """Record an error for each key of ``mapping`` not in ``allowed``."""
        for key in mapping:
            if key not in allowed:
                expected = ", ".join(sorted(allowed))
                self.error(
                    f"unknown key {key!r} in {what} (expected: {expected})",
                    mapping.key_loc(key),
                    f"{path}.{key}",
                )


def text(
    ctx: Context,
    value: Any,
    what: str,
    where: Location | None,
    path: str,
    *,
    allow_none: bool = False,
) -> str | None:
    """A scalar as a string (numbers and booleans as CircleCI prints them)."""
    if value is None:
        if not allow_none:
            ctx.error(f"{what} must not be empty", where, path)
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    ctx.error(
        f"{what} must be a string, not a {'list' if isinstance(value, list) else 'mapping'}",
        where,
        path,
    )
    return None


def string_list(
    ctx: Context, value: Any, what: str, where: Location | None, path: str
) -> tuple[str, ...]:
    """A string or a list of strings as a tuple."""
    if isinstance(value, YList | list):
        out = []
        for i, item in enumerate(value):
            loc = value.item_loc(i) if isinstance(value, YList) else where
            s = text(ctx, item, what, loc, f"{path}[{i}]")
            if s is not None:
                out.append(s)
        return tuple(out)
    s = text(ctx, value, what, where, path)
    return () if s is None else (s,)


def environment(ctx: Context, value: Any, where: Location | None, path: str) -> dict[str, str]:
    """An ``environment`` mapping (or list of ``K=V``/one-key mappings) as str → str."""
    result: dict[str, str] = {}
    if value is None:
        return result
    if isinstance(value, YMap):
        for key, item in value.items():
            if isinstance(item, YMap | YList):
                ctx.error(
                    f"environment variable {key!r} must have a scalar value",
                    value.key_loc(key),
                    f"{path}.{key}",
                )
                continue
            result[key] = "" if item is None else (text(ctx, item, key, None, path) or "")
        return result
    if isinstance(value, YList):
        # CircleCI also accepts a list of one-key mappings or "KEY=value" strings.
        for i, item in enumerate(value):
            if isinstance(item, YMap):
                result.update(environment(ctx, item, value.item_loc(i), f"{path}[{i}]"))
            elif isinstance(item, str) and "=" in item:
                k, _, v = item.partition("=")
                result[k] = v
            else:
                ctx.error(
                    "environment list entries must be KEY=value or a mapping",
                    value.item_loc(i),
                    f"{path}[{i}]",
                )
        return result
    ctx.error("environment must be a mapping of names to values", where, path)
    return result


def without(mapping: YMap, *keys: str) -> YMap:
    """A copy of ``mapping`` (same positions) without ``keys``."""
    if not any(k in mapping for k in keys):
        return mapping
    out = mapping.derive()
    for key, value in mapping.items():
        if key not in keys:
            out[key] = value
    return out
