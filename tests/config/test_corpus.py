"""Every real-world config in the shared fixtures compiles, or fails only for
a reason CircleCI would share, or for an orb circlet does not bundle.

The outcome of each file is recorded in EXPECTED, so that any change (a
regression, or an improvement) fails here until the table is updated:

- ``ok``: compiles without errors;
- ``orb-missing:<ref>[,<ref>…]``: uses an orb that is neither bundled nor in
  an orb folder (CircleCI would fetch it from its registry);
- ``orb-interface:<alias/element>``: uses a parameter that the orb version it
  names has, but circlet's bundled orb (which follows another version) lacks;
- ``rejected:<message>``: an error CircleCI reports too.
"""

# ruff: noqa: E501 - tables of exact messages read best one per line

from __future__ import annotations

import re
from pathlib import Path

import pytest

from circlet.config import ORB_NOT_AVAILABLE, Problem, compile_file_with_problems, pipeline_values

FIXTURES = (Path(__file__).parents[2] / ".." / "shared" / "fixtures").resolve()
CONFIGS = FIXTURES / "configs"
VALUES = pipeline_values(
    branch="main",
    revision="0123456789abcdef0123456789abcdef01234567",
    project_type="github",
    project_url="https://github.com/example/project",
    pipeline_id="00000000-0000-4000-8000-000000000000",
)
_MISSING = re.compile(re.escape(ORB_NOT_AVAILABLE) + r" (\S+)")
_INTERFACE = re.compile(
    r"unexpected argument '([^']+)' for (?:command|job|executor) '(\w[\w-]*/[^']+)'"
)

EXPECTED: dict[str, str] = {
    "18F__tock.yml": "ok",
    "CircleCI-Public__circleci-cli.yml": "ok",
    "CircleCI-Public__circleci-demo-ruby-rails.yml": "orb-missing:circleci/ruby@1.1.0",
    "CircleCI-Public__node-orb.yml": "orb-missing:circleci/orb-tools@12.0,circleci/shellcheck@3.2",
    "CircleCI-Public__python-orb.yml": "orb-missing:circleci/orb-tools@11.1,circleci/shellcheck@3.1",
    "CircleCI-Public__python-orb__test-deploy.yml": "orb-missing:circleci/orb-tools@11.1",
    "Constantine-Quantum-Tech__tqsim.yml": "ok",
    "DataDog__dd-trace-py.yml": "orb-missing:circleci/continuation@0.1.2",
    "DataDog__dd-trace-rb.yml": "ok",
    "Instagram__LibCST.yml": "ok",
    "OpenZeppelin__openzeppelin-contracts.yml": "ok",
    "YelaniaCarolina__MIAD_Despliegue_S4_Taller_CI.yml": "ok",
    "YeseniaEscobedo__triangle-area-calculator.yml": "ok",
    "Yesi-MC__sweater-weather.yml": "ok",
    "apollographql__apollo-client.yml": "ok",
    "closeio__ciso8601.yml": "ok",
    "cypress-io__cypress-example-kitchensink.yml": "orb-missing:circleci/browser-tools@2.4.2,circleci/windows@5.1.1,cypress-io/cypress@6.1.0",
    "cypress-io__cypress-realworld-app.yml": "orb-missing:codecov/codecov@1.2.3,cypress-io/cypress@3.3.1",
    "ethereum__solidity.yml": "orb-missing:circleci/windows@2.2.0",
    "fabric__fabric.yml": "orb-missing:invocations/orb@1.3.1",
    "fastlane__fastlane.yml": "orb-missing:circleci/macos@2,circleci/ruby@2.5.4",
    "filecoin-project__lotus.yml": "ok",
    "ggtracker__sc2reader.yml": "ok",
    "go-swagger__go-swagger.yml": "ok",
    "gruntwork-io__terragrunt.yml": "orb-missing:circleci/go@1.11",
    "holochain__holochain.yml": "ok",
    "honeycombio__libhoney-py.yml": "ok",
    "infinitered__ignite.yml": "orb-missing:infinitered/publish-docs@0.5.0",
    "ipfs__kubo.yml": "orb-missing:circleci/continuation@0.2.0",
    "ipfs__kubo__main.yml": "ok",
    "kedro-org__kedro.yml": "orb-missing:circleci/windows@2.4.1",
    "localstack__localstack.yml": "ok",
    "ministryofjustice__hmpps-template-kotlin.yml": "orb-missing:ministryofjustice/hmpps@10",
    "ministryofjustice__hmpps-template-typescript.yml": "orb-missing:ministryofjustice/hmpps@10",
    "mozilla__application-services.yml": "ok",
    "mozilla__glean.yml": "ok",
    "mozilla__uniffi-rs.yml": "ok",
    "nbialostosky__sample-python-cfd.yml": "ok",
    "nipy__nipype.yml": "ok",
    "omry__omegaconf.yml": "ok",
    "open-mmlab__mmengine__test.yml": "ok",
    "ory__hydra.yml": "orb-missing:circleci/go@1.5.0,circleci/shellcheck@2.2.4,circleci/slack@3.4.2,ory/changelog@0.1.10,ory/docs@0.0.12,ory/golangci@0.0.18,ory/goreleaser@0.1.38,ory/nancy@0.0.19,ory/prettier@0.0.11,ory/sdk@0.1.53",
    "paramiko__paramiko.yml": "orb-missing:invocations/orb@1.6.0",
    "prometheus__node_exporter.yml": "ok",
    "pyinvoke__invocations.yml": "orb-missing:invocations/orb@1.5.0",
    "pyinvoke__invoke.yml": "orb-missing:invocations/orb@1.7.0",
    "readthedocs__sphinx-hoverxref.yml": "ok",
    "readthedocs__sphinx-notfound-page.yml": "ok",
    "rubocop__rubocop.yml": "ok",
    "ryanwilsonperkin__pytest-circleci-parallelized.yml": "ok",
    "sfackler__rust-openssl.yml": "ok",
    "sfackler__rust-postgres.yml": "ok",
    "sphinx-gallery__sphinx-gallery.yml": "ok",
    "spotify__apollo.yml": "ok",
    "spotify__scio.yml": "ok",
    "spree__spree.yml": "ok",
    "thanos-io__thanos.yml": "orb-missing:circleci/go@1.7.3,guitarrapc/git-shallow-clone@2.5.0",
    "thoughtbot__administrate.yml": "orb-missing:circleci/browser-tools@1.4.3",
    "vuejs__vue.yml": "ok",
    "wordpress-mobile__WordPress-FluxC-Android.yml": "orb-missing:circleci/slack@2.5.0,wordpress-mobile/android@1.0",
}


