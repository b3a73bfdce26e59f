"""Executor overheads, each against a baseline measured in the same run.

1. docker job spin-up: ``DockerExecutor.start`` + one trivial exec + ``stop``
   vs ``docker run --rm IMAGE true`` (median of N each; aim <= 1.5x).
2. docker exec: one trivial step through the executor vs ``docker exec C true``.
3. host exec: ``HostEnvironment.exec(["bash", "-c", "true"])`` vs spawning
   ``bash -c true`` directly with subprocess (ms per command and the extra ms;
   the engine's budget is ≤ 3 ms per step on top of bash).
4. with ``--copy``: copy_in / copy_out of a cache-like tree (150 MiB, 12k files)
   into the docker primary vs ``docker cp`` and vs a host ``cp -a``.

Usage: python benchmarks/spinup.py [--runs 7] [--image circlet/cimg-python:3.11] [--copy]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from circlet.executors.docker import DockerExecutor
from circlet.executors.host import HostExecutor
from circlet.plan import DockerImage, ExecutorSpec, JobSpec


def median_seconds(action: Callable[[], object], runs: int, warmup: int = 1) -> float:
    """Median wall time of ``action`` over ``runs`` runs (after ``warmup`` unmeasured ones)."""
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def job(image: str) -> JobSpec:
    return JobSpec(name="bench", executor=ExecutorSpec(kind="docker", images=(DockerImage(image),)))


def bench_docker(image: str, runs: int) -> None:
    executor = DockerExecutor(ca_bundle="")

    def circlet_job() -> None:
        env = executor.start(job(image), job_key=f"bench-{uuid.uuid4().hex[:8]}", extra_env={})
        try:
            result = env.exec(["true"], env={}, cwd=None, on_output=lambda _: None)
            assert result.exit_code == 0
        finally:
            env.stop()

    def docker_run() -> None:
        subprocess.run(["docker", "run", "--rm", image, "true"], check=True)

    # Interleave the two so that engine warm-up and noise hit both alike.
    ours, theirs = [], []
    circlet_job()
    docker_run()
    for _ in range(runs):
        ours.append(median_seconds(circlet_job, 1, warmup=0))
        theirs.append(median_seconds(docker_run, 1, warmup=0))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"docker spin-up (start + exec true + stop): {a * 1000:7.1f} ms   "
        f"docker run --rm {image} true: {b * 1000:7.1f} ms   ratio {a / b:.2f}x (aim <= 1.5x)"
    )

    env = executor.start(job(image), job_key=f"bench-{uuid.uuid4().hex[:8]}", extra_env={})
    try:
        container = env.info.details["container"]

        def step() -> None:
            env.exec(["true"], env={}, cwd=None, on_output=lambda _: None)

        def cli_exec() -> None:
            subprocess.run(["docker", "exec", container, "true"], check=True)

        a = median_seconds(step, runs * 3)
        b = median_seconds(cli_exec, runs * 3)
        print(
            f"docker step (exec true):                   {a * 1000:7.1f} ms   "
            f"docker exec C true:               {b * 1000:7.1f} ms   ratio {a / b:.2f}x"
        )
    finally:
        env.stop()


def bench_host(commands: int, rounds: int = 15) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        executor = HostExecutor(Path(tmp), ca_bundle="")
        env = executor.start(job("cimg/python:3.11"), job_key="bench", extra_env={})
        try:
            argv = ["bash", "-c", "true"]

            def ours() -> None:
                for _ in range(commands):
                    env.exec(argv, env={"A": "1"}, cwd="~", on_output=lambda _: None)

            def direct() -> None:
                for _ in range(commands):
                    subprocess.run(argv, env=env.base_env, cwd=env.info.home, check=False)

            def piped() -> None:  # the same pipes and session, no supervision loop
                for _ in range(commands):
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        env=env.base_env,
                        cwd=env.info.home,
                        start_new_session=True,
                    ).communicate()

            # Interleaved rounds, so that load from elsewhere hits all three alike.
            samples: dict[str, list[float]] = {"ours": [], "direct": [], "piped": []}
            for _ in range(rounds):
                for name, action in (("ours", ours), ("direct", direct), ("piped", piped)):
                    samples[name].append(median_seconds(action, 1, warmup=0) / commands)
            a, b, c = (statistics.median(samples[n]) for n in ("ours", "direct", "piped"))
        finally:
            env.stop()
    for label, base in (("subprocess.run(bash -c true)", b), ("Popen+pipes+communicate", c)):
        print(
            f"host exec (bash -c true): {a * 1000:6.2f} ms   {label}: {base * 1000:6.2f} ms   "
            f"ratio {a / base:.2f}x, overhead {(a - base) * 1000:+.2f} ms/command (budget 3 ms)"
        )


def make_tree(root: Path, files: int = 12_000, size: int = 12_800) -> None:
    """A cache-like tree: ``files`` files of ``size`` random bytes in 300 x 7 folders."""
    for i in range(files):
        folder = root / f"pkg{i % 300}" / f"sub{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod{i}.py").write_bytes(os.urandom(size))


def bench_copy(image: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        make_tree(tree)
        executor = DockerExecutor(ca_bundle="")
        env = executor.start(job(image), job_key=f"bench-{uuid.uuid4().hex[:8]}", extra_env={})
        try:
            container = env.info.details["container"]
            timings = {
                "copy_in": lambda: env.copy_in(tree, "~/cache"),
                "docker cp in": lambda: subprocess.run(
                    ["docker", "cp", f"{tree}/.", f"{container}:/tmp/cp-in"], check=True
                ),
                "copy_out": lambda: env.copy_out("~/cache", Path(tmp) / "out"),
                "docker cp out": lambda: subprocess.run(
                    ["docker", "cp", f"{container}:/tmp/cp-in/.", f"{tmp}/cp-out"], check=True
                ),
                "host cp -a": lambda: subprocess.run(
                    ["cp", "-a", f"{tree}/.", f"{tmp}/host-copy"], check=True
                ),
            }
            results = {
                name: median_seconds(action, 1, warmup=0) for name, action in timings.items()
            }
        finally:
            env.stop()
    base = results["host cp -a"]
    for name, seconds in results.items():
        print(
            f"copy 150 MiB / 12k files, {name:14s}: {seconds:6.2f} s  ({seconds / base:.2f}x cp -a)"
        )


def main() -> None:
    """Run both benchmarks and print ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--image", default="circlet/cimg-python:3.11")
    parser.add_argument("--commands", type=int, default=40, help="host commands per round")
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--copy", action="store_true", help="also time copies of a 150 MiB tree")
    args = parser.parse_args()
    bench_host(args.commands)
    if not args.no_docker:
        bench_docker(args.image, args.runs)
    if args.copy and not args.no_docker:
        bench_copy(args.image)


if __name__ == "__main__":
    main()
