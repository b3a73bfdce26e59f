"""Masking: literal and escaped forms, whole text and streams split anywhere."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from circlet.engine.events import JobFinished, Output, StepFinished
from circlet.engine.masking import MASK, Masker, masking_sink

SECRET = "hunter2-s3cret"


def test_short_values_are_not_masked() -> None:
    masker = Masker(["abc", SECRET])
    assert masker.mask("abc and hunter2-s3cret") == f"abc and {MASK}"


def test_escaped_forms() -> None:
    value = 'p@ss word"/x'
    masker = Masker([value])
    for shown in (value, json.dumps(value), "p%40ss%20word%22%2Fx", 'p@ss\\ word\\"/x'):
        assert value not in masker.mask(shown)
        assert MASK in masker.mask(shown), shown


def test_longest_secret_wins() -> None:
    masker = Masker(["abcd", "abcdefgh"])
    assert masker.mask("xabcdefghx") == f"x{MASK}x"


def test_stream_holds_only_a_possible_prefix() -> None:
    stream = Masker([SECRET]).stream()
    assert stream.feed(b"hello hun") == "hello "  # "hun" could start the secret
    assert stream.feed(b"ter2-s3") == ""
    assert stream.feed(b"cret done\n") == f"{MASK} done\n"
    assert stream.flush() == ""


def test_stream_releases_a_false_start() -> None:
    stream = Masker([SECRET]).stream()
    assert stream.feed("hunt") == ""
    assert stream.feed("ing season\n") == "hunting season\n"


def test_stream_flush_masks_the_tail() -> None:
    stream = Masker([SECRET]).stream()
    out = stream.feed(f"x{SECRET[:5]}")
    out += stream.flush()
    assert out == f"x{SECRET[:5]}"


def test_utf8_split_across_chunks() -> None:
    stream = Masker([]).stream()
    data = "héllo ✓".encode()
    out = "".join(stream.feed(data[i : i + 1]) for i in range(len(data))) + stream.flush()
    assert out == "héllo ✓"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["abcd", "zz", SECRET, "hunter", "x\n", "cdxy", "ab"]), max_size=12),
    st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=20),
)
def test_stream_equals_whole_text(parts: list[str], cuts: list[int]) -> None:
    """However the output is chunked, the stream shows what masking the whole shows."""
    masker = Masker([SECRET, "abcd", "cdxy"])
    text = "".join(parts)
    stream = masker.stream()
    shown, pos, i = [], 0, 0
    while pos < len(text):
        size = cuts[i % len(cuts)]
        shown.append(stream.feed(text[pos : pos + size].encode()))
        pos += size
        i += 1
    shown.append(stream.flush())
    result = "".join(shown)
    assert result == masker.mask(text)
    assert SECRET not in result


def test_masking_sink_masks_events_but_not_ids() -> None:
    seen: list[object] = []
    sink = masking_sink(seen.append, Masker([SECRET]))
    sink(StepFinished(SECRET, 2, "failed", 1, f"printed {SECRET}"))
    sink(JobFinished("j", "failed", SECRET))
    sink(Output("j", 2, "already masked"))
    first = seen[0]
    assert isinstance(first, StepFinished)
    assert first.reason == f"printed {MASK}"
    assert first.job_id == SECRET  # ids are ours, never secrets: left alone
    assert isinstance(seen[1], JobFinished)
    assert seen[1].reason == MASK
    assert seen[2] == Output("j", 2, "already masked", at=seen[2].at)  # type: ignore[attr-defined]
