"""``store_test_results``: JUnit XML from the job, parsed safely and recorded.

The results (a file, or every ``*.xml`` below a folder) are copied out of the
job and parsed with :mod:`circlet.testing.junit` (defusedxml); the cases go out
as one :class:`~circlet.engine.events.TestsRecorded` event (records keep them
for the Tests tab and for ``circleci tests split --split-by=timings``). The
step prints a summary and the failures. Like on CircleCI it never fails the
job: no results, or a file that is not valid XML, is a warning.
"""

from __future__ import annotations

import shutil

from circlet.engine.events import TestsRecorded
from circlet.engine.steps import register
from circlet.engine.steps.base import StepContext, StepOutcome
from circlet.engine.steps.transfer import scratch
from circlet.plan import Step, StoreTestResultsStep
from circlet.testing import junit


@register("store_test_results")
def store_test_results(step: Step, ctx: StepContext) -> StepOutcome:
    """Parse and record the JUnit results at ``path``."""
    assert isinstance(step, StoreTestResultsStep)
    inside = ctx.environment.expand(step.path)
    ctx.write(f"Archiving the following test results\n  * {inside}\n\n")
    copy = scratch(ctx, "test-results") / "results"
    try:
        if not ctx.environment.copy_out(inside, copy):
            ctx.write(f"No test results found at {inside}\n")
            return StepOutcome("success")
        files = junit.xml_files(copy) if copy.is_dir() else [copy]
        cases: list[junit.TestCase] = []
        for file in files:
            try:
                cases.extend(junit.parse_file(file))
            except junit.JUnitError as exc:
                shown = str(exc).replace(str(copy), inside, 1)
                ctx.write(f"Warning: {shown}\n")
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    if not cases:
        ctx.write(f"No test results found at {inside}\n")
        return StepOutcome("success")
    ctx.sink(TestsRecorded(ctx.job_id, tuple(case.to_dict() for case in cases)))
    summary = junit.summarize(cases)
    noun = "file" if len(files) == 1 else "files"
    ctx.write(f"Found test results in {len(files)} {noun}: {junit.describe(summary)}\n")
    failures = junit.format_failures(cases)
    if failures:
        ctx.write(f"\n{failures}\n")
    return StepOutcome("success")
