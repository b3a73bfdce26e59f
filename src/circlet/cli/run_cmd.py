"""``circlet run``: run a project's CircleCI workflows here, step by step.

A chain of small tasks (nox style): read the project's settings, snapshot the
code under test, compile the config for this run's pipeline values, pick the
executors, run the pipeline with a live renderer, print the summary, exit
with 0 (every job that ran succeeded), 1 (a job failed, or the config is
wrong), 2 (bad usage, no Docker engine…) or 130 (Ctrl-C).
"""

from __future__ import annotations

import getpass
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click
import yaml
from rich.console import Console

from circlet import settings
from circlet.cli.render import Renderer
from circlet.engine.results import PipelineResult
from circlet.engine.run_options import RunOptions
from circlet.engine.scheduler import ExecutorFactory, run_pipeline
from circlet.executors.base import Executor, ExecutorError
from circlet.plan import JobSpec, Pipeline

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROJECT_SETTINGS = ".circlet.yml"


class UsageError(Exception):
    """An expected problem: one line for the user, exit code 2."""


@dataclass(frozen=True)
class ProjectSettings:
    """``<project>/.circlet.yml``: image substitutions, CA bundle, default executor."""

    images: dict[str, str] = field(default_factory=dict)
    ca_bundle: str = ""
    executor: str | None = None


@dataclass(frozen=True)
class RunArgs:
    path: Path
    workflow: str | None = None
    job: str | None = None
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None
    executor: str | None = None
    env: tuple[str, ...] = ()
    jobs: int = 2
    pipeline_params: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    ca_bundle: str | None = None
    approve: bool = False
    orb_dirs: tuple[str, ...] = ()
    verbose: bool = False


# ---------------------------------------------------------------- small tasks


def parse_pairs(values: Sequence[str], what: str) -> dict[str, str]:
    """``["K=V", …]`` → dict; a value without ``=`` is a usage error naming ``what``."""
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r} is not KEY=VALUE")
        result[key] = value
    return result


def load_project_settings(project: Path) -> ProjectSettings:
    """Read ``.circlet.yml`` (absent: defaults); a bad file is a one-line usage error."""
    path = project / PROJECT_SETTINGS
    if not path.is_file():
        return ProjectSettings()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise UsageError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of settings")
    unknown = sorted(set(data) - {"images", "ca_bundle", "executor"})
    if unknown:
        known = "images, ca_bundle, executor"
        raise UsageError(f"{path}: unknown setting {unknown[0]!r} (known: {known})")
    images = data.get("images") or {}
    if not isinstance(images, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in images.items()
    ):
        raise UsageError(f"{path}: images must map image names to image names")
    executor = data.get("executor")
    if executor is not None and executor not in ("docker", "host"):
        raise UsageError(f"{path}: executor must be docker or host, not {executor!r}")
    ca_bundle = data.get("ca_bundle") or ""
    if not isinstance(ca_bundle, str):
        raise UsageError(f"{path}: ca_bundle must be a file path")
    return ProjectSettings(images=dict(images), ca_bundle=ca_bundle, executor=executor)


@dataclass(frozen=True)
class Code:
    """The code under test, as far as git knows it."""

    repo: Path | None = None
    commit: str | None = None
    branch: str | None = None
    origin_url: str | None = None
    subject: str = ""


def snapshot_code(project: Path, commit: str | None) -> Code:
    """A commit of the working tree (or ``--commit``); no git → no checkout possible."""
    from circlet.engine import gitsnapshot

    try:
        snap = gitsnapshot.snapshot(project, commit)
    except gitsnapshot.NotAGitRepositoryError:
        if commit is not None:
            raise UsageError(f"--commit {commit}: {project} is not in a git repository") from None
        return Code()
    except gitsnapshot.GitError as exc:
        raise UsageError(str(exc)) from exc
    return Code(
        repo=snap.repo,
        commit=snap.commit,
        branch=snap.branch,
        origin_url=snap.origin_url,
        subject=snap.subject,
    )


def compile_pipeline(
    config: Path, *, values: Mapping[str, Any], params: Mapping[str, str], orb_dirs: list[Path]
) -> Pipeline:
    """The Plan for this run; ConfigError propagates (located problems)."""
    from circlet import config as config_pkg

    compile_file: Callable[..., Pipeline] = config_pkg.compile_file
    return compile_file(config, values=dict(values), params=dict(params), orb_dirs=orb_dirs)


def make_executor_factory(
    kind: str,
    *,
    agent_bin: Path,
    images: Mapping[str, str],
    ca_bundle: str,
    pipeline: Pipeline | None = None,
) -> ExecutorFactory:
    """One executor object per backend, created up front (so a missing Docker engine
    is reported before anything runs); ``machine`` jobs always run on the host."""
    from circlet.executors.host import HostExecutor

    host = HostExecutor(agent_bin=agent_bin, ca_bundle=ca_bundle or None)
    needs_docker = pipeline is None or any(
        node.job.executor is not None and node.job.executor.kind == "docker"
        for wf in pipeline.workflows
        for node in wf.jobs
    )
    if kind == "host" or not needs_docker:
        return lambda _spec: host
    docker = _docker_executor(agent_bin=agent_bin, images=images, ca_bundle=ca_bundle)

    def factory(spec: JobSpec) -> Executor:
        if spec.executor is not None and spec.executor.kind == "docker":
            return docker
        return host

    return factory


