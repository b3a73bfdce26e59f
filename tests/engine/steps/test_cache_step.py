"""save_cache / restore_cache through a real environment and the real blob store."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from datastep_env import Job, StartJob, docker_executor, host_executor, job_factory, make_store

from circlet.engine.steps.cache import label_for, tree_path
from circlet.plan import RestoreCacheStep, SaveCacheStep


@pytest.fixture
def start_job(tmp_path: Path) -> Iterator[StartJob]:
    yield from job_factory(tmp_path, make_store(tmp_path / "blobs"), host_executor(tmp_path))


@pytest.fixture
def start_docker_job(tmp_path: Path) -> Iterator[StartJob]:
    yield from job_factory(tmp_path, make_store(tmp_path / "blobs"), docker_executor())


LOCK = '{"default": {"django": "5.0"}}\n'
LOCK_SUM = base64.b64encode(hashlib.sha256(LOCK.encode()).digest()).decode().replace("/", "_")
TEMPLATE = 'v1-deps-{{ .Branch }}-{{ checksum "Pipfile.lock" }}'


def prepare(job: Job, marker: str) -> None:
    job.sh(
        f"printf '%s' '{LOCK}' > Pipfile.lock && mkdir -p venv/bin ~/.cache/pip/http && "
        f"echo {marker} > venv/bin/tool && chmod 755 venv/bin/tool && "
        f"ln -s tool venv/bin/tool-link && echo wheel-{marker} > ~/.cache/pip/http/w.bin"
    )


def test_save_then_restore_in_another_job(start_job: StartJob, tmp_path: Path) -> None:
    outside = tmp_path / "outside-home"  # an absolute path, not below $HOME
    first = start_job()
    prepare(first, "one")
    first.sh(f"mkdir -p {outside} && echo abs > {outside}/f.txt")
    save = SaveCacheStep(key=TEMPLATE, paths=("venv", "~/.cache/pip", str(outside)))

    outcome, out = first.run(save)

    key = f"v1-deps-master-{LOCK_SUM}"
    assert outcome.status == "success"
    assert out.startswith("Creating cache archive...\nUploading cache archive...\n")
    assert f"Stored Cache to {key}\n" in out
    assert f"  * {first.path('venv')}\n  * {first.path('~/.cache/pip')}\n  * {outside}\n" in out
    assert re.search(r"^Total size uploaded: \d+(\.\d)? (B|KiB)$", out, re.M)
    entry = first.ctx.blobs.get_tree("cache/local/datasteps", key)
    assert entry is not None
    assert entry.meta["build_num"] == 75
    assert entry.meta["paths"] == ["~/project/venv", "~/.cache/pip", str(outside)]

    first.sh(f"rm -rf {outside}")
    second = start_job(build_num=76)
    assert second.path("~") != first.path("~")  # host jobs have their own homes
    second.sh(f"printf '%s' '{LOCK}' > Pipfile.lock")
    outcome, out = second.run(RestoreCacheStep(keys=(TEMPLATE,)))

    assert outcome.status == "success"
    assert out.startswith(
        f"Found a cache from build 75 at {key}\nSize: {out.split('Size: ')[1].split(chr(10))[0]}\n"
        "Cached paths:\n"
        f"  * {second.path('venv')}\n  * {second.path('~/.cache/pip')}\n  * {outside}\n\n"
    )
    assert "Unarchiving cache...\n" in out
    # the rendered key of the cache found, never the step's template
    assert f"Extraction duration for {key}: " in out
    assert "{{" not in out
    assert out.endswith("Cache restored successfully\n")
    assert second.sh("cat venv/bin/tool ~/.cache/pip/http/w.bin").split() == ["one", "wheel-one"]
    assert second.sh("stat -c %a venv/bin/tool").strip() == "755"
    assert second.sh("readlink venv/bin/tool-link").strip() == "tool"
    assert (outside / "f.txt").read_text() == "abs\n"


def test_restore_tries_keys_in_order_each_a_prefix_newest_first(start_job: StartJob) -> None:
    job = start_job()
    for build, marker in ((1, "older"), (2, "newer")):
        saver = start_job(build_num=build)
        saver.sh(f"mkdir -p data && echo {marker} > data/f")
        outcome, _ = saver.run(SaveCacheStep(key=f"v1-data-{build}", paths=("data",)))
        assert outcome.status == "success"
    other = start_job(build_num=3)
    other.sh("mkdir -p data && echo unrelated > data/f")
    other.run(SaveCacheStep(key="v2-data-3", paths=("data",)))

    outcome, out = job.run(RestoreCacheStep(keys=("v1-nothing-{{ .Branch }}", "v1-data-")))

    assert outcome.status == "success"
    assert out.startswith(
        "No cache is found for key: v1-nothing-master\nFound a cache from build 2 at v1-data-2\n"
    )
    assert "Extraction duration for v1-data-2: " in out
    assert job.sh("cat data/f").strip() == "newer"

    outcome, out = job.run(RestoreCacheStep(keys=("v1-data-1",)))
    assert "Found a cache from build 1 at v1-data-1" in out


def test_no_cache_at_all_is_not_a_failure(start_job: StartJob) -> None:
    outcome, out = start_job().run(RestoreCacheStep(keys=("a-{{ .Revision }}", "b-")))
    assert outcome.status == "success"
    assert out == "No cache is found for key: a-b5565da\nNo cache is found for key: b-\n"


def test_save_skips_an_existing_key_like_circleci(start_job: StartJob) -> None:
    first = start_job()
    first.sh("mkdir -p data && echo first > data/f")
    first.run(SaveCacheStep(key="v1-k", paths=("data",)))
    second = start_job(build_num=80)
    second.sh("mkdir -p data && echo second > data/f")

    outcome, out = second.run(SaveCacheStep(key="v1-k", paths=("data",)))

    assert outcome.status == "success"
    lines = out.splitlines()
    assert lines[0] == "Skipping cache generation, cache already exists for key: v1-k"
    assert re.fullmatch(r"Found one created at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC", lines[1])
    assert len(lines) == 2
    third = start_job()
    third.run(RestoreCacheStep(keys=("v1-k",)))
    assert third.sh("cat data/f").strip() == "first"


def test_missing_paths_warn_and_nothing_saved_when_all_missing(start_job: StartJob) -> None:
    job = start_job()
    job.sh("mkdir -p present && echo x > present/f")
    outcome, out = job.run(SaveCacheStep(key="v1-some", paths=("present", "absent")))
    assert outcome.status == "success"
    assert f"Warning: could not find path {job.path('absent')}: skipping it\n" in out
    assert "Stored Cache to v1-some" in out

    outcome, out = job.run(SaveCacheStep(key="v1-none", paths=("absent", "~/gone")))
    assert outcome.status == "success"
    assert "no cache was saved" in out
    assert job.ctx.blobs.get_tree("cache/local/datasteps", "v1-none") is None


def test_missing_checksum_file_fails_save_and_skips_that_restore_key(start_job: StartJob) -> None:
    job = start_job()
    job.sh("mkdir -p d && echo 1 > d/f")
    job.run(SaveCacheStep(key="v1-fallback", paths=("d",)))
    template = 'v1-{{ checksum "no-such.lock" }}'

    outcome, out = job.run(SaveCacheStep(key=template, paths=("d",)))

    expected = (
        'Error computing cache key: template: cacheKey:1:6: executing "cacheKey" at '
        f'<checksum "no-such.lock">: error calling checksum: open {job.path("no-such.lock")}: '
        "no such file or directory"
    )
    assert outcome.status == "failed"
    assert outcome.reason == expected
    assert out.startswith(expected + "\n")

    outcome, out = job.run(RestoreCacheStep(keys=(template, "v1-fall")))
    assert outcome.status == "success"
    assert out.startswith(expected + "\n")
    assert "Found a cache from build 75 at v1-fallback" in out


def test_a_job_changing_restored_files_never_changes_the_cache(start_job: StartJob) -> None:
    first = start_job()
    first.sh("mkdir -p d && echo pristine > d/f")
    first.run(SaveCacheStep(key="v1-immutable", paths=("d",)))
    second = start_job()
    second.run(RestoreCacheStep(keys=("v1-immutable",)))
    second.sh("echo tampered > d/f && echo extra > d/new")
    third = start_job()
    third.run(RestoreCacheStep(keys=("v1-immutable",)))
    assert third.sh("cat d/f").strip() == "pristine"
    assert third.sh("ls d").split() == ["f"]


def test_arch_and_environment_templates_use_the_job(start_job: StartJob) -> None:
    job = start_job(environ={"CACHE_VERSION": "v9"})
    job.sh("mkdir -p d && echo 1 > d/f")
    outcome, out = job.run(
        SaveCacheStep(
            key="{{ .Environment.CACHE_VERSION }}-{{ arch }}-{{ .BuildNum }}", paths=("d",)
        )
    )
    assert outcome.status == "success"
    match = re.search(r"Stored Cache to (v9-arch1-linux-[a-z0-9]+-\d+_\d+-75)\n", out)
    assert match, out


def test_labels_and_tree_paths() -> None:
    assert label_for("/home/circleci/.cache/pip", "/home/circleci") == "~/.cache/pip"
    assert label_for("/home/circleci", "/home/circleci/") == "~"
    assert label_for("/home/circleci2/x", "/home/circleci") == "/home/circleci2/x"
    assert label_for("/tmp/cci_pycache", "/") == "/tmp/cci_pycache"
    assert tree_path("~") == "home"
    assert tree_path("~/.cache/pip") == "home/.cache/pip"
    assert tree_path("/tmp/cci_pycache") == "root/tmp/cci_pycache"


@pytest.mark.docker
def test_docker_round_trip(start_docker_job: StartJob) -> None:
    steps = ()
    first = start_docker_job(steps)
    prepare(first, "in-docker")
    first.sh("mkdir -p /tmp/cci_pycache && echo 3.11 > /tmp/cci_pycache/v")
    save = SaveCacheStep(key=TEMPLATE, paths=("venv", "~/.cache/pip", "/tmp/cci_pycache"))
    outcome, out = first.run(save)
    assert outcome.status == "success", out
    assert "  * /home/circleci/project/venv\n  * /home/circleci/.cache/pip\n" in out

    second = start_docker_job(steps)
    second.sh(f"printf '%s' '{LOCK}' > Pipfile.lock")
    outcome, out = second.run(RestoreCacheStep(keys=(TEMPLATE,)))
    assert outcome.status == "success", out
    assert "Found a cache from build 75 at v1-deps-master-" in out
    assert second.sh("cat venv/bin/tool ~/.cache/pip/http/w.bin /tmp/cci_pycache/v").split() == [
        "in-docker",
        "wheel-in-docker",
        "3.11",
    ]
    owners = second.sh("stat -c %U venv/bin/tool ~/.cache/pip/http/w.bin").split()
    assert owners == ["circleci", "circleci"]
    assert second.sh("stat -c %a venv/bin/tool").strip() == "755"


def test_home_caches_restore_as_overlay_and_stay_removable(
    start_job: StartJob, tmp_path: Path
) -> None:
    from circlet import overlay

    assert overlay.available(), "this machine runs tests as root with overlayfs"
    first = start_job()
    first.sh("mkdir -p ~/.cache/pip/http ~/.local/share/venvs/app/bin")
    first.sh("echo wheel > ~/.cache/pip/http/w.bin && echo py > ~/.local/share/venvs/app/bin/py")
    first.sh("chmod 751 ~/.local/share/venvs/app/bin/py")
    first.run(SaveCacheStep(key="v1-home", paths=("~/.cache/pip", "~/.local/share/venvs")))

    second = start_job(build_num=76)
    outcome, out = second.run(RestoreCacheStep(keys=("v1-home",)))
    assert outcome.status == "success"
    assert "copy-on-write overlay of the stored copy" in out
    assert "Unarchiving cache...\n" in out
    assert out.endswith("Cache restored successfully\n")
    home = second.path("~")
    points = {str(p) for p in overlay.mounts_under(Path(home))}
    # mounted above the cached paths, never on them
    assert points == {f"{home}/.cache", f"{home}/.local"}
    assert second.sh("cat ~/.cache/pip/http/w.bin ~/.local/share/venvs/app/bin/py").split() == [
        "wheel",
        "py",
    ]
    assert second.sh("stat -c %a ~/.local/share/venvs/app/bin/py").strip() == "751"
    # the job may change and remove what it restored, as on CircleCI ...
    second.sh("echo tampered > ~/.cache/pip/http/w.bin && rm -rf ~/.local/share/venvs")
    assert second.sh("ls ~/.local/share").strip() == ""
    second.env.stop()
    assert overlay.mounts_under(Path(home)) == []  # detached when the job ends

    # ... without changing the cache
    third = start_job(build_num=77)
    third.run(RestoreCacheStep(keys=("v1-home",)))
    assert third.sh("cat ~/.cache/pip/http/w.bin ~/.local/share/venvs/app/bin/py").split() == [
        "wheel",
        "py",
    ]


def test_a_cached_path_that_would_be_a_mount_point_is_extracted(start_job: StartJob) -> None:
    first = start_job()
    first.sh("mkdir -p node_modules/x && echo 1 > node_modules/x/i.js")
    first.run(SaveCacheStep(key="v1-nm", paths=("node_modules",)))
    second = start_job()
    outcome, out = second.run(RestoreCacheStep(keys=("v1-nm",)))
    assert outcome.status == "success"
    assert "overlay" not in out  # ~/project exists: node_modules itself would be the mount
    second.sh("rm -rf node_modules")  # so removing it works, as on CircleCI
    assert second.sh("ls").strip() == ""
