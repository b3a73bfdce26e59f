"""``add_ssh_keys``: install private SSH keys from this machine into the job.

CircleCI keeps a project's additional SSH keys in its settings and the step
names them by fingerprint. circlet keeps them in a folder (the
``ssh-keys-dir`` setting, default ``<circlet home>/ssh-keys``): a key is found
by its file name (the fingerprint, with or without colons) or by the
fingerprint (MD5 or SHA256) of a ``.pub`` file next to it. Each key goes to
``~/.ssh/id_rsa_<fingerprint without colons>`` with mode 0600 and is added to
``~/.ssh/config``, as CircleCI does. Key contents are never printed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import shlex
import shutil
from pathlib import Path

from circlet import settings
from circlet.engine.steps import register
from circlet.engine.steps.base import StepContext, StepOutcome
from circlet.engine.steps.transfer import scratch
from circlet.plan import AddSshKeysStep, Step


def keys_dir() -> Path:
    """Where the keys live on this machine."""
    configured = settings.SSH_KEYS_DIR.get()
    return Path(configured) if configured else settings.home_dir() / "ssh-keys"


def public_key_fingerprints(pub_text: str) -> set[str]:
    """The MD5 (``aa:bb:…``) and SHA256 (``SHA256:…``) fingerprints of an OpenSSH public key."""
    parts = pub_text.split()
    if len(parts) < 2:
        return set()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return set()
    md5 = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    sha = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return {":".join(md5[i : i + 2] for i in range(0, 32, 2)), f"SHA256:{sha}"}


def _normal(fingerprint: str) -> str:
    return fingerprint.strip().replace(":", "").lower()


def file_name(fingerprint: str) -> str:
    """``id_rsa_<fingerprint without colons>`` (``/`` of SHA256 ones as ``_``)."""
    return "id_rsa_" + fingerprint.strip().replace(":", "").replace("/", "_")


def find_key(folder: Path, fingerprint: str) -> Path | None:
    """The private key file for ``fingerprint`` in ``folder``, or None."""
    if not folder.is_dir():
        return None
    wanted = _normal(fingerprint)
    for candidate in sorted(folder.iterdir()):
        if candidate.suffix == ".pub" or not candidate.is_file():
            continue
        if _normal(candidate.name) in (wanted, _normal(file_name(fingerprint))):
            return candidate
    for pub in sorted(folder.glob("*.pub")):
        private = pub.with_suffix("")
        if not private.is_file():
            continue
        try:
            prints = public_key_fingerprints(pub.read_text("utf-8", "replace"))
        except OSError:
            continue
        if wanted in {_normal(p) for p in prints}:
            return private
    return None


def _all_keys(folder: Path) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        return []
    return [
        (p.name, p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix != ".pub" and not p.name.startswith(".")
    ]


@register("add_ssh_keys")
def add_ssh_keys(step: Step, ctx: StepContext) -> StepOutcome:
    """Install the keys named by ``fingerprints`` (all keys when none are named)."""
    assert isinstance(step, AddSshKeysStep)
    folder = keys_dir()
    chosen: list[tuple[str, Path]] = []
    if step.fingerprints:
        for fingerprint in step.fingerprints:
            key = find_key(folder, fingerprint)
            if key is None:
                reason = (
                    f"No SSH key with fingerprint {fingerprint} in {folder} "
                    f"(save the private key there as {folder / fingerprint})"
                )
                ctx.write(reason + "\n")
                return StepOutcome("failed", 1, reason)
            chosen.append((fingerprint, key))
    else:
        chosen = _all_keys(folder)
        if not chosen:
            ctx.write(f"No additional SSH keys to install (none in {folder})\n")
            return StepOutcome("success")

    ssh_dir = ctx.environment.expand("~/.ssh")
    staged = scratch(ctx, "ssh-keys")
    targets: list[str] = []
    try:
        for fingerprint, key in chosen:
            copy = staged / file_name(fingerprint)
            shutil.copyfile(key, copy)
            copy.chmod(0o600)
            target = f"{ssh_dir}/{copy.name}"
            ctx.environment.copy_in(copy, target)
            targets.append(target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    quoted = " ".join(shlex.quote(t) for t in targets)
    config_lines = "".join(f"  IdentityFile {t}\n" for t in targets)
    script = (
        f"chmod 700 {shlex.quote(ssh_dir)} && chmod 600 {quoted} && "
        f"printf 'Host *\\n%s' {shlex.quote(config_lines)} >> {shlex.quote(ssh_dir + '/config')}"
    )
    output: list[bytes] = []
    result = ctx.environment.exec(
        ["/bin/sh", "-c", script],
        env=ctx.environ,
        cwd=None,
        on_output=output.append,
        cancel=ctx.cancel,
    )
    if result.exit_code != 0:
        reason = f"Could not set up {ssh_dir}: " + b"".join(output).decode(errors="replace")
        reason = reason.strip().splitlines()[0]
        ctx.write(reason + "\n")
        return StepOutcome("failed", result.exit_code, reason)
    for (fingerprint, _), target in zip(chosen, targets, strict=True):
        ctx.write(f"Installed SSH key {fingerprint} to {target}\n")
    ctx.write(f"Added them to {ssh_dir}/config (IdentityFile for every host)\n")
    return StepOutcome("success")
