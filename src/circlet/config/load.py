"""YAML → located values: dicts and lists that remember ``file:line:col``.

PyYAML's composer rejects a re-defined anchor, which CircleCI (SnakeYAML)
accepts with "the later definition wins", so we compose the node tree
ourselves from the (C-accelerated, when available) event stream. The result
is plain Python data — :class:`YMap` (a dict), :class:`YList` (a list) and
scalars (str, int, float, bool, None) — where each container knows where it
and each of its entries started. Aliases share the anchored object; nothing
downstream mutates loaded data.

Scalars follow YAML 1.1 like CircleCI (``yes``/``on`` are booleans), except
that timestamps stay strings. Mapping keys are always their source text.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from circlet.config.errors import Problems
from circlet.plan import Location

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SHORT_TAGS = {"!!str": _STR, "!!int": _INT, "!!float": _FLOAT, "!!bool": _BOOL, "!!null": _NULL}
_MAX_DEPTH = 400


def _short(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag


class YMap(dict[str, Any]):
    """A mapping from YAML with its own and its keys' positions."""

    __slots__ = ("col", "file", "key_locs", "line")

    def __init__(self, file: str = "<string>", line: int = 0, col: int = 0) -> None:
        super().__init__()
        self.file = file
        self.line = line
        self.col = col
        self.key_locs: dict[str, tuple[int, int]] = {}

    def loc(self) -> Location | None:
        """Where the mapping starts (None for one built in code)."""
        return Location(self.file, self.line, self.col) if self.line else None

    def key_loc(self, key: str) -> Location | None:
        """Where ``key`` was written, else where the mapping starts."""
        pos = self.key_locs.get(key)
        if pos is None:
            return self.loc()
        return Location(self.file, pos[0], pos[1])

    def derive(self) -> YMap:
        """An empty mapping with this one's position (for substituted copies)."""
        new = YMap(self.file, self.line, self.col)
        new.key_locs = self.key_locs
        return new


class YList(list[Any]):
    """A sequence from YAML with its own and its items' positions."""

    __slots__ = ("col", "file", "item_locs", "line")

    def __init__(self, file: str = "<string>", line: int = 0, col: int = 0) -> None:
        super().__init__()
        self.file = file
        self.line = line
        self.col = col
        self.item_locs: list[tuple[int, int]] = []

    def loc(self) -> Location | None:
        """Where the sequence starts (None for one built in code)."""
        return Location(self.file, self.line, self.col) if self.line else None

    def item_loc(self, index: int) -> Location | None:
        """Where item ``index`` was written, else where the sequence starts."""
        if 0 <= index < len(self.item_locs):
            line, col = self.item_locs[index]
            return Location(self.file, line, col)
        return self.loc()

    def derive(self) -> YList:
        """An empty list with this one's position (for substituted copies)."""
        new = YList(self.file, self.line, self.col)
        new.item_locs = self.item_locs
        return new


def loc_of(value: Any) -> Location | None:
    """The position of a loaded container, None for scalars."""
    if isinstance(value, YMap | YList):
        return value.loc()
    return None


class _ScalarResolver:
    """Implicit scalar typing (YAML 1.1 as SafeLoader), memoized per text."""

    def __init__(self) -> None:
        self._resolver = yaml.resolver.Resolver()
        self._ctor = yaml.constructor.SafeConstructor()
        self._plain: dict[str, Any] = {}

    def plain(self, value: str) -> Any:
        try:
            return self._plain[value]
        except KeyError:
            pass
        tag = self._resolver.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
        result = self.construct(tag, value)
        self._plain[value] = result
        return result

    def construct(self, tag: str, value: str) -> Any:
        node = yaml.ScalarNode(tag, value)
        if tag == _INT:
            return self._ctor.construct_yaml_int(node)
        if tag == _FLOAT:
            return self._ctor.construct_yaml_float(node)
        if tag == _BOOL:
            return self._ctor.construct_yaml_bool(node)
        if tag == _NULL:
            return None
        return value  # str, timestamps, merge/value indicators used as values


