"""Dispatch overhead: trivial jobs through two ``circlet runner`` processes (Celery on
Redis, the fleet API, PostgreSQL records) vs the same jobs in the local pool.

Run: ``bash scripts/services`` once, then ``python benchmarks/dispatch.py [jobs]``
(default 200). Every mode uses the same scheduler, records database and host
executor. "1 at a time": one job in flight, locally or on a runner: the added
latency of a job. Two slots (``max_parallel=2`` locally, two runners of one slot
each): the scheduler keeps 2 jobs in flight (a job is sent only when one ended),
or 8 (the broker queue keeps the runners busy while the scheduler records the
previous job). On one 2-core machine the runners, the API server, PostgreSQL
and the scheduler share the cores; across machines they would not. The jobs
run in interleaved rounds, so a change of machine load hits every mode alike.
Prints wall times, ratios, and the overhead per job:
(fleet - local) * slots / jobs (aim: <= 50 ms).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

# The same real parts the fleet tests start (server process, runner processes).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "cluster"))

from cluster_helpers import (
    REDIS_URL,
    ApiServer,
    Runner,
    check_services,
    drop_database,
    forget_queues,
    fresh_database,
    pipeline_from,
    scheduler,
)
from sqlalchemy import text

SLOTS = 2


def config(jobs: int, resource_class: str | None) -> str:
    """A workflow of ``jobs`` independent one-step jobs."""
    rc = f"    resource_class: {resource_class}\n" if resource_class else ""
    body = "".join(
        f"  j{i:03d}:\n    machine: true\n{rc}    steps:\n      - run: echo job {i}\n"
        for i in range(jobs)
    )
    names = ", ".join(f"j{i:03d}" for i in range(jobs))
    return f"version: 2.1\njobs:\n{body}workflows:\n  main:\n    jobs: [{names}]\n"


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = 4
    check_services()
    from circlet.cluster.tokens import create_runner_token
    from circlet.store.accounts import SecretBox
    from circlet.store.records import RecordStore

    modes = {  # name: (resource class, jobs the scheduler keeps in flight)
        "local pool, 1 at a time": (None, 1),
        "fleet, 1 at a time": ("acme/bench", 1),
        "local pool": (None, SLOTS),
        "2 runners, 2 in flight": ("acme/bench", SLOTS),
        "2 runners, 8 in flight": ("acme/bench", 8),
    }
    seconds = dict.fromkeys(modes, 0.0)
    per_runner: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="circlet-bench-") as tmp:
        home = Path(tmp)
        database_url = fresh_database()
        RecordStore(database_url).close()
        SecretBox(home / "server-secrets.key")
        prefix = "bench" + uuid.uuid4().hex[:8]
        api = ApiServer(home, database_url, queue_prefix=prefix, broker_url=REDIS_URL, lease=15)
        api.start()
        runners: list[Runner] = []
        try:
            with scheduler(home, database_url, REDIS_URL, prefix) as sch:
                for n in (1, 2):
                    token = create_runner_token(sch.records, f"bench-{n}", ["acme/bench"])
                    runners.append(
                        Runner(
                            home,
                            f"bench-{n}",
                            server=api.url,
                            token=token,
                            classes="acme/bench",
                            broker=REDIS_URL,
                        ).start()
                    )
                # Warm up every path (imports, connections, the runners' start).
                for rc in (None, "acme/bench"):
                    if not sch.run(pipeline_from(config(4, rc), home), max_parallel=SLOTS).ok:
                        raise SystemExit("a warm-up job failed")
                size = jobs // rounds
                for number in range(rounds):
                    order = list(modes) if number % 2 == 0 else list(reversed(modes))
                    for mode in order:
                        rc, window = modes[mode]
                        pipeline = pipeline_from(config(size, rc), home)
                        t0 = time.perf_counter()
                        result = sch.run(pipeline, max_parallel=window)
                        seconds[mode] += time.perf_counter() - t0
                        if not result.ok:
                            raise SystemExit(f"a job failed in mode {mode!r}")
                        for job in result.jobs():
                            name = sch.runner_of(job.job_id) or "local"
                            per_runner[name] = per_runner.get(name, 0) + 1
                with sch.store.engine.connect() as conn:
                    waits = [
                        float(w)
                        for w in conn.execute(
                            text(
                                "SELECT claimed_at - created_at FROM cluster_jobs "
                                "WHERE claimed_at IS NOT NULL"
                            )
                        ).scalars()
                    ]
        finally:
            for runner in runners:
                runner.process.stop()
            api.process.stop()
            forget_queues(REDIS_URL, prefix)
            drop_database(database_url)
    total = size * rounds
    print(f"jobs: {total} per mode, in {rounds} interleaved rounds")
    print(f"jobs per place: {per_runner}")
    for mode, spent in seconds.items():
        line = f"{mode:24s} {spent:7.2f}s  {spent / total * 1000:6.1f} ms/job"
        _, window = modes[mode]
        baseline = "local pool, 1 at a time" if window == 1 else "local pool"
        if mode != baseline:
            base = seconds[baseline]
            slots = 1 if window == 1 else SLOTS
            overhead = (spent - base) * slots / total * 1000
            line += f"  ratio {spent / base:4.2f}x  dispatch overhead {overhead:5.1f} ms/job"
        print(line)
    print("aim: dispatch overhead <= 50 ms/job")
    print(f"queue -> claim, median: {statistics.median(waits) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
