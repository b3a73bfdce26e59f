"""``config process`` output: the expanded config, which compiles back to the same Plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from circlet import plan
from circlet.config import compile_file, compile_text, pipeline_values, render_processed_yaml

GOLDEN = Path(__file__).parent / "golden"
CONFIGS = (Path(__file__).parents[2] / ".." / "shared" / "fixtures" / "configs").resolve()
VALUES = pipeline_values(branch="main", revision="0" * 40, pipeline_id="id")
SAMPLES = [
    GOLDEN / "matrix" / "config.yml",
    GOLDEN / "no_op_job" / "config.yml",
    GOLDEN / "approval_context_serial" / "config.yml",
    GOLDEN / "inline_orbs" / "config.yml",
    GOLDEN / "executors" / "config.yml",
    GOLDEN / "step_forms" / "config.yml",
    CONFIGS / "CircleCI-Public__circleci-cli.yml",
    CONFIGS / "apollographql__apollo-client.yml",
    CONFIGS / "filecoin-project__lotus.yml",
    CONFIGS / "localstack__localstack.yml",
]


def _effective(node: plan.JobNode) -> tuple[object, ...]:
    job = node.job
    env = {**(job.executor.environment if job.executor else {}), **job.environment}
    images = job.executor.images if job.executor else ()
    return (node.name, node.type, node.requires, node.filters, node.contexts, job.steps, env,
            images, job.parallelism, job.working_directory, job.resource_class)  # fmt: skip


@pytest.mark.parametrize(
    "path", SAMPLES, ids=lambda p: p.parent.name if p.name == "config.yml" else p.stem
)
def test_processed_config_compiles_back_to_the_same_jobs(path: Path) -> None:
    original = compile_file(path, values=VALUES)
    text = render_processed_yaml(original)
    assert yaml.safe_load(text)["version"] == 2
    again = compile_text(text, filename="processed.yml", values=VALUES)
    assert [w.name for w in again.workflows] == [w.name for w in original.workflows]
    for before, after in zip(original.workflows, again.workflows, strict=True):
        assert after.enabled == before.enabled
        assert after.triggers == before.triggers
        assert [_effective(n) for n in after.jobs] == [_effective(n) for n in before.jobs]


def test_processed_yaml_shape() -> None:
    text = (
        "version: 2.1\norbs:\n  o: {commands: {c: {steps: [checkout]}}}\n"
        "jobs:\n  b:\n    docker: [{image: x}]\n    steps:\n      - o/c\n"
        "      - run: |\n          one\n          two\n"
        "workflows:\n  w:\n    jobs: [b, {b: {name: b2, requires: [b]}}]\n"
    )
    out = render_processed_yaml(compile_text(text, values=VALUES))
    assert out.splitlines()[0] == "# Orb 'o' is inline"
    assert yaml.safe_load(out) == {
        "version": 2,
        "jobs": {
            "b": {
                "docker": [{"image": "x"}],
                "steps": ["checkout", {"run": {"name": "one\ntwo", "command": "one\ntwo\n"}}],
            },
            "b2": {
                "docker": [{"image": "x"}],
                "steps": ["checkout", {"run": {"name": "one\ntwo", "command": "one\ntwo\n"}}],
            },
        },
        "workflows": {"version": 2, "w": {"jobs": ["b", {"b2": {"requires": ["b"]}}]}},
    }
    assert "command: |\n" in out  # multi-line strings stay readable
