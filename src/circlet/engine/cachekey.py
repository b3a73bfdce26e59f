"""Cache-key templates, rendered as CircleCI renders them.

CircleCI keys are Go templates with a fixed data set and two functions:
``{{ .Branch }}``, ``{{ .Revision }}``, ``{{ .BuildNum }}``,
``{{ .Environment.NAME }}``, ``{{ checksum "file" }}``, ``{{ epoch }}`` and
``{{ arch }}``. We implement exactly that subset (including ``{{-``/``-}}``
trim markers and free whitespace inside the braces) and reproduce Go's error
texts, so a key that works on CircleCI renders to the same string here and a
broken one fails with the message a CircleCI user already knows.

``checksum`` is the standard base64 of the SHA-256 digest of the file's bytes
with ``/`` written as ``_`` (CircleCI keys never contain ``/``; the seed's
``…+ru_pMVX…`` key shows both ``+`` and ``_``). A missing variable renders as
``<no value>``, as Go does for a missing map key.

The pure core is :func:`render_key`; :func:`render_for_job` binds it to a job
(files are read *inside* the job environment, relative to its working directory).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from circlet.engine.steps.base import StepContext

TEMPLATE_NAME = "cacheKey"  # the name CircleCI's Go template carries in its errors
NO_VALUE = "<no value>"

_ACTION = re.compile(r"\{\{(?P<ltrim>-[ \t\r\n])?(?P<body>.*?)(?P<rtrim>[ \t\r\n]-)?\}\}", re.S)
_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<word>[^\s"`]+))', re.S
)
_GO_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
_UNAME_TO_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "386",
    "i686": "386",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


class CacheKeyError(Exception):
    """A key template that cannot be rendered; the message is CircleCI's one line."""


class ChecksumError(Exception):
    """Raised by a checksum function: the file cannot be read (message like Go's ``open …``)."""


def host_arch() -> str:
    """``{{ arch }}`` of this machine (used when no job environment is involved)."""
    uname = os.uname()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        cpuinfo = ""
    return arch_string(uname.sysname, uname.machine, cpuinfo)


@dataclass(frozen=True)
class KeyValues:
    """The data a key template sees. ``arch`` may be a value or a lazy function
    (finding it costs a command in the job environment)."""

    branch: str | None = None
    revision: str | None = None
    build_num: int = 0
    environment: Mapping[str, str] = field(default_factory=dict)
    epoch: Callable[[], int] = field(default=lambda: int(time.time()))
    arch: Callable[[], str] | str = field(default=host_arch)


ChecksumFn = Callable[[str], bytes]
"""``checksum_fn(path_as_written) → raw SHA-256 digest``; raises :class:`ChecksumError`."""


def checksum_text(digest: bytes) -> str:
    """The key text of a digest: standard base64 with ``/`` as ``_`` (CircleCI's form)."""
    return base64.b64encode(digest).decode("ascii").replace("/", "_")


def _location(template: str, pos: int) -> str:
    line = template.count("\n", 0, pos) + 1
    col = pos - (template.rfind("\n", 0, pos) + 1)
    return f"{TEMPLATE_NAME}:{line}:{col}"


def _line(template: str, pos: int) -> str:
    return f"{TEMPLATE_NAME}:{template.count(chr(10), 0, pos) + 1}"