def classify(problems: list[Problem]) -> str:
    """The outcome label of one config's problems."""
    errors = [p.message for p in problems if p.is_error]
    if not errors:
        return "ok"
    missing = sorted({m.group(1) for e in errors if (m := _MISSING.match(e))})
    if missing:
        return "orb-missing:" + ",".join(missing)
    interface = sorted({f"{m.group(2)}.{m.group(1)}" for e in errors if (m := _INTERFACE.match(e))})
    if len(interface) == len({*errors}) or all(_INTERFACE.match(e) for e in errors):
        return "orb-interface:" + ",".join(interface)
    return "rejected:" + errors[0]


def test_every_fixture_is_listed() -> None:
    on_disk = {p.name for p in CONFIGS.glob("*.yml")}
    indexed = {
        line.split("\t")[0]
        for line in (CONFIGS / "index.tsv").read_text().splitlines()[1:]
        if line.strip()
    }
    assert len(on_disk) >= 60
    assert on_disk == indexed == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_outcome(name: str) -> None:
    pipeline, problems = compile_file_with_problems(CONFIGS / name, values=VALUES)
    outcome = classify(problems)
    assert outcome == EXPECTED[name], "\n".join(str(p) for p in problems[:10])
    assert (pipeline is None) == (outcome != "ok")
    # Every problem is located in a file (the config or an orb's source).
    assert all(p.location is not None for p in problems)


def test_oc_lettings_compiles_with_the_bundled_python_orb() -> None:
    pipeline, problems = compile_file_with_problems(
        FIXTURES / "oc-lettings" / "config.yml", values=VALUES
    )
    assert pipeline is not None, "\n".join(map(str, problems))
    # heroku is declared but never used: a warning, not an error.
    assert [p.severity for p in problems] == ["warning"]
    assert "circleci/heroku@2.0.0" in problems[0].message
    assert pipeline.orbs == {"python": "circleci/python@2.1.1", "heroku": "circleci/heroku@2.0.0"}
    (workflow,) = pipeline.workflows
    run_test = workflow.jobs[0]
    assert run_test.name == "run_test"
    names = [step.name for step in run_test.job.steps]
    assert names[0] == "Checkout code"
    assert names[-1] == "Run tests"
    for expected in ("Restoring cache", "Saving cache"):
        assert expected in names
    assert [n.name for n in workflow.jobs][-1] == "notify_deployment"
