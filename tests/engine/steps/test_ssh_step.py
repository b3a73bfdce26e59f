"""add_ssh_keys: keys found by fingerprint on this machine, installed 0600 in the job."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from datastep_env import StartJob, host_executor, job_factory, make_store

from circlet.engine.steps.ssh import file_name, find_key, public_key_fingerprints
from circlet.plan import AddSshKeysStep


@pytest.fixture
def start_job(tmp_path: Path) -> Iterator[StartJob]:
    yield from job_factory(tmp_path, make_store(tmp_path / "blobs"), host_executor(tmp_path))


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "ssh-keys"
    folder.mkdir()
    monkeypatch.setenv("CIRCLET_SSH_KEYS_DIR", str(folder))
    return folder


def keygen(path: Path) -> tuple[str, str]:
    """A real ed25519 key pair; its (MD5, SHA256) fingerprints as ssh-keygen prints them."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "t", "-f", str(path)], check=True
    )
    prints = []
    for algo in ("md5", "sha256"):
        line = subprocess.run(
            ["ssh-keygen", "-l", "-E", algo, "-f", f"{path}.pub"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        prints.append(line.split()[1].removeprefix("MD5:"))
    return prints[0], prints[1]


def test_fingerprints_match_ssh_keygen(tmp_path: Path) -> None:
    md5, sha = keygen(tmp_path / "k")
    assert public_key_fingerprints((tmp_path / "k.pub").read_text()) == {md5, sha}
    assert find_key(tmp_path, md5) == tmp_path / "k"
    assert find_key(tmp_path, sha) == tmp_path / "k"
    assert find_key(tmp_path, "00:11:22") is None


def test_key_named_by_fingerprint_is_installed(start_job: StartJob, keys: Path) -> None:
    fingerprint = "b7:35:a6:4e:9b:0d:6d:d4:78:1e:9a:97:2a:66:6b:63"
    (keys / fingerprint).write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-body\n")
    job = start_job()

    outcome, out = job.run(AddSshKeysStep(fingerprints=(fingerprint,)))

    assert outcome.status == "success"
    target = job.path("~/.ssh/id_rsa_b735a64e9b0d6dd4781e9a972a666b63")
    assert f"Installed SSH key {fingerprint} to {target}\n" in out
    assert "secret-body" not in out
    assert job.sh(f"stat -c %a {target} ~/.ssh").split() == ["600", "700"]
    assert job.sh(f"cat {target}").endswith("secret-body\n")
    assert job.sh("cat ~/.ssh/config") == f"Host *\n  IdentityFile {target}\n"


def test_key_found_through_its_public_key(start_job: StartJob, keys: Path) -> None:
    md5, _ = keygen(keys / "deploy")
    job = start_job()
    outcome, _ = job.run(AddSshKeysStep(fingerprints=(md5,)))
    assert outcome.status == "success"
    installed = job.path(f"~/.ssh/{file_name(md5)}")
    # ssh itself accepts the installed key (mode and format right)
    assert job.sh(f"ssh-keygen -y -f {installed}").split()[0] == "ssh-ed25519"


def test_unknown_fingerprint_fails_naming_it(start_job: StartJob, keys: Path) -> None:
    outcome, out = start_job().run(AddSshKeysStep(fingerprints=("aa:bb:cc",)))
    assert outcome.status == "failed"
    assert outcome.reason == (
        f"No SSH key with fingerprint aa:bb:cc in {keys} "
        f"(save the private key there as {keys / 'aa:bb:cc'})"
    )
    assert out == outcome.reason + "\n"


def test_without_fingerprints_all_keys_are_installed(start_job: StartJob, keys: Path) -> None:
    job = start_job()
    outcome, out = job.run(AddSshKeysStep())
    assert outcome.status == "success"
    assert out == f"No additional SSH keys to install (none in {keys})\n"
    (keys / "one").write_text("k1\n")
    (keys / "two").write_text("k2\n")
    outcome, out = job.run(AddSshKeysStep())
    assert outcome.status == "success"
    assert job.sh("ls ~/.ssh").split() == ["config", "id_rsa_one", "id_rsa_two"]
