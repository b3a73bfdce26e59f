"""Per-step overhead of the engine on the host executor.

A job of N trivial ``run`` steps (``true``) goes through the real JobRunner
(events, masking with a secret set, BASH_ENV, halt check) on the host
executor; the baseline is a bash loop starting ``bash -eo pipefail -c true``
N times, measured in the same run. Prints ms/step for both, the overhead
(aim: ≤ 3 ms/step) and the ratio.

    python benchmarks/steps.py [--steps 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from circlet.engine import events as ev
from circlet.engine.environ import BuildIdentity
from circlet.engine.runner import JobRequest, JobRunner, new_task_id
from circlet.executors.host import HostExecutor
from circlet.plan import DockerImage, ExecutorSpec, JobSpec, RunStep
from circlet.testing.agent import install_agent


def bash_loop(steps: int) -> float:
    """Seconds per command for a bash loop of ``bash -eo pipefail -c true``."""
    script = f"for i in $(seq {steps}); do bash -eo pipefail -c true; done"
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return (time.perf_counter() - t0) / steps


def engine(steps: int, work: Path, agent: Path) -> float:
    """Seconds per step for ``steps`` run steps through the JobRunner (spin-up excluded)."""
    spec = JobSpec(
        "bench",
        ExecutorSpec(kind="docker", images=(DockerImage("cimg/python:3.11"),)),
        tuple(RunStep(name=f"step {i}", command="true") for i in range(steps)),
    )
    marks: dict[str, float] = {}

    def sink(event: ev.Event) -> None:
        if isinstance(event, ev.StepStarted) and event.index == 2:
            marks["first"] = time.perf_counter()
        elif isinstance(event, ev.StepFinished) and event.index == steps + 1:
            marks["last"] = time.perf_counter()

    who = BuildIdentity(
        job_name="bench",
        build_num=1,
        project="local/bench",
        pipeline_id="p",
        workflow_id="w",
        workflow_job_id="j",
        working_directory=spec.working_directory,
        task_id=new_task_id(),
    )
    runner = JobRunner(
        JobRequest(spec, who, job_id="j", secrets={"TOKEN": "a-secret-value"}),
        executor=HostExecutor(work, agent_bin=agent, ca_bundle=""),
        blobs=None,  # type: ignore[arg-type]  # run steps never touch the blob store
        sink=sink,
    )
    status = runner.run()
    if status != "success":
        raise SystemExit(f"benchmark job ended {status}: {runner.result.reason}")
    return (marks["last"] - marks["first"]) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="circlet-bench-") as tmp:
        agent = Path(tmp) / "agent"
        install_agent(agent)
        engine(10, Path(tmp) / "warm", agent)  # warm caches (imports, page cache)
        bases, ourses = [], []
        for i in range(args.rounds):  # interleaved, so a busy moment hits both alike
            bases.append(bash_loop(args.steps))
            ourses.append(engine(args.steps, Path(tmp) / f"w{i}", agent))
        base, ours = min(bases), min(ourses)
    overhead = (ours - base) * 1000
    print(f"steps per job            : {args.steps} (best of {args.rounds})")
    print(f"bash loop (baseline)     : {base * 1000:7.2f} ms/step")
    print(f"circlet JobRunner (host) : {ours * 1000:7.2f} ms/step")
    print(f"overhead                 : {overhead:7.2f} ms/step  (aim ≤ 3 ms)")
    print(f"ratio                    : {ours / base:7.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