def _go_unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    out: list[str] = []
    i = 1
    while i < len(token) - 1:
        ch = token[i]
        if ch == "\\":
            nxt = token[i + 1]
            out.append(_GO_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokenize(body: str, template: str, pos: int) -> list[tuple[str, str, int]]:
    """Split an action into (kind, text, absolute position) tokens."""
    tokens: list[tuple[str, str, int]] = []
    i = 0
    while i < len(body):
        if body[i:].strip() == "":
            break
        match = _TOKEN.match(body, i)
        if match is None:  # an unterminated string
            raise CacheKeyError(f"template: {_line(template, pos)}: unterminated quoted string")
        kind = match.lastgroup or "word"
        text = match.group(kind)
        tokens.append((kind, text, pos + match.start(kind)))
        i = match.end()
    return tokens


def _field(name: str, values: KeyValues, template: str, pos: int, node: str) -> str:
    """Evaluate ``.Branch``, ``.Environment.X`` … as Go would print them."""
    parts = name[1:].split(".") if name != "." else []
    if not parts:
        raise CacheKeyError(
            f'template: {_location(template, pos)}: executing "{TEMPLATE_NAME}" at <{node}>: '
            "the template data cannot be printed; use a field such as .Branch"
        )
    head, rest = parts[0], parts[1:]
    simple = {
        "Branch": values.branch or "",
        "Revision": values.revision or "",
        "BuildNum": str(values.build_num),
    }
    if head in simple and not rest:
        return simple[head]
    if head == "Environment" and len(rest) == 1:
        return values.environment.get(rest[0], NO_VALUE)
    if head == "Environment" and not rest:
        inner = " ".join(f"{k}:{v}" for k, v in sorted(values.environment.items()))
        return f"map[{inner}]"
    if head in simple or head == "Environment":
        bad = rest[0] if head in simple else rest[1]
        raise CacheKeyError(
            f'template: {_location(template, pos)}: executing "{TEMPLATE_NAME}" at <{node}>: '
            f"can't evaluate field {bad} in type string"
        )
    raise CacheKeyError(
        f'template: {_location(template, pos)}: executing "{TEMPLATE_NAME}" at <{node}>: '
        f"can't evaluate field {head} in type cache.TemplateValues "
        "(known: .Branch, .Revision, .BuildNum, .Environment.NAME)"
    )


def _argument(token: tuple[str, str, int], values: KeyValues, template: str, node: str) -> str:
    kind, text, pos = token
    if kind in ("str", "raw"):
        return _go_unquote(text)
    if text.startswith("."):
        return _field(text, values, template, pos, node)
    if text.startswith("'"):
        raise CacheKeyError(
            f"template: {_line(template, pos)}: malformed character constant: {text}"
        )
    raise CacheKeyError(f'template: {_line(template, pos)}: function "{text}" not defined')


def _action(body: str, pos: int, template: str, values: KeyValues, checksum_fn: ChecksumFn) -> str:
    tokens = _tokenize(body, template, pos)
    if not tokens:
        raise CacheKeyError(f"template: {_line(template, pos)}: missing value for command")
    if any(t[1] in ("|", "(", ")") or t[1].startswith(("$", "(")) for t in tokens):
        raise CacheKeyError(
            f"template: {_line(template, pos)}: unsupported cache key template "
            f"{{{{{body}}}}}: only .Branch, .Revision, .BuildNum, .Environment.NAME, "
            'checksum "FILE", epoch and arch are available'
        )
    node = " ".join(t[1] for t in tokens)
    kind, head, head_pos = tokens[0]
    args = tokens[1:]
    if head.startswith("'"):
        raise CacheKeyError(
            f"template: {_line(template, head_pos)}: malformed character constant: {head}"
        )
    if kind in ("str", "raw"):
        if args:
            raise CacheKeyError(
                f'template: {_location(template, head_pos)}: executing "{TEMPLATE_NAME}" '
                f"at <{node}>: can't give argument to non-function {head}"
            )
        return _go_unquote(head)
    if head.startswith("."):
        if args:
            raise CacheKeyError(
                f'template: {_location(template, head_pos)}: executing "{TEMPLATE_NAME}" '
                f"at <{head}>: {head} is not a method but has arguments"
            )
        return _field(head, values, template, head_pos, node)
    if head == "checksum":
        if len(args) != 1:
            raise CacheKeyError(
                f'template: {_location(template, head_pos)}: executing "{TEMPLATE_NAME}" '
                f"at <{head}>: wrong number of args for checksum: want 1 got {len(args)}"
            )
        path = _argument(args[0], values, template, node)
        try:
            return checksum_text(checksum_fn(path))
        except ChecksumError as exc:
            raise CacheKeyError(
                f'template: {_location(template, head_pos)}: executing "{TEMPLATE_NAME}" '
                f"at <{node}>: error calling checksum: {exc}"
            ) from None
    if head in ("epoch", "arch"):
        if args:
            raise CacheKeyError(
                f'template: {_location(template, head_pos)}: executing "{TEMPLATE_NAME}" '
                f"at <{head}>: wrong number of args for {head}: want 0 got {len(args)}"
            )
        if head == "epoch":
            return str(values.epoch())
        return values.arch() if callable(values.arch) else values.arch
    raise CacheKeyError(f'template: {_line(template, head_pos)}: function "{head}" not defined')


def render_key(template: str, values: KeyValues, checksum_fn: ChecksumFn) -> str:
    """Render a CircleCI cache-key template.

    Raises :class:`CacheKeyError` with Go's message (``template: cacheKey:1:5: …``)
    for unknown functions or fields, bad arguments, or an unreadable checksum file.
    """
    if "{{" not in template:
        return template
    out: list[str] = []
    last = 0
    trim_next = False
    for match in _ACTION.finditer(template):
        text = template[last : match.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if match.group("ltrim"):
            text = text.rstrip(" \t\r\n")
        out.append(text)
        body_pos = match.start("body")
        body = match.group("body")
        if body.lstrip().startswith("/*"):  # a Go comment renders as nothing
            rendered = ""
        else:
            rendered = _action(body, body_pos, template, values, checksum_fn)
        out.append(rendered)
        trim_next = bool(match.group("rtrim"))
        last = match.end()
    tail = template[last:]
    if "{{" in tail:
        raise CacheKeyError(
            f"template: {_line(template, last + tail.index('{{'))}: unclosed action"
        )
    out.append(tail.lstrip(" \t\r\n") if trim_next else tail)
    return "".join(out)


# ------------------------------------------------------------ bound to a job


def goarch(machine: str) -> str:
    """``uname -m`` → Go's GOARCH name (what CircleCI's ``arch`` prints)."""
    return _UNAME_TO_GOARCH.get(machine.strip(), machine.strip())


def arch_string(system: str, machine: str, cpuinfo: str) -> str:
    """CircleCI's ``{{ arch }}``: ``arch1-<os>-<goarch>-<cpu family>_<model>``.

    Family and model come from ``/proc/cpuinfo`` (x86); other CPUs have no such
    fields and render as ``0_0``.
    """
    family = model = "0"
    for raw in cpuinfo.splitlines():
        name, _, value = raw.partition(":")
        name = name.strip()
        if name == "cpu family" and family == "0":
            family = value.strip() or "0"
        elif name == "model" and model == "0" and value.strip().isdigit():
            model = value.strip()
    return f"arch1-{system.strip().lower() or 'linux'}-{goarch(machine)}-{family}_{model}"


_ARCH_SCRIPT = (
    "uname -s; uname -m; "
    "grep -m 2 -E '^(cpu family|model)[[:space:]]*:' /proc/cpuinfo 2>/dev/null; true"
)


def job_arch(ctx: StepContext) -> str:
    """``{{ arch }}`` of the job's environment (asked once per job, then remembered)."""
    cached = ctx.extra.get("cachekey.arch")
    if isinstance(cached, str):
        return cached
    chunks: list[bytes] = []
    ctx.environment.exec(
        ["sh", "-c", _ARCH_SCRIPT], env=ctx.environ, cwd=None, on_output=chunks.append
    )
    lines = b"".join(chunks).decode("utf-8", "replace").splitlines()
    system = lines[0] if lines else "linux"
    machine = lines[1] if len(lines) > 1 else "x86_64"
    value = arch_string(system, machine, "\n".join(lines[2:]))
    ctx.extra["cachekey.arch"] = value
    return value


def job_checksum_fn(ctx: StepContext) -> ChecksumFn:
    """A checksum function reading files inside the job environment.

    Relative paths are relative to the working directory and ``~`` is the job's
    home. The file is copied out to the job's private staging directory and
    hashed there: that works for every image (no ``sha256sum`` needed inside).
    """

    def checksum(path: str) -> bytes:
        inside = ctx.environment.expand(path)
        scratch = ctx.staging / "checksum"
        scratch.mkdir(parents=True, exist_ok=True)
        dest = scratch / f"{len(list(scratch.iterdir()))}-{Path(inside).name or 'root'}"
        if not ctx.environment.copy_out(inside, dest):
            raise ChecksumError(f"open {inside}: no such file or directory")
        if dest.is_dir():
            raise ChecksumError(f"read {inside}: is a directory")
        digest = hashlib.sha256()
        with dest.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        dest.unlink()
        return digest.digest()

    return checksum


def job_values(ctx: StepContext) -> KeyValues:
    """The template data of the running job."""
    return KeyValues(
        branch=ctx.branch,
        revision=ctx.revision,
        build_num=ctx.build_num,
        environment=ctx.environ,
        arch=lambda: job_arch(ctx),
    )


def render_for_job(template: str, ctx: StepContext) -> str:
    """Render ``template`` for the job of ``ctx`` (see :func:`render_key`)."""
    return render_key(template, job_values(ctx), job_checksum_fn(ctx))
