"""Logic statements (``and``, ``or``, ``not``, ``equal``, ``matches``), evaluated
at compile time for workflow ``when``/``unless`` and step ``when``/``unless``.

Values reaching here are already substituted. A bare string that reads as an
expression (``pipeline.git.branch == "main"``) is evaluated as one.
"""

from __future__ import annotations

import re
from typing import Any

from circlet.config.errors import Problems
from circlet.config.expr import ExpressionError, evaluate, looks_like_expression, truthy
from circlet.config.load import YList, YMap
from circlet.config.subst import Bindings
from circlet.plan import Location

_MAX_DEPTH = 100
OPERATORS = ("and", "or", "not", "equal", "matches")


class LogicEvaluator:
    """Evaluates logic statements, recording problems instead of raising."""

    def __init__(self, problems: Problems, bindings: Bindings) -> None:
        self.problems = problems
        self.bindings = bindings

    def truth(self, statement: Any, where: Location | None, path: str) -> bool:
        """The boolean value of ``statement``."""
        return truthy(self._eval(statement, where, path, 0))

    def _eval(self, st: Any, where: Location | None, path: str, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            self.problems.error(f"logic statement nested deeper than {_MAX_DEPTH}", where, path)
            return False
        if isinstance(st, str) and self.bindings.enabled and looks_like_expression(st):
            try:
                return evaluate(st, self.bindings.lookup)
            except ExpressionError as exc:
                self.problems.error(f"in expression {st!r}: {exc}", where, path)
                return False
        if isinstance(st, YList):
            self.problems.error("a list is not a logic statement", where, path)
            return False
        if not isinstance(st, YMap):
            return st
        if len(st) != 1:
            keys = ", ".join(st) or "nothing"
            self.problems.error(
                f"a logic statement has exactly one operator ({', '.join(OPERATORS)}); got {keys}",
                st.loc() or where,
                path,
            )
            return False
        ((op, arg),) = st.items()
        loc = st.key_loc(op)
        sub = f"{path}.{op}"
        if op in ("and", "or"):
            if not isinstance(arg, YList) or not arg:
                self.problems.error(f"'{op}' takes a non-empty list of statements", loc, sub)
                return False
            values = [
                truthy(self._eval(x, arg.item_loc(i), f"{sub}[{i}]", depth + 1))
                for i, x in enumerate(arg)
            ]
            return all(values) if op == "and" else any(values)
        if op == "not":
            return not truthy(self._eval(arg, loc, sub, depth + 1))
        if op == "equal":
            if not isinstance(arg, YList) or not arg:
                self.problems.error("'equal' takes a non-empty list of values", loc, sub)
                return False
            values = [
                self._eval(x, arg.item_loc(i), f"{sub}[{i}]", depth + 1) for i, x in enumerate(arg)
            ]
            return all(_equal(values[0], v) for v in values[1:])
        if op == "matches":
            return self._matches(arg, loc, sub)
        self.problems.error(
            f"unknown logic operator {op!r}; expected one of {', '.join(OPERATORS)}", loc, sub
        )
        return False

    def _matches(self, arg: Any, loc: Location | None, path: str) -> bool:
        if not isinstance(arg, YMap) or set(arg) != {"pattern", "value"}:
            self.problems.error("'matches' takes a mapping with 'pattern' and 'value'", loc, path)
            return False
        pattern, value = arg["pattern"], arg["value"]
        if not isinstance(pattern, str):
            self.problems.error("'matches' pattern must be a string", arg.key_loc("pattern"), path)
            return False
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            self.problems.error(
                f"invalid regular expression {pattern!r}: {exc}", arg.key_loc("pattern"), path
            )
            return False
        text = "" if value is None else str(value)
        # Java's Matcher.matches(): the whole value must match.
        return regex.fullmatch(text) is not None


def _equal(a: Any, b: Any) -> bool:
    # true == 1 in Python, but not in CircleCI's (Clojure) equality.
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)
