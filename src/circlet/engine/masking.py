"""Secret masking: every byte the engine shows or records goes through here.

CircleCI replaces the value of each project/context variable of 4 or more
characters with ``********`` in step output. We do the same for the literal
value and for the forms it takes when a program escapes it (JSON, URL and
shell quoting), and we do it on a *stream*: a value split across two output
chunks (``printf '%s' ab; printf '%s' cd``) is still caught, by holding back
only the tail of the text that could be the start of a secret.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import re
import shlex
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from circlet.engine.events import Event, EventSink, Output

MASK = "********"
MIN_SECRET_LENGTH = 4

E = TypeVar("E")


def _forms(value: str) -> set[str]:
    """The literal value and the escaped spellings a program might print."""
    forms = {value}
    forms.add(json.dumps(value)[1:-1])  # \" \\ \n \uXXXX
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(quote(value, safe=""))  # URL-encoded (curl -u, query strings)
    forms.add(quote(value, safe="/:@"))
    quoted = shlex.quote(value)  # what `set -x` and printf %q style tools print
    forms.add(quoted)
    forms.add(re.sub(r"([^\w@%+=:,./-])", r"\\\1", value))  # bash printf %q
    # A multi-line secret (a key) also appears line by line.
    forms.update(line for line in value.splitlines() if line.strip())
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class Masker:
    """Masks a fixed set of secret values; cheap to share between threads (immutable)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in secrets:
            if value and len(value) >= MIN_SECRET_LENGTH:
                forms |= _forms(value)
        # Longest first: at one position the regex takes the longest secret.
        self.values: tuple[str, ...] = tuple(sorted(forms, key=lambda s: (-len(s), s)))
        self._regex = (
            re.compile("|".join(re.escape(v) for v in self.values)) if self.values else None
        )
        self.longest = len(self.values[0]) if self.values else 0

    def __bool__(self) -> bool:
        return self._regex is not None

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by ``********``."""
        if self._regex is None or not text:
            return text
        return self._regex.sub(MASK, text)

    def mask_value(self, value: E) -> E:
        """Mask every string inside ``value`` (str, list, tuple, dict, dataclass)."""
        if self._regex is None:
            return value
        return self._mask_any(value)  # type: ignore[no-any-return]

    def _mask_any(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self._mask_any(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return tuple(self._mask_any(v) for v in value)
        if isinstance(value, list):
            return [self._mask_any(v) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {
                f.name: self._mask_any(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.name not in ("kind", "job_id", "workflow_id", "pipeline_id")
            }
            return dataclasses.replace(value, **changes)
        return value

    def stream(self) -> StreamMasker:
        """A masker for one output stream (one step)."""
        return StreamMasker(self)

    def _held_tail(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a secret."""
        best = 0
        limit = min(self.longest - 1, len(text))
        for value in self.values:
            for size in range(min(len(value) - 1, limit), best, -1):
                if text.endswith(value[:size]):
                    best = size
                    break
        return best

    def split(self, text: str) -> tuple[str, str]:
        """(masked text safe to show now, raw tail to hold until more text arrives)."""
        if self._regex is None:
            return text, ""
        cut = len(text) - self._held_tail(text)
        out: list[str] = []
        pos = 0
        for match in self._regex.finditer(text):
            if match.start() >= cut:
                break
            out.append(text[pos : match.start()])
            out.append(MASK)
            pos = match.end()
            # A match running past the cut point is complete: show it masked and
            # hold only what follows it.
            cut = max(cut, pos)
        out.append(text[pos:cut])
        return "".join(out), text[cut:]


class StreamMasker:
    """Decodes and masks one stream of output chunks; ``flush`` at the end of the step.

    Bytes are decoded incrementally (UTF-8, invalid bytes replaced), so a
    multi-byte character split across chunks is not mangled either.
    """

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._carry = ""
        self._lock = threading.Lock()

    def feed(self, data: bytes | str) -> str:
        """Masked text that can be shown now (may be empty)."""
        with self._lock:
            text = data if isinstance(data, str) else self._decoder.decode(data)
            if not self._masker:
                return text
            shown, self._carry = self._masker.split(self._carry + text)
            return shown

    def flush(self) -> str:
        """Everything held back, masked: call once the stream has ended."""
        with self._lock:
            text = self._carry + self._decoder.decode(b"", final=True)
            self._carry = ""
            return self._masker.mask(text)


def masking_sink(sink: EventSink, masker: Masker) -> EventSink:
    """A sink that masks every string of every event before passing it on.

    ``Output`` events are passed unchanged: their text was masked by a
    :class:`StreamMasker` already (masking it again would be harmless but slow).
    """
    if not masker:
        return sink

    def masked(event: Event) -> None:
        if isinstance(event, Output):
            sink(event)
        else:
            sink(masker.mask_value(event))

    return masked


def secret_values(variables: Mapping[str, str]) -> list[str]:
    """The values of ``variables`` that are long enough to be masked."""
    return [v for v in variables.values() if len(v) >= MIN_SECRET_LENGTH]
