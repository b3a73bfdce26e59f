"""Config compile time against ``yaml.safe_load`` of the same file.

Compiles the largest fixture config (ethereum/solidity, ~2,000 lines: anchors,
commands, executors, matrices, 2 dozen workflows) to a Plan, and loads the
same text with ``yaml.safe_load`` (PyYAML's pure-Python loader) and with the
libyaml-backed ``CSafeLoader``, in the same process. Prints the median of N
runs of each and the ratios (aim: compile <= 20x ``yaml.safe_load``).

Its ``circleci/windows`` orb is not bundled: a small stand-in is written to a
temporary orb folder so the whole config compiles, as it would with the orb.

    python benchmarks/compile.py [--runs 15] [--config PATH]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from circlet import plan
from circlet.config import compile_with_problems, pipeline_values

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "fixtures"
    / "configs"
    / "ethereum__solidity.yml"
).resolve()
WINDOWS_ORB = """version: 2.1
executors:
  default:
    parameters:
      size: {type: enum, enum: [medium, large, xlarge, 2xlarge], default: medium}
      shell: {type: string, default: powershell.exe -ExecutionPolicy Bypass}
    machine:
      image: windows-server-2019-vs2019:stable
      shell: << parameters.shell >>
    resource_class: windows.<< parameters.size >>
"""


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--config", type=Path, default=FIXTURE)
    args = parser.parse_args()
    text = args.config.read_text(encoding="utf-8")
    values = pipeline_values(branch="main", revision="0" * 40)

    with tempfile.TemporaryDirectory() as tmp:
        orb_dir = Path(tmp)
        (orb_dir / "circleci" / "windows").mkdir(parents=True)
        (orb_dir / "circleci" / "windows" / "orb.yml").write_text(WINDOWS_ORB)

        def compile_once() -> plan.Pipeline:
            pipeline, problems = compile_with_problems(
                text, filename=str(args.config), values=values, orb_dirs=[orb_dir]
            )
            if pipeline is None:
                sys.exit("the benchmark config does not compile:\n" + "\n".join(map(str, problems)))
            return pipeline

        pipeline = compile_once()
        compile_s = median_seconds(compile_once, args.runs)

    # Pure-Python PyYAML refuses the re-defined anchors this config has, which
    # is why circlet composes its own nodes; the baseline reads a copy whose
    # duplicate anchors are renamed, which is the same amount of YAML.
    baseline_text = _rename_duplicate_anchors(text)
    safe_s = median_seconds(lambda: yaml.safe_load(baseline_text), args.runs)
    c_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    csafe_s = median_seconds(lambda: yaml.load(baseline_text, Loader=c_loader), args.runs)

    jobs = sum(len(wf.jobs) for wf in pipeline.workflows)
    lines = text.count("\n")
    print(
        f"config: {args.config.name} ({lines} lines, {jobs} workflow jobs), median of {args.runs}"
    )
    print(f"circlet compile       {compile_s * 1000:8.1f} ms")
    print(f"yaml.safe_load        {safe_s * 1000:8.1f} ms")
    print(f"yaml CSafeLoader      {csafe_s * 1000:8.1f} ms")
    print(f"ratio compile / yaml.safe_load:   {compile_s / safe_s:6.2f}x (aim <= 20x)")
    print(f"ratio compile / CSafeLoader:      {compile_s / csafe_s:6.2f}x")
    return 0


def _rename_duplicate_anchors(text: str) -> str:
    seen: dict[str, int] = {}

    def rename(match: re.Match[str]) -> str:
        name = match.group(1)
        seen[name] = seen.get(name, 0) + 1
        return match.group(0) if seen[name] == 1 else f"&{name}__{seen[name]}"

    return re.sub(r"&([A-Za-z0-9_-]+)", rename, text)


if __name__ == "__main__":
    sys.exit(main())
