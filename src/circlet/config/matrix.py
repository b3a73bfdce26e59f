"""Matrix expansion: ``matrix: {parameters, exclude, alias}`` → one job per combination.

Copies are named ``<job>-<value>-<value>…`` with the values in the order of
their parameter names sorted alphabetically — what CircleCI's documented
examples show (``build-macos-0.1`` for ``version``/``platform``;
``test-14.17.6-docker`` for ``os``/``node-version``). Combinations are
enumerated in the same order, the last name varying fastest, so the result
is deterministic.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from circlet.config.context import Context
from circlet.config.load import YList, YMap
from circlet.config.subst import as_text
from circlet.plan import Location

MATRIX_KEYS = frozenset({"parameters", "exclude", "alias"})


@dataclass(frozen=True)
class Matrix:
    """The expanded combinations and the alias that ``requires`` may name."""

    combos: tuple[dict[str, Any], ...]
    alias: str | None


def expand(ctx: Context, matrix: Any, job_name: str, where: Location | None, path: str) -> Matrix:
    """Expand one ``matrix`` stanza (already substituted)."""
    if not isinstance(matrix, YMap):
        ctx.error("matrix must be a mapping with 'parameters'", where, path)
        return Matrix((), None)
    ctx.check_keys(matrix, MATRIX_KEYS, "matrix", path)
    alias = matrix.get("alias", job_name)
    if not isinstance(alias, str):
        ctx.error("matrix alias must be a string", matrix.key_loc("alias"), f"{path}.alias")
        alias = job_name
    params = matrix.get("parameters")
    if not isinstance(params, YMap) or not params:
        ctx.error("matrix needs a non-empty 'parameters' mapping", matrix.loc() or where, path)
        return Matrix((), alias)
    names = sorted(params)
    columns: list[list[Any]] = []
    for name in names:
        values = params[name]
        if not isinstance(values, YList) or not values:
            ctx.error(
                f"matrix parameter {name!r} needs a non-empty list of values",
                params.key_loc(name),
                f"{path}.parameters.{name}",
            )
            return Matrix((), alias)
        columns.append(list(values))
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*columns)]
    excludes = _excludes(ctx, matrix.get("exclude"), names, matrix, path)
    kept = tuple(c for c in combos if not any(_matches(c, e) for e in excludes))
    return Matrix(kept, alias)


def _excludes(ctx: Context, raw: Any, names: list[str], matrix: YMap, path: str) -> list[YMap]:
    if raw is None:
        return []
    if not isinstance(raw, YList):
        ctx.error(
            "matrix exclude must be a list of parameter mappings", matrix.key_loc("exclude"), path
        )
        return []
    out = []
    for i, entry in enumerate(raw):
        epath = f"{path}.exclude[{i}]"
        if not isinstance(entry, YMap):
            ctx.error(
                "each exclude entry must be a mapping of parameter values", raw.item_loc(i), epath
            )
            continue
        unknown = [k for k in entry if k not in names]
        if unknown:
            ctx.error(
                f"exclude names {', '.join(map(repr, unknown))}, which the matrix does not have",
                raw.item_loc(i),
                epath,
            )
            continue
        out.append(entry)
    return out


def _matches(combo: dict[str, Any], exclude: YMap) -> bool:
    return all(_same(combo.get(k), v) for k, v in exclude.items())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b) or value_text(a) == value_text(b)


def value_text(value: Any) -> str:
    """A matrix value as it appears in a generated job name."""
    try:
        return as_text(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))


def default_name(job_name: str, combo: dict[str, Any]) -> str:
    """``job-v1-v2`` with the values ordered by parameter name."""
    return "-".join([job_name, *(value_text(combo[k]) for k in sorted(combo))])
