"""Cost of testing the working tree: snapshot + export vs plain git, in one run.

Builds a repository of N files (one commit), modifies every 50th file and adds
an untracked one, then times, best of R rounds:

* ``snapshot``: circlet's commit of the working tree (temporary index, no
  change to the user's repository), against ``git status --porcelain`` (what
  any tool pays to learn the tree is dirty);
* ``export``: circlet's working copy of that commit (clone, branch, checkout),
  against ``git clone --no-hardlinks`` of the repository (which checks out
  HEAD, not the uncommitted changes).

    python benchmarks/checkout.py [--files 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from circlet.engine.gitsnapshot import export_checkout, snapshot


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def build_repo(root: Path, files: int) -> None:
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for i in range(files):
        folder = root / f"pkg{i % 40}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{i}.py").write_text(f"VALUE = {i}\n" * 50)
    git(root, "add", "-A")
    git(root, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "bench")
    for i in range(0, files, 50):
        (root / f"pkg{i % 40}" / f"mod{i}.py").write_text("changed\n")
    (root / "untracked.txt").write_text("new\n")


def best(rounds: int, action: Callable[[int], None]) -> float:
    times = []
    for n in range(rounds):
        start = time.perf_counter()
        action(n)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="circlet-bench-checkout-") as tmp:
        base = Path(tmp)
        repo = base / "repo"
        build_repo(repo, args.files)
        snap = snapshot(repo)

        def status(_: int) -> None:
            git(repo, "status", "--porcelain")

        def circlet_snapshot(_: int) -> None:
            snapshot(repo)

        def clone(n: int) -> None:
            dest = base / f"clone-{n}"
            subprocess.run(
                ["git", "clone", "-q", "--no-hardlinks", str(repo), str(dest)], check=True
            )
            shutil.rmtree(dest)

        def export(n: int) -> None:
            dest = base / f"export-{n}"
            export_checkout(repo, snap.commit, dest, branch=snap.branch)
            shutil.rmtree(dest)

        rows = [
            (
                "snapshot",
                best(args.rounds, circlet_snapshot),
                "git status",
                best(args.rounds, status),
            ),
            ("export", best(args.rounds, export), "git clone", best(args.rounds, clone)),
        ]
    print(f"repository: {args.files} files, {args.files // 50 + 1} changed or new")
    for name, ours, base_name, theirs in rows:
        print(
            f"{name:9s} {ours * 1000:8.1f} ms   {base_name:10s} {theirs * 1000:8.1f} ms   "
            f"ratio {ours / theirs:5.2f}x"
        )


if __name__ == "__main__":
    main()