class _Composer:
    def __init__(self, text: str, filename: str, problems: Problems) -> None:
        self.loader = _Loader(text)
        self.file = filename
        self.problems = problems
        self.anchors: dict[str, Any] = {}
        self.scalars = _ScalarResolver()
        self.depth = 0

    def location(self, mark: Any) -> Location:
        return Location(self.file, mark.line + 1, mark.column + 1)

    def document(self) -> Any:
        loader = self.loader
        loader.get_event()  # StreamStart
        if isinstance(loader.peek_event(), StreamEndEvent):
            return None
        loader.get_event()  # DocumentStart
        root = self.node()
        loader.get_event()  # DocumentEnd
        event = loader.peek_event()
        if isinstance(event, DocumentStartEvent):
            self.problems.error(
                "a config holds one YAML document, but this file has more",
                self.location(event.start_mark),
            )
        return root

    def node(self) -> Any:
        event = self.loader.get_event()
        kind = type(event)
        if kind is ScalarEvent:
            value = self.scalar(event)
        elif kind is AliasEvent:
            try:
                return self.anchors[event.anchor]
            except KeyError:
                self.problems.error(
                    f"unknown anchor {event.anchor!r} (an alias must follow its anchor)",
                    self.location(event.start_mark),
                )
                return None
        elif kind is MappingStartEvent:
            value = self.mapping(event)
        elif kind is SequenceStartEvent:
            value = self.sequence(event)
        else:  # pragma: no cover - the parser guarantees node events here
            raise yaml.composer.ComposerError(None, None, f"unexpected {event}", event.start_mark)
        if event.anchor is not None:
            # Later definitions replace earlier ones, as SnakeYAML does.
            self.anchors[event.anchor] = value
        return value

    def scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            if event.implicit[0]:
                return self.scalars.plain(event.value)
            return event.value
        full = _SHORT_TAGS.get(tag, tag)
        if full in (_STR, _INT, _FLOAT, _BOOL, _NULL):
            try:
                return self.scalars.construct(full, event.value)
            except (ValueError, IndexError, KeyError, yaml.YAMLError):
                self.problems.error(
                    f"{event.value!r} is not a valid {_short(tag)} value",
                    self.location(event.start_mark),
                )
                return event.value
        self.problems.warning(
            f"YAML tag {_short(tag)} is not supported; the value is read as a string",
            self.location(event.start_mark),
        )
        return event.value

    def enter(self, event: Any) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nesting deeper than {_MAX_DEPTH} levels", event.start_mark
            )

    def sequence(self, event: Any) -> YList:
        self.enter(event)
        mark = event.start_mark
        result = YList(self.file, mark.line + 1, mark.column + 1)
        self.check_tag(event, _SEQ)
        loader = self.loader
        append, locs = result.append, result.item_locs.append
        while not isinstance(loader.peek_event(), SequenceEndEvent):
            m = loader.peek_event().start_mark
            locs((m.line + 1, m.column + 1))
            append(self.node())
        loader.get_event()
        self.depth -= 1
        return result

    def check_tag(self, event: Any, expected: str) -> None:
        tag = event.tag
        if tag is None or tag in ("!", expected) or _SHORT_TAGS.get(tag) == expected:
            return
        if tag in ("!!map", "!!seq"):
            return
        self.problems.warning(
            f"YAML tag {_short(tag)} is not supported; the value is read as plain data",
            self.location(event.start_mark),
        )

    def mapping(self, event: Any) -> YMap:
        self.enter(event)
        mark = event.start_mark
        result = YMap(self.file, mark.line + 1, mark.column + 1)
        self.check_tag(event, _MAP)
        loader = self.loader
        merged: list[tuple[Any, Location]] = []
        explicit: set[str] = set()
        while not isinstance(loader.peek_event(), MappingEndEvent):
            key_event = loader.peek_event()
            km = key_event.start_mark
            if type(key_event) is not ScalarEvent:
                self.problems.error("a mapping key must be a plain string", self.location(km))
                self.node()
                self.node()
                continue
            loader.get_event()
            key = key_event.value
            if key_event.anchor is not None:
                self.anchors[key_event.anchor] = key
            if key == "<<" and key_event.implicit[0] and key_event.tag in (None, "!", _MERGE):
                value_loc = self.location(loader.peek_event().start_mark)
                merged.append((self.node(), value_loc))
                continue
            value = self.node()
            if key in explicit:
                self.problems.warning(
                    f"duplicate key {key!r}: the later value is used", self.location(km)
                )
            explicit.add(key)
            result[key] = value
            result.key_locs[key] = (km.line + 1, km.column + 1)
        loader.get_event()
        if merged:
            self.merge(result, merged)
        self.depth -= 1
        return result

    def merge(self, result: YMap, merged: list[tuple[Any, Location]]) -> None:
        """Apply ``<<`` merge keys: explicit keys win, then earlier sources."""
        sources: list[YMap] = []
        for value, where in merged:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, YMap):
                    sources.append(item)
                else:
                    self.problems.error(
                        "a merge key '<<' takes a mapping or a list of mappings", where
                    )
        combined: dict[str, Any] = {}
        locs: dict[str, tuple[int, int]] = {}
        for source in sources:  # the first source that has a key wins
            for key, value in source.items():
                if key not in combined:
                    combined[key] = value
                    if key in source.key_locs:
                        locs[key] = source.key_locs[key]
        # Merged entries come first, as PyYAML orders them; explicit keys win
        # (in the merged key's place).
        own = dict(result)
        own_locs = result.key_locs
        result.clear()
        result.key_locs = {}
        for key, value in combined.items():
            if key in own:
                result[key] = own[key]
                result.key_locs[key] = own_locs[key]
            else:
                result[key] = value
                if key in locs:
                    result.key_locs[key] = locs[key]
        for key, value in own.items():
            if key not in result:
                result[key] = value
                result.key_locs[key] = own_locs[key]


def load_text(text: str, filename: str, problems: Problems) -> Any:
    """Parse one YAML document into located values; problems go to ``problems``.

    Returns None (after recording an error) when the YAML cannot be parsed.
    """
    composer = _Composer(text, filename, problems)
    try:
        return composer.document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or "invalid YAML"
        if exc.context and exc.problem:
            message = f"{exc.context}: {exc.problem}"
        location = composer.location(mark) if mark is not None else Location(filename, 1, 1)
        problems.error(f"invalid YAML: {message}", location)
    except yaml.YAMLError as exc:
        problems.error(f"invalid YAML: {exc}", Location(filename, 1, 1))
    except RecursionError:
        problems.error("invalid YAML: nesting too deep", Location(filename, 1, 1))
    finally:
        composer.loader.dispose()
    return None


__all__ = ["YList", "YMap", "load_text", "loc_of"]
