"""CircleCI expressions: ``pipeline.git.branch == "main" and 10 or 1``.

The grammar (CircleCI configuration reference, "Using expressions"):

    expr    := or
    or      := and ("or" and)*
    and     := cmp ("and" cmp)*
    cmp     := unary (("==" | "!=" | "starts-with" | "<" | "<=" | ">" | ">=") unary)?
    unary   := "not" unary | primary
    primary := STRING | NUMBER | true | false | null | REFERENCE | "(" expr ")"

``and``/``or`` short-circuit and return an operand, like Python's. Truthiness
follows the logic-statement rules (false, null, 0, NaN and "" are falsy).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<num>-?\d+(?:\.\d+)?(?![\w.-]))
      | (?P<op>==|!=|<=|>=|<|>|\(|\))
      | (?P<word>[A-Za-z_][\w.-]*)
    )""",
    re.VERBOSE,
)
_REFERENCE_ROOTS = ("pipeline.", "parameters.", "matrix.")
_KEYWORDS = {"and", "or", "not", "true", "false", "null", "starts-with"}


class ExpressionError(ValueError):
    """An expression that does not parse or evaluate."""


def truthy(value: Any) -> bool:
    """CircleCI's truthiness: false, null, 0, NaN and "" are falsy; all else truthy."""
    if value is None or value is False:
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return not (value == 0 or (isinstance(value, float) and math.isnan(value)))
    if isinstance(value, str):
        return value != ""
    return True


def tokenize(text: str) -> list[tuple[str, str]]:
    """Split an expression into (kind, text) tokens; raises ExpressionError."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ExpressionError(f"unexpected {text[pos:].strip()[:20]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word" and value in _KEYWORDS:
            kind = "kw"
        tokens.append((kind, value))
        pos = match.end()
    return tokens


def looks_like_expression(text: str) -> bool:
    """True when ``text`` parses as an expression using a reference or an operator."""
    try:
        tokens = tokenize(text)
    except ExpressionError:
        return False
    has_ref = any(k == "word" and v.startswith(_REFERENCE_ROOTS) for k, v in tokens)
    words_ok = all(k != "word" or v.startswith(_REFERENCE_ROOTS) for k, v in tokens)
    return has_ref and words_ok


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], lookup: Callable[[str], Any]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.lookup = lookup

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ExpressionError("unexpected end of expression")
        self.pos += 1
        return token

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == ("kw", "or"):
            self.take()
            right = self.and_()
            value = value if truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.cmp()
        while self.peek() == ("kw", "and"):
            self.take()
            right = self.cmp()
            value = right if truthy(value) else value
        return value

    def cmp(self) -> Any:
        left = self.unary()
        token = self.peek()
        if token is None or token[1] not in ("==", "!=", "<", "<=", ">", ">=", "starts-with"):
            return left
        self.take()
        right = self.unary()
        op = token[1]
        if op == "==":
            return _same_type(left, right) and left == right
        if op == "!=":
            return not (_same_type(left, right) and left == right)
        if op == "starts-with":
            if not isinstance(left, str) or not isinstance(right, str):
                raise ExpressionError("starts-with takes two strings")
            return left.startswith(right)
        if not _is_number(left) or not _is_number(right):
            raise ExpressionError(f"{op} takes two numbers")
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]

    def unary(self) -> Any:
        if self.peek() == ("kw", "not"):
            self.take()
            return not truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "kw" and text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if kind == "word":
            return self.lookup(text)
        if text == "(":
            value = self.or_()
            if self.take() != ("op", ")"):
                raise ExpressionError("missing ')'")
            return value
        raise ExpressionError(f"unexpected {text!r}")


def _same_type(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return True
    return type(a) is type(b)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def evaluate(text: str, lookup: Callable[[str], Any]) -> Any:
    """Evaluate an expression; ``lookup`` resolves a reference (may raise ExpressionError)."""
    return _Parser(tokenize(text), lookup).parse()