def _docker_executor(*, agent_bin: Path, images: Mapping[str, str], ca_bundle: str) -> Executor:
    try:
        from circlet.executors.docker import DockerExecutor
    except ImportError as exc:  # pragma: no cover - the docker backend ships with circlet
        raise UsageError(f"the docker executor is not available: {exc}") from exc
    try:
        executor = DockerExecutor(
            agent_bin=agent_bin, image_map=dict(images), ca_bundle=ca_bundle or None
        )
        executor.api  # noqa: B018 - connect now: no engine is a usage error, not a failed job
    except ExecutorError as exc:
        raise UsageError(str(exc)) from exc
    return executor


@contextmanager
def interrupt_cancels(cancel: threading.Event, console: Console) -> Iterator[None]:
    """Ctrl-C sets ``cancel`` (jobs stop, containers go, records stay) instead of raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(_sig: int, _frame: FrameType | None) -> None:
        if not cancel.is_set():
            console.print("\ncanceling: stopping jobs and removing their environments…")
        cancel.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -------------------------------------------------------------------- the run


def run(args: RunArgs, *, console: Console, err: Console) -> int:
    """``circlet run`` as a function: returns the exit code."""
    project = args.path.resolve()
    config = project / ".circleci" / "config.yml"
    if not project.is_dir():
        raise UsageError(f"{args.path}: no such directory")
    if not config.is_file():
        raise UsageError(f"no CircleCI config: {config} does not exist")
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    local = load_project_settings(project)
    secrets = parse_pairs(args.env, "-e")
    params = parse_pairs(args.pipeline_params, "--pipeline-param")
    images = {**local.images, **_env_images(), **parse_pairs(args.images, "--image")}
    ca_bundle = args.ca_bundle or settings.CA_BUNDLE.get() or local.ca_bundle
    if ca_bundle and not Path(ca_bundle).is_file():
        raise UsageError(f"--ca-bundle {ca_bundle}: no such file")
    kind = args.executor or os.environ.get("CIRCLET_EXECUTOR") or local.executor or "docker"
    orb_dirs = [Path(d) for d in args.orb_dirs] or _default_orb_dirs()

    code = snapshot_code(project, args.commit)
    branch = args.branch or (None if args.tag else code.branch)
    slug = f"local/{project.name}"

    from circlet.config.errors import ConfigError
    from circlet.config.values import pipeline_values
    from circlet.store.blobs import LocalBlobStore
    from circlet.store.records import RecordStore
    from circlet.testing.agent import install_agent

    records = RecordStore(settings.DATABASE_URL.get() or None)
    try:
        number = records.next_pipeline_number(slug)
        values = pipeline_values(
            branch=branch,
            tag=args.tag,
            revision=code.commit,
            number=number,
            project_url=code.origin_url or "",
        )
        try:
            pipeline = compile_pipeline(config, values=values, params=params, orb_dirs=orb_dirs)
        except ConfigError as exc:
            for problem in exc.problems:
                err.print(str(problem), highlight=False, markup=False, soft_wrap=True)
            return EXIT_FAILED
        _check_job(pipeline, args)
        for note in schedule_notes(pipeline, args):
            console.print(note, highlight=False, markup=False, soft_wrap=True)
        with tempfile.TemporaryDirectory(prefix="circlet-agent-") as tmp:
            agent_bin = Path(tmp) / "bin"
            install_agent(agent_bin)
            factory = make_executor_factory(
                kind, agent_bin=agent_bin, images=images, ca_bundle=ca_bundle, pipeline=pipeline
            )
            options = RunOptions(
                project=slug,
                branch=branch,
                tag=args.tag,
                revision=code.commit,
                secrets=secrets,
                repo=code.repo,
                commit=code.commit,
                username=_user(),
                repository_url=code.origin_url or (str(code.repo) if code.repo else ""),
            )
            result = _run_pipeline(
                pipeline,
                args=args,
                options=options,
                factory=factory,
                blobs=LocalBlobStore(settings.home_dir() / "blobs"),
                records=records,
                number=number,
                console=console,
            )
    finally:
        records.close()
    if result.canceled:
        return EXIT_INTERRUPTED
    if not result.workflows:
        scheduled = any(wf.triggers for wf in pipeline.workflows)
        err.print(_nothing_to_run(branch, args.tag, scheduled), highlight=False, markup=False)
    return EXIT_OK if result.ok else EXIT_FAILED


def _run_pipeline(
    pipeline: Pipeline,
    *,
    args: RunArgs,
    options: RunOptions,
    factory: ExecutorFactory,
    blobs: Any,
    records: Any,
    number: int,
    console: Console,
) -> PipelineResult:
    from circlet.engine.events import fan_out

    cancel = threading.Event()
    renderer = Renderer(console, verbose=args.verbose)
    try:
        with interrupt_cancels(cancel, console):
            result = run_pipeline(
                pipeline,
                options=options,
                executor_factory=factory,
                blobs=blobs,
                sink=fan_out(records.sink, renderer),
                records=records,
                workflow=args.workflow,
                job=args.job,
                max_parallel=args.jobs,
                cancel=cancel,
                approve=args.approve,
                pipeline_id=pipeline.pipeline_values.get("pipeline.id") or None,
                number=number,
            )
    finally:
        renderer.close()
    renderer.summary(result)
    return result


def _check_job(pipeline: Pipeline, args: RunArgs) -> None:
    names = {
        name
        for wf in pipeline.workflows
        if args.workflow is None or wf.name == args.workflow
        for node in wf.jobs
        for name in (node.name, node.job.name)
    }
    if args.workflow is not None and all(wf.name != args.workflow for wf in pipeline.workflows):
        known = ", ".join(wf.name for wf in pipeline.workflows) or "none"
        raise UsageError(f"--workflow {args.workflow}: no such workflow (known: {known})")
    if args.job is not None and args.job not in names:
        raise UsageError(f"--job {args.job}: no such job in the workflows")


def schedule_notes(pipeline: Pipeline, args: RunArgs) -> list[str]:
    """What ``circlet run`` says about workflows with ``triggers: schedule``.

    As on CircleCI they do not run for a push (here: a local run); naming one
    with ``--workflow`` runs it now, and the output says so."""
    notes = []
    for wf in pipeline.workflows:
        if not wf.triggers or (args.workflow is not None and wf.name != args.workflow):
            continue
        crons = ", ".join(t.cron for t in wf.triggers)
        if args.workflow is not None:
            notes.append(
                f"workflow {wf.name} runs on a schedule ({crons}): "
                "running it now because --workflow names it"
            )
        elif args.job is None and wf.enabled:
            notes.append(
                f"workflow {wf.name} runs only on its schedule ({crons}): not run "
                f"(--workflow {wf.name} runs it now)"
            )
    return notes


def _nothing_to_run(branch: str | None, tag: str | None, scheduled: bool) -> str:
    what = f"tag {tag}" if tag else f"branch {branch or '(none)'}"
    why = "filters, `when` and schedules" if scheduled else "filters and `when`"
    return f"no workflow has a job to run for {what} ({why} excluded them all)"


def _env_images() -> dict[str, str]:
    try:
        return settings.parse_image_map(settings.IMAGE_MAP.get())
    except ValueError as exc:
        raise UsageError(f"{settings.IMAGE_MAP.env}: {exc}") from exc


def _default_orb_dirs() -> list[Path]:
    path = Path(settings.ORB_DIR.get())
    return [path] if path.is_dir() else []


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


# ---------------------------------------------------------------------- click


@click.command("run")
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--workflow", help="Run only this workflow.")
@click.option("--job", help="Run only this job (not its upstream jobs).")
@click.option("--branch", help="The branch to run for (default: the current git branch).")
@click.option("--tag", help="Run as a tag pipeline for this tag.")
@click.option("--commit", help="Test this commit instead of the working tree.")
@click.option(
    "--executor",
    type=click.Choice(["docker", "host"]),
    help="Where jobs run (default: docker, or .circlet.yml's executor).",
)
@click.option(
    "-e", "--env", multiple=True, metavar="K=V", help="A project variable (secret: masked)."
)
@click.option("--jobs", default=2, show_default=True, help="Job copies to run at once.")
@click.option("--pipeline-param", multiple=True, metavar="K=V", help="A pipeline parameter.")
@click.option("--image", multiple=True, metavar="FROM=TO", help=settings.IMAGE_MAP.help)
@click.option("--ca-bundle", help=settings.CA_BUNDLE.help)
@click.option("--approve", is_flag=True, help="Approve every approval job.")
@click.option("--orb-dir", multiple=True, help=settings.ORB_DIR.help)
@click.option("-v", "--verbose", is_flag=True, help="Stream every step's output.")
def command(**opts: Any) -> None:
    """Run the CircleCI workflows of the project at PATH (default: here)."""
    args = RunArgs(
        path=opts["path"],
        workflow=opts["workflow"],
        job=opts["job"],
        branch=opts["branch"],
        tag=opts["tag"],
        commit=opts["commit"],
        executor=opts["executor"],
        env=opts["env"],
        jobs=opts["jobs"],
        pipeline_params=opts["pipeline_param"],
        images=opts["image"],
        ca_bundle=opts["ca_bundle"],
        approve=opts["approve"],
        orb_dirs=opts["orb_dir"],
        verbose=opts["verbose"],
    )
    console = Console()
    err = Console(stderr=True)
    try:
        code = run(args, console=console, err=err)
    except UsageError as exc:
        err.print(f"circlet run: {exc}", highlight=False, markup=False, soft_wrap=True)
        code = EXIT_USAGE
    except ExecutorError as exc:
        err.print(f"circlet run: {exc}", highlight=False, markup=False, soft_wrap=True)
        code = EXIT_USAGE
    raise SystemExit(code)
