"""Copies into and out of a docker job: the staging fast path vs the tar stream vs baselines.

A cache-like tree (default ~150 MiB, ~12k files: many small files, some
compressible like sources, some not like .so/.pyc, a few large ones, and
symlinks) is copied, in the same run:

- into the docker primary (``circlet/cimg-python:3.11``, user circleci) with
  ``copy_in`` from the job's staging directory (one ``cp -a`` and a chown
  inside) and from a host path outside it (the tar stream);
- out of it with ``copy_out`` into the staging directory (one ``cp -a``) and
  into a host path outside it (the tar stream);
- on the host: ``cp -a``, ``tar -xzf`` of the tree's archive, ``tar -czf``.

Each is the median of ``--runs`` interleaved rounds; every copy goes to a fresh
destination and the staged source is a fresh root-owned copy each round (as a
restored cache is). Ratios: copy_in vs ``tar -xzf`` (issue 4: restore <= 0.5x),
copy_out vs ``tar -czf`` (save <= 0.15x), and fast vs tar stream.

Usage: python benchmarks/transfer.py [--runs 3] [--mib 150] [--files 12000]
       [--tree DIR (an existing tree instead, e.g. a venv)]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from circlet.executors.docker import DockerEnvironment, DockerExecutor
from circlet.plan import DockerImage, ExecutorSpec, JobSpec

IMAGE = "circlet/cimg-python:3.11"
WORDS = [
    "def",
    "class",
    "return",
    "import",
    "from",
    "self",
    "None",
    "True",
    "if",
    "else",
    "for",
    "in",
    "not",
    "and",
    "or",
    "value",
]


def make_tree(root: Path, *, mib: int, files: int, seed: int = 4) -> None:
    """A venv-like tree of about ``mib`` MiB in ``files`` files (plus symlinks)."""
    rng = random.Random(seed)
    corpus = " ".join(rng.choice(WORDS) for _ in range(300_000)).encode()
    large = 8
    large_size = mib * (1 << 20) * 3 // 8 // large  # 3/8 of the bytes in a few big files
    small_total = mib * (1 << 20) - large * large_size
    small = files - large
    mean = small_total / small
    for i in range(files):
        folder = root / f"pkg{i % 240}" / ("sub" if i % 3 else "") / ("x" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        if i < large:
            size, name = large_size, f"_native{i}.so"
        else:
            size = max(16, int(rng.expovariate(1 / mean)))
            name = f"mod{i}.py" if i % 10 < 6 else f"mod{i}.cpython-311.pyc"
        if name.endswith(".py"):  # compressible, like source
            start = rng.randrange(0, max(1, len(corpus) - size))
            data = (corpus[start : start + size] * (size // len(corpus) + 1))[:size]
        else:
            data = rng.randbytes(size)
        (folder / name).write_bytes(data)
        if i % 60 == 0:
            (folder / f"link{i}").symlink_to(name)


def tree_size(root: Path) -> tuple[int, int]:
    """(bytes, files) under ``root``."""
    total = count = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
            count += 1
    return total, count


def timed(action: Callable[..., object], *args: object) -> float:
    """Wall time of one call of ``action(*args)``."""
    start = time.perf_counter()
    action(*args)
    return time.perf_counter() - start


def sh(argv: list[str]) -> None:
    """Run a host command; fail loudly."""
    subprocess.run(argv, check=True)


def inside(env: DockerEnvironment, script: str) -> None:
    """Run a shell script in the job; fail loudly."""
    chunks: list[bytes] = []
    result = env.exec(["sh", "-c", script], env={}, cwd=None, on_output=chunks.append)
    assert result.exit_code == 0, b"".join(chunks)


def run_benchmark(tree: Path, scratch: Path, runs: int) -> dict[str, float]:
    """Median seconds of every way of copying ``tree``."""
    samples: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        samples.setdefault(name, []).append(seconds)

    executor = DockerExecutor(ca_bundle="", work_dir=scratch / "work")
    job = JobSpec(name="bench", executor=ExecutorSpec(kind="docker", images=(DockerImage(IMAGE),)))
    env = executor.start(job, job_key=f"bench-transfer-{uuid.uuid4().hex[:8]}", extra_env={})
    try:
        stage = env.staging_dir
        if stage is None:
            raise SystemExit("this engine gives no staging directory (remote engine?)")
        env.copy_in(tree, "~/src")  # what copy_out copies back
        # Nothing is deleted until the end: deletes (with ``discard``) load the
        # disk and would slow whichever copy comes next.
        for r in range(runs):
            # host baselines
            archive = scratch / f"tree-{r}.tar.gz"
            record("tar -czf", timed(sh, ["tar", "-czf", str(archive), "-C", str(tree), "."]))
            fresh = scratch / f"xzf-{r}"
            fresh.mkdir()
            record("tar -xzf", timed(sh, ["tar", "-xzf", str(archive), "-C", str(fresh)]))
            record("host cp -a", timed(sh, ["cp", "-a", str(tree), str(scratch / f"cp-{r}")]))

            # copy_in: the tar stream, then the staging fast path from a fresh root-owned copy
            record("copy_in tar stream", timed(env.copy_in, tree, f"~/in-tar-{r}"))
            staged = stage / f"step-{r}-restore"
            sh(["cp", "-a", str(tree), str(staged)])
            record("copy_in staged", timed(env.copy_in, staged, f"~/in-fast-{r}"))

            # copy_out: the tar stream, then the staging fast path
            out = scratch / f"out-{r}"
            record("copy_out tar stream", timed(env.copy_out, "~/src", out))
            staged_out = stage / f"step-{r}-save" / "src"
            record("copy_out staged", timed(env.copy_out, "~/src", staged_out))
            assert tree_size(staged_out) == tree_size(tree)
    finally:
        env.stop()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    """Build or take the tree, time every copy, print seconds and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=150)
    parser.add_argument("--files", type=int, default=12_000)
    parser.add_argument("--tree", type=Path, help="an existing tree to copy instead")
    args = parser.parse_args()
    base = Path(os.environ.get("CIRCLET_BENCH_TMP", tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix="circlet-transfer-", dir=base) as tmp:
        scratch = Path(tmp)
        tree = args.tree
        if tree is None:
            tree = scratch / "tree"
            make_tree(tree, mib=args.mib, files=args.files)
        size, files = tree_size(tree)
        print(f"tree: {size / (1 << 20):.0f} MiB in {files} files ({tree})")
        result = run_benchmark(tree, scratch, args.runs)
    width = max(len(name) for name in result)
    for name, seconds in result.items():
        print(f"  {name:{width}s} {seconds:7.2f} s")
    ratios = (
        ("copy_in staged / tar -xzf", "copy_in staged", "tar -xzf", "issue 4 restore <= 0.5x"),
        ("copy_out staged / tar -czf", "copy_out staged", "tar -czf", "issue 4 save <= 0.15x"),
        ("copy_in staged / copy_in tar stream", "copy_in staged", "copy_in tar stream", ""),
        ("copy_out staged / copy_out tar stream", "copy_out staged", "copy_out tar stream", ""),
        ("copy_in staged / host cp -a", "copy_in staged", "host cp -a", ""),
        ("copy_out staged / host cp -a", "copy_out staged", "host cp -a", ""),
        ("copy_in tar stream / host cp -a", "copy_in tar stream", "host cp -a", ""),
        ("copy_out tar stream / host cp -a", "copy_out tar stream", "host cp -a", ""),
    )
    print("ratios:")
    for label, a, b, note in ratios:
        print(f"  {label:38s} {result[a] / result[b]:6.2f}x  {note}")


if __name__ == "__main__":
    main()
