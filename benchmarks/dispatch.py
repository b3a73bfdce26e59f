"""Dispatch overhead: trivial jobs through two ``circlet runner`` processes (Celery on
Redis, the fleet API, PostgreSQL records) vs the same jobs in the local pool.

Run: ``bash scripts/services`` once, then ``python benchmarks/dispatch.py [jobs]``
(default 200). Both runs use the same scheduler, records database, host executor
and two job slots (``max_parallel=2`` locally; two runners of one slot each), so
the difference is what the fleet adds: queueing, claiming, streaming events over
HTTP and forwarding them. Prints both wall times, the ratio, and the overhead per
job: (fleet - local) * slots / jobs (aim: ≤ 50 ms).
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
    check_services()
    from circlet.cluster.tokens import create_runner_token
    from circlet.store.accounts import SecretBox
    from circlet.store.records import RecordStore

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
                remote = pipeline_from(config(jobs, "acme/bench"), home)
                local = pipeline_from(config(jobs, None), home)
                # Warm up both paths (imports, connections, the runners' start).
                for warm in (config(4, "acme/bench"), config(4, None)):
                    assert sch.run(pipeline_from(warm, home), max_parallel=SLOTS).ok
                t0 = time.perf_counter()
                local_result = sch.run(local, max_parallel=SLOTS)
                local_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                fleet_result = sch.run(remote, max_parallel=SLOTS)
                fleet_s = time.perf_counter() - t0
                if not (local_result.ok and fleet_result.ok):
                    raise SystemExit("a benchmark job failed")
                per_runner: dict[str, int] = {}
                for job in fleet_result.jobs():
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
            drop_database(database_url)
    overhead_ms = (fleet_s - local_s) * SLOTS / jobs * 1000
    print(f"jobs: {jobs}, slots: {SLOTS} (local pool) vs 2 runners x 1 slot")
    print(f"local pool:   {local_s:7.2f}s  ({local_s / jobs * 1000:6.1f} ms/job wall)")
    print(f"2 runners:    {fleet_s:7.2f}s  ({fleet_s / jobs * 1000:6.1f} ms/job wall)")
    print(f"jobs per runner: {per_runner}")
    print(f"ratio fleet/local: {fleet_s / local_s:.2f}x")
    print(f"dispatch overhead per job: {overhead_ms:.1f} ms (aim <= 50 ms)")
    print(f"queue -> claim, median: {statistics.median(waits) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
