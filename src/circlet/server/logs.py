"""Step logs by range, so a 100 MB log never reaches a page whole.

The records keep a step's output as append-only chunks (``step_output`` rows,
in id order). :class:`LogIndex` learns each chunk's length and newline count
once (the SQL computes them; new chunks are learned incrementally) and then
serves any character range by reading only the chunks it covers. The live
stream follows the chunk ids. Offsets are in characters; lines are counted
from 1.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from circlet.store.models import StepOutput

WINDOW = 256 * 1024  # characters a page asks for at once
SEARCH_HITS = 200


@dataclass
class _Index:
    ids: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # character offset of each chunk
    lines: list[int] = field(default_factory=list)  # newlines before each chunk
    total: int = 0
    newlines: int = 0

    @property
    def last_id(self) -> int:
        return self.ids[-1] if self.ids else 0


@dataclass(frozen=True)
class Window:
    start: int  # character offset of text[0]
    end: int
    total: int  # characters recorded so far
    first_line: int  # line number of the first line in text (1-based)
    text: str
    last_id: int = 0  # newest chunk included when the window reaches the end (live dedup)


@dataclass(frozen=True)
class Hit:
    line: int
    offset: int  # character offset of the line's start
    text: str


class LogIndex:
    """Chunk offsets per (job, step), cached (a small LRU)."""

    def __init__(self, engine: Engine, *, capacity: int = 256) -> None:
        self._engine = engine
        self._cache: OrderedDict[tuple[str, int], _Index] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def _index(self, job_id: str, step: int) -> _Index:
        key = (job_id, step)
        with self._lock:
            idx = self._cache.pop(key, None) or _Index()
            self._cache[key] = idx
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        newline_count = func.length(StepOutput.text) - func.length(
            func.replace(StepOutput.text, "\n", "")
        )
        query = (
            select(StepOutput.id, func.length(StepOutput.text), newline_count)
            .where(
                StepOutput.job_id == job_id,
                StepOutput.step_index == step,
                StepOutput.id > idx.last_id,
            )
            .order_by(StepOutput.id)
        )
        with Session(self._engine) as s:
            rows = s.execute(query).all()
        with self._lock:
            for chunk_id, length, newlines in rows:
                if chunk_id <= idx.last_id:  # another request learned it meanwhile
                    continue
                idx.ids.append(chunk_id)
                idx.starts.append(idx.total)
                idx.lines.append(idx.newlines)
                idx.total += int(length or 0)
                idx.newlines += int(newlines or 0)
        return idx

    def total(self, job_id: str, step: int) -> int:
        """Characters recorded so far."""
        return self._index(job_id, step).total

    def window(self, job_id: str, step: int, start: int | None, end: int | None) -> Window:
        """Characters ``[start, end)``; ``start`` None means the last ``WINDOW``
        characters (a log is read from its end, where failures are)."""
        idx = self._index(job_id, step)
        if start is None:
            start = max(0, idx.total - WINDOW)
        start = max(0, min(start, idx.total))
        end = idx.total if end is None else max(start, min(end, idx.total, start + 4 * WINDOW))
        if start == end:
            return Window(start, end, idx.total, idx.newlines + 1, "", idx.last_id)
        first = max(0, bisect.bisect_right(idx.starts, start) - 1)
        last = max(0, bisect.bisect_right(idx.starts, end - 1) - 1)
        ids = idx.ids[first : last + 1]
        with Session(self._engine) as s:
            rows = s.execute(select(StepOutput.id, StepOutput.text).where(StepOutput.id.in_(ids)))
            texts = {int(i): str(t) for i, t in rows}
        joined = "".join(texts.get(i, "") for i in ids)
        base = idx.starts[first]
        text = joined[start - base : end - base]
        first_line = idx.lines[first] + joined[: start - base].count("\n") + 1
        last_id = idx.last_id if end >= idx.total else 0
        return Window(start, end, idx.total, first_line, text, last_id)

    def chunks_after(self, job_id: str, step: int, after_id: int) -> list[tuple[int, str]]:
        """(chunk id, text) of chunks newer than ``after_id``, for the live stream."""
        query = (
            select(StepOutput.id, StepOutput.text)
            .where(
                StepOutput.job_id == job_id,
                StepOutput.step_index == step,
                StepOutput.id > after_id,
            )
            .order_by(StepOutput.id)
        )
        with Session(self._engine) as s:
            return [(int(i), t) for i, t in s.execute(query)]

    def job_cursor(self, job_id: str) -> int:
        """The newest chunk id of a job's output (0 for none): live streams start here."""
        query = select(func.max(StepOutput.id)).where(StepOutput.job_id == job_id)
        with Session(self._engine) as s:
            return int(s.execute(query).scalar() or 0)

    def job_chunks_after(
        self, job_id: str, after_id: int, limit: int = 200
    ) -> list[tuple[int, int, str]]:
        """(chunk id, step index, text) of the job's chunks newer than ``after_id``."""
        query = (
            select(StepOutput.id, StepOutput.step_index, StepOutput.text)
            .where(StepOutput.job_id == job_id, StepOutput.id > after_id)
            .order_by(StepOutput.id)
            .limit(limit)
        )
        with Session(self._engine) as s:
            return [(int(i), int(n), t) for i, n, t in s.execute(query)]

    def iter_text(self, job_id: str, step: int) -> Iterator[str]:
        """The whole log, chunk by chunk (for downloads and search)."""
        idx = self._index(job_id, step)
        for i in range(0, len(idx.ids), 16):
            batch = idx.ids[i : i + 16]
            with Session(self._engine) as s:
                rows = s.execute(
                    select(StepOutput.id, StepOutput.text).where(StepOutput.id.in_(batch))
                )
                texts = {int(i): str(t) for i, t in rows}
            for chunk_id in batch:
                yield texts.get(chunk_id, "")

    def search(self, job_id: str, step: int, needle: str, *, limit: int = SEARCH_HITS) -> list[Hit]:
        """Lines containing ``needle`` (case-insensitive), first ``limit`` of them."""
        needle = needle.lower()
        hits: list[Hit] = []
        if not needle:
            return hits
        line_no, offset, carry = 1, 0, ""
        for chunk in self.iter_text(job_id, step):
            data = carry + chunk
            lines = data.split("\n")
            carry = lines.pop()
            for line in lines:
                if needle in line.lower():
                    hits.append(Hit(line_no, offset, line[:500]))
                    if len(hits) >= limit:
                        return hits
                line_no += 1
                offset += len(line) + 1
        if carry and needle in carry.lower():
            hits.append(Hit(line_no, offset, carry[:500]))
        return hits
