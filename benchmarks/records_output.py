"""Step output into the records: buffered batches vs a commit per chunk.

Run: ``python benchmarks/records_output.py [chunks]``. Both runs use the same
RecordStore on a fresh SQLite file; the baseline sets ``flush_bytes=0`` so every
Output event is its own transaction (what a naive sink would do). Prints the
events per second of each and the ratio, measured in this run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from circlet.engine import events as ev
from circlet.store.records import RecordStore


def run(db: Path, chunks: int, *, flush_bytes: int) -> float:
    """Seconds to record one step with ``chunks`` lines of output, end included."""
    with RecordStore(f"sqlite:///{db}", flush_bytes=flush_bytes) as store:
        store.sink(ev.StepStarted("job", 1, "make", "run"))
        line = "compiling module " + "x" * 60 + "\n"
        started = time.perf_counter()
        for _ in range(chunks):
            store.sink(ev.Output("job", 1, line))
        store.sink(ev.StepFinished("job", 1, "success", 0))
        elapsed = time.perf_counter() - started
        assert store.step_output("job", 1).count("\n") == chunks
    return elapsed


def main() -> None:
    chunks = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp:
        baseline = run(Path(tmp) / "baseline.db", chunks, flush_bytes=0)
        batched = run(Path(tmp) / "batched.db", chunks, flush_bytes=1 << 20)
    print(f"chunks: {chunks}")
    print(f"commit per chunk: {chunks / baseline:12.0f} events/s ({baseline:.3f}s)")
    print(f"batched:          {chunks / batched:12.0f} events/s ({batched:.3f}s)")
    print(f"ratio: {baseline / batched:.1f}x faster")


if __name__ == "__main__":
    main()
