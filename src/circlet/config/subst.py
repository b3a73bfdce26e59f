"""``<< parameters.x >>``, ``<< pipeline.* >>`` and ``<< matrix.x >>`` substitution.

A string that is exactly one ``<< ref >>`` becomes the referenced value with
its type (a boolean, a list of steps, an executor mapping…); a reference
inside a longer string is interpolated as text. ``\\<<`` escapes a literal
``<<``. Text between ``<<`` and ``>>`` that is neither a reference nor an
expression (a shell heredoc, say) is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from circlet.config.errors import Problems
from circlet.config.expr import ExpressionError, evaluate, looks_like_expression
from circlet.config.load import YList, YMap
from circlet.plan import Location

_MARKER = re.compile(r"(\\?)<<[ \t]*([^\n]*?)[ \t]*>>")
_REFERENCE = re.compile(r"(?:pipeline|parameters|matrix)\.[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class UnresolvedError(ExpressionError):
    """A reference with no value in the current bindings."""


@dataclass(frozen=True)
class Bindings:
    """What ``<< … >>`` may refer to at one place in the config.

    ``params``/``matrix`` are None where no such scope exists (e.g. a
    workflow's ``when`` has no ``parameters``). ``enabled`` is False for 2.0
    configs, where ``<< >>`` is plain text.
    """

    pipeline: Mapping[str, Any]
    pipeline_params: Mapping[str, Any]
    params: Mapping[str, Any] | None = None
    matrix: Mapping[str, Any] | None = None
    enabled: bool = True
    owner: str = ""  # "job 'build'": named in unknown-parameter errors

    def with_params(self, params: Mapping[str, Any], owner: str) -> Bindings:
        """These bindings with a new ``parameters`` scope (and no matrix)."""
        return replace(self, params=params, matrix=None, owner=owner)

    def lookup(self, ref: str) -> Any:
        """The value of ``ref`` (``parameters.x``, ``pipeline.git.branch`` …)."""
        if ref.startswith("parameters."):
            name = ref[len("parameters.") :]
            if self.params is None:
                raise UnresolvedError(f"<< {ref} >> is used where there are no parameters")
            if name not in self.params:
                owner = f" of {self.owner}" if self.owner else ""
                raise UnresolvedError(f"unknown parameter {name!r}{owner} in << {ref} >>")
            return self.params[name]
        if ref.startswith("pipeline.parameters."):
            name = ref[len("pipeline.parameters.") :]
            if name not in self.pipeline_params:
                raise UnresolvedError(f"unknown pipeline parameter {name!r} in << {ref} >>")
            return self.pipeline_params[name]
        if ref.startswith("pipeline.trigger_parameters."):
            return self.pipeline.get(ref, "")
        if ref.startswith("pipeline."):
            if ref not in self.pipeline:
                raise UnresolvedError(f"unknown pipeline value << {ref} >>")
            return self.pipeline[ref]
        if ref.startswith("matrix."):
            name = ref[len("matrix.") :]
            if self.matrix is None or name not in self.matrix:
                raise UnresolvedError(f"<< {ref} >> is not a matrix parameter here")
            return self.matrix[name]
        raise UnresolvedError(f"unknown reference << {ref} >>")


def as_text(value: Any) -> str:
    """A value as CircleCI interpolates it into a string."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise TypeError(type(value).__name__)


class Substituter:
    """Walks located data and replaces ``<< … >>`` markers."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems

    def value(self, value: Any, b: Bindings, where: Location | None, path: str) -> Any:
        """Substitute in ``value`` (any loaded data); containers are copied only if changed."""
        if isinstance(value, str):
            if "<<" not in value or not b.enabled:
                return value
            return self.string(value, b, where, path)
        if isinstance(value, YMap):
            return self._map(value, b, path)
        if isinstance(value, YList):
            return self._list(value, b, path)
        return value

    def _map(self, value: YMap, b: Bindings, path: str) -> YMap:
        out: YMap | None = None
        for i, (key, item) in enumerate(value.items()):
            new = (
                self.value(item, b, value.key_loc(key), f"{path}.{key}" if path else key)
                if isinstance(item, str | YMap | YList)
                else item
            )
            if new is not item and out is None:
                out = value.derive()
                for k2, v2 in list(value.items())[:i]:
                    out[k2] = v2
            if out is not None:
                out[key] = new
        return value if out is None else out

    def _list(self, value: YList, b: Bindings, path: str) -> YList:
        out: YList | None = None
        for i, item in enumerate(value):
            new = (
                self.value(item, b, value.item_loc(i), f"{path}[{i}]")
                if isinstance(item, str | YMap | YList)
                else item
            )
            if new is not item and out is None:
                out = value.derive()
                out.extend(value[:i])
            if out is not None:
                out.append(new)
        return value if out is None else out

    def string(self, text: str, b: Bindings, where: Location | None, path: str) -> Any:
        """Substitute in one string; a lone marker keeps the value's type."""
        whole = _MARKER.fullmatch(text)
        if whole is not None and not whole.group(1):
            found, value = self._resolve(whole.group(2), b, where, path)
            if found:
                return value
            return text
        return _MARKER.sub(lambda m: self._interpolate(m, b, where, path), text)

    def _interpolate(
        self, match: re.Match[str], b: Bindings, where: Location | None, path: str
    ) -> str:
        if match.group(1):  # \<< … >> is a literal << … >>
            return match.group(0)[1:]
        found, value = self._resolve(match.group(2), b, where, path)
        if not found:
            return match.group(0)
        try:
            return as_text(value)
        except TypeError:
            self.problems.error(
                f"<< {match.group(2)} >> is a {_kind(value)} and cannot be part of a string",
                where,
                path,
            )
            return match.group(0)

    def _resolve(
        self, content: str, b: Bindings, where: Location | None, path: str
    ) -> tuple[bool, Any]:
        if _REFERENCE.fullmatch(content):
            try:
                return True, b.lookup(content)
            except ExpressionError as exc:
                self.problems.error(str(exc), where, path)
                return False, None
        if not looks_like_expression(content):
            return False, None
        try:
            return True, evaluate(content, b.lookup)
        except ExpressionError as exc:
            self.problems.error(f"in << {content} >>: {exc}", where, path)
            return False, None


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__
