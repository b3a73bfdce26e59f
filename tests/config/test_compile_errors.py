"""Bad configs → every problem, each with its exact file:line:col, message and path."""

# ruff: noqa: E501 - tables of exact messages read best one per line

from __future__ import annotations

import pytest

from circlet.config import ConfigError, compile_text, compile_with_problems

# name → (config text, pipeline parameters, expected problems as printed)
CASES: dict[str, tuple[str, dict[str, str] | None, list[str]]] = {
    "invalid_yaml": (
        """version: 2.1
jobs:
  build:
    docker: [{image: x}
    steps: []
""",
        None,
        [
            "config.yml:5:5: error: invalid YAML: while parsing a flow sequence: did not find expected ',' or ']'",
        ],
    ),
    "no_version": (
        """jobs:
  build:
    docker: [{image: x}]
    steps: [checkout]
""",
        None,
        [
            "config.yml:1:1: error: the config has no 'version' (expected 2.1)",
        ],
    ),
    "bad_version": (
        """version: 3
jobs: {}
""",
        None,
        [
            "config.yml:1:1: error: version 3 is not supported (expected 2, 2.0 or 2.1) (at version)",
            "config.yml:1:1: error: the config has no workflows and no 'build' job",
        ],
    ),
    "unknown_keys": (
        """version: 2.1
jobs:
  build:
    docker: [{image: x, pull: always}]
    stesp: [checkout]
    steps:
      - run:
          command: make
          timeout: 5m
workflows:
  main:
    jobs: [build]
    concurrency: 1
""",
        None,
        [
            "config.yml:4:25: error: unknown key 'pull' in docker image (expected: auth, aws_auth, command, entrypoint, environment, image, name, user) (at jobs.build.docker[0].pull)",
            "config.yml:5:5: error: unknown key 'stesp' in job 'build' (expected: branches, circleci_ip_ranges, description, docker, environment, executor, machine, macos, parallelism, parameters, resource_class, retention, shell, steps, type, working_directory) (at jobs.build.stesp)",
            "config.yml:9:11: error: unknown key 'timeout' in run step (expected: auto_rerun_delay, background, command, environment, max_auto_reruns, name, no_output_timeout, shell, when, working_directory) (at jobs.build.steps[0].run.timeout)",
            "config.yml:13:5: error: unknown key 'concurrency' in workflow 'main' (expected: jobs, max_auto_reruns, triggers, unless, when) (at workflows.main.concurrency)",
        ],
    ),
    "unknown_step_and_command": (
        """version: 2.1
jobs:
  build:
    docker: [{image: x}]
    steps:
      - chekout
      - frobnicate: {x: 1}
      - run: {name: no command}
      - run:
          command: sleep 1
          no_output_timeout: 10 minutes
      - checkout: {}
        run: echo two keys
workflows:
  main: {jobs: [build]}
""",
        None,
        [
            "config.yml:6:9: error: unknown step or command 'chekout' (at jobs.build.steps[0])",
            "config.yml:7:9: error: unknown step or command 'frobnicate' (at jobs.build.steps[1])",
            "config.yml:8:14: error: run step has no 'command' (at jobs.build.steps[2].run)",
            "config.yml:11:11: error: no_output_timeout '10 minutes' is not a duration like 20m, 1.5h or 30s (at jobs.build.steps[3].run.no_output_timeout)",
            "config.yml:12:9: error: a step has exactly one key (its type), got 2: checkout, run (at jobs.build.steps[4])",
        ],
    ),
    "parameter_types": (
        """version: 2.1
commands:
  c:
    parameters:
      flag: {type: boolean}
      count: {type: integer, default: 1}
      mode: {type: enum, enum: [a, b]}
      var: {type: env_var_name, default: OK}
      steps: {type: steps, default: []}
    steps:
      - run: echo << parameters.flag >> << parameters.count >> << parameters.mode >> $<< parameters.var >>
      - run: echo << parameters.steps >>
      - run: echo << parameters.missing >>
jobs:
  build:
    docker: [{image: x}]
    steps:
      - c: {flag: "yes", count: "3", mode: c, var: "1BAD", extra: 1}
      - c: {mode: a}
workflows:
  main: {jobs: [build]}
""",
        None,
        [
            "config.yml:12:9: error: << parameters.steps >> is a list and cannot be part of a string (at commands.c.steps[1].run)",
            "config.yml:13:9: error: unknown parameter 'missing' of command 'c' in << parameters.missing >> (at commands.c.steps[2].run)",
            "config.yml:18:13: error: argument 'flag' of command 'c': expected a boolean, got the string 'yes' (at jobs.build.steps[0].flag)",
            "config.yml:18:26: error: argument 'count' of command 'c': expected an integer, got the string '3' (at jobs.build.steps[0].count)",
            "config.yml:18:38: error: argument 'mode' of command 'c': the string 'c' is not one of a, b (at jobs.build.steps[0].mode)",
            "config.yml:18:47: error: argument 'var' of command 'c': the string '1BAD' is not a valid environment variable name (at jobs.build.steps[0].var)",
            "config.yml:18:60: error: unexpected argument 'extra' for command 'c' (parameters: count, flag, mode, steps, var) (at jobs.build.steps[0].extra)",
            "config.yml:19:9: error: missing required argument 'flag' for command 'c' (at jobs.build.steps[1])",
        ],
    ),
    "workflow_problems": (
        """version: 2.1
jobs:
  j:
    docker: [{image: x}]
    steps: [checkout]
workflows:
  main:
    jobs:
      - j: {name: a, requires: [c]}
      - j: {name: b, requires: [a]}
      - j: {name: c, requires: [b]}
      - j: {name: a}
      - nope
      - j: {name: d, requires: [ghost], filters: {branches: {only: "/[/"}}}
""",
        None,
        [
            "config.yml:9:9: error: requires cycle in workflow 'main': a -> c -> b -> a (at workflows.main)",
            "config.yml:12:9: error: duplicate job name 'a' in workflow 'main' (give each a unique name:) (at workflows.main)",
            "config.yml:13:9: error: unknown job 'nope' (at workflows.main.jobs[4].nope)",
            "config.yml:14:33: error: job 'd' requires 'ghost', which is not in workflow 'main' (at workflows.main.jobs[5].j.requires[0])",
            "config.yml:14:62: error: invalid regular expression /[/: unterminated character set at position 0 (at workflows.main.jobs[5].j.filters.branches.only)",
        ],
    ),
    "executor_problems": (
        """version: 2.1
executors:
  e:
    parameters:
      tag: {type: string}
    docker: [{image: "x:<< parameters.tag >>"}]
jobs:
  none:
    steps: [checkout]
  both:
    executor: e
    docker: [{image: x}]
    steps: [checkout]
  unknown:
    executor: ghost
    steps: [checkout]
  missing-arg:
    executor: e
    steps: [checkout]
workflows:
  main: {jobs: [none, both, unknown, missing-arg]}
""",
        None,
        [
            "config.yml:8:3: error: job 'none' has no executor (docker, machine, macos or executor) (at jobs.none)",
            "config.yml:11:5: error: missing required argument 'tag' for executor 'e' (at jobs.both.executor)",
            "config.yml:12:5: error: job 'both' has both 'executor' and 'docker' (at jobs.both)",
            "config.yml:15:5: error: unknown executor 'ghost' (at jobs.unknown.executor)",
            "config.yml:18:5: error: missing required argument 'tag' for executor 'e' (at jobs.missing-arg.executor)",
        ],
    ),
    "version2_features": (
        """version: 2
orbs:
  x: circleci/python@2.1.1
commands:
  c: {steps: [checkout]}
jobs:
  build:
    docker: [{image: x}]
    steps:
      - c
workflows:
  version: 2
  main:
    jobs:
      - build:
          matrix: {parameters: {a: [1]}}
""",
        None,
        [
            "config.yml:2:1: error: orbs needs version 2.1 (at orbs)",
            "config.yml:4:1: error: commands needs version 2.1 (at commands)",
            "config.yml:10:9: error: unknown step 'c' (commands need version 2.1) (at jobs.build.steps[0].c)",
            "config.yml:16:11: error: matrix needs version 2.1 (at workflows.main.jobs[0].build)",
            "config.yml:16:11: error: unexpected argument 'a' for job 'build' (job parameters need version 2.1) (at workflows.main.jobs[0].build.a)",
        ],
    ),
    "logic": (
        """version: 2.1
jobs:
  j:
    docker: [{image: x}]
    steps:
      - when:
          condition: {and: []}
          steps: [checkout]
      - when:
          condition: {xor: [true, false]}
          steps: [checkout]
      - unless:
          steps: [checkout]
workflows:
  main:
    when: {matches: {pattern: "(", value: main}}
    jobs: [j]
  other:
    when:
      condition: true
    jobs: [j]
""",
        None,
        [
            "config.yml:7:23: error: 'and' takes a non-empty list of statements (at jobs.j.steps[0].when.condition.and)",
            "config.yml:10:23: error: unknown logic operator 'xor'; expected one of and, or, not, equal, matches (at jobs.j.steps[1].when.condition.xor)",
            "config.yml:12:9: error: 'unless' step needs 'condition' and 'steps' (at jobs.j.steps[2].unless)",
            "config.yml:16:22: error: invalid regular expression '(': missing ), unterminated subpattern at position 0 (at workflows.main.when.matches)",
            "config.yml:19:5: error: a workflow's when takes a logic statement directly, without 'condition' (at workflows.other.when)",
        ],
    ),
    "matrix": (
        """version: 2.1
jobs:
  j:
    parameters:
      v: {type: string}
    docker: [{image: x}]
    steps: [checkout]
workflows:
  main:
    jobs:
      - j:
          matrix:
            parameters:
              v: ["1", "2"]
            exclude:
              - w: "1"
      - j:
          name: same
          matrix:
            parameters:
              v: ["1", "2"]
      - j:
          matrix:
            parameters:
              v: "1"
""",
        None,
        [
            "config.yml:16:17: error: exclude names 'w', which the matrix does not have (at workflows.main.jobs[0].j.matrix.exclude[0])",
            "config.yml:17:9: error: duplicate job name 'same' in workflow 'main' (give each a unique name:) (at workflows.main)",
            "config.yml:25:15: error: matrix parameter 'v' needs a non-empty list of values (at workflows.main.jobs[2].j.matrix.parameters.v)",
        ],
    ),
    "pipeline_params": (
        """version: 2.1
parameters:
  n: {type: integer, default: 1}
  flag: {type: boolean}
  bad: {type: steps}
jobs:
  j:
    docker: [{image: x}]
    steps: [{run: "echo << pipeline.parameters.n >> << pipeline.parameters.ghost >> << pipeline.nothing >>"}]
workflows:
  main: {jobs: [j]}
""",
        {"n": "x", "ghost": "1"},
        [
            "config.yml:2:1: error: argument 'n' of the pipeline: expected an integer, got the string 'x' (at parameters.n)",
            "config.yml:2:1: error: unexpected argument 'ghost' for the pipeline (parameters: flag, n) (at parameters.ghost)",
            "config.yml:2:1: error: missing required argument 'flag' for the pipeline (at parameters)",
            "config.yml:5:9: error: parameter 'bad' has type 'steps'; expected one of string, boolean, integer, enum (at parameters.bad)",
            "config.yml:9:14: error: unknown pipeline parameter 'ghost' in << pipeline.parameters.ghost >> (at jobs.j.steps[0].run)",
            "config.yml:9:14: error: unknown pipeline value << pipeline.nothing >> (at jobs.j.steps[0].run)",
        ],
    ),
    "empty": (
        "",
        None,
        [
            "config.yml:1:1: error: the config is empty",
        ],
    ),
    "not_mapping": (
        """- a
- b
""",
        None,
        [
            "config.yml:1:1: error: the config must be a mapping (version, jobs, workflows…)",
        ],
    ),
    "duplicate_key_warning": (
        """version: 2.1
jobs:
  j:
    docker: [{image: x}]
    steps: [checkout]
    steps: [{run: echo}]
workflows:
  main: {jobs: [j]}
""",
        None,
        [
            "config.yml:6:5: warning: duplicate key 'steps': the later value is used",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_problems_are_collected_and_located(name: str) -> None:
    text, params, expected = CASES[name]
    pipeline, problems = compile_with_problems(text, filename="config.yml", params=params)
    assert [str(p) for p in problems] == expected
    has_errors = any(p.is_error for p in problems)
    assert (pipeline is None) == has_errors
    if has_errors:
        with pytest.raises(ConfigError) as info:
            compile_text(text, filename="config.yml", params=params)
        # str(ConfigError) is one line per error, warnings left out.
        assert str(info.value).splitlines() == [e for e in expected if ": error: " in e]


ORBS = """version: 2.1
orbs:
  used: acme/used@1.0.0
  unused: acme/unused@1.0.0
  bad: not-a-reference
jobs:
  build:
    docker: [{image: x}]
    steps:
      - used/thing
workflows:
  main: {jobs: [build, used/job]}
"""


def test_missing_orbs_are_errors_where_used_and_warnings_where_not() -> None:
    _, problems = compile_with_problems(ORBS, filename="config.yml")
    summary = [(p.severity, str(p.location), p.path) for p in problems]
    assert summary == [
        ("warning", "config.yml:4:3", "orbs.unused"),
        ("error", "config.yml:5:3", "orbs.bad"),
        ("error", "config.yml:10:9", "jobs.build.steps[0]"),
        ("error", "config.yml:12:24", "workflows.main.jobs[1].used/job"),
    ]
    assert problems[0].message.startswith("orb acme/unused@1.0.0 (alias 'unused') is not available")
    assert "has no version" in problems[1].message
    # The first use says where circlet looked; the next one only names the orb.
    assert problems[2].message.startswith("orb not available: acme/used@1.0.0 (alias 'used'): ")
    assert "bundled" in problems[2].message
    assert problems[3].message == "orb not available: acme/used@1.0.0 (alias 'used')"


def test_problem_format() -> None:
    _, problems = compile_with_problems("version: 2.1\njobs: 3\n", filename="dir/c.yml")
    (first,) = [p for p in problems if p.path == "jobs"]
    assert str(first) == "dir/c.yml:2:1: error: jobs must be a mapping of names (at jobs)"
    assert first.location is not None
    assert (first.location.file, first.location.line, first.location.col) == ("dir/c.yml", 2, 1)
