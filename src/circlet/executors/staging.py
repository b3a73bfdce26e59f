"""Staging directories: host directories a docker job sees at the same absolute path.

The engine stages caches, workspaces and checkouts in a host directory. When
that directory is bind-mounted into the primary container at its own path, a
transfer between it and the job is one ``cp -a`` inside the container — a
local copy — instead of a tar stream through the engine's archive API.

The copies run as root inside the container: the mount may sit below a
directory the job's user cannot traverse (``/root`` is 0700), and root can
read every file of the job and of the host side. Copied-in files are then
given to the job's user inside, as the tar path's headers did; the host
files are left as they are, so they may be hard links to shared copies
(a materialized cache) and the host side need not be root.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

STAGING = "staging"
MARKER = ".circlet-staging"

# $1 source (host path, through the mount), $2 destination, $3 uid:gid of
# the job's user, $4 "dir" or "file". Missing parents are collected first so
# that only they are given to the user. Root's ``cp -a`` keeps the host
# owners; then exactly the copied paths (listed from the source, so files
# already at the destination keep theirs) are given to the user. chown drops
# a file's set-id bits; they are put back. The host files are never changed.
COPY_IN_SCRIPT = r"""src=$1 dest=$2 owner=$3 kind=$4
shift 4
if [ "$kind" = dir ]; then top=$dest; else top=${dest%/*}; fi
[ -n "$top" ] || top=/
d=$top
while [ ! -e "$d" ] && [ ! -L "$d" ]; do
  set -- "$@" "$d"
  d=${d%/*}
  [ -n "$d" ] || d=/
done
mkdir -p "$top" || exit 1
[ $# -eq 0 ] || chown "$owner" "$@" || exit 1
if [ "$kind" = file ]; then
  cp -a "$src" "$dest" && chown -h "$owner" "$dest" || exit 1
  [ -L "$src" ] || [ ! -f "$src" ] || {
    [ ! -u "$src" ] || chmod u+s "$dest"
    [ ! -g "$src" ] || chmod g+s "$dest"
  }
  exit
fi
cp -a "$src/." "$dest/" || exit 1
(cd "$src" && find . -print0) | (cd "$dest" && xargs -0 chown -h "$owner") || exit 1
(cd "$src" && find . -type f -perm -4000 -print0) | (cd "$dest" && xargs -0 -r chmod u+s)
(cd "$src" && find . -type f -perm -2000 -print0) | (cd "$dest" && xargs -0 -r chmod g+s)
"""

# $1 source inside, $2 destination (host path, through the mount), $3 uid:gid
# to give the copy to ("" when the host side is root and can read anything).
# Exit 3: the source does not exist.
COPY_OUT_SCRIPT = r"""src=$1 dest=$2 owner=$3
[ -e "$src" ] || [ -L "$src" ] || exit 3
if [ -d "$src" ]; then
  mkdir -p "$dest" && cp -a "$src/." "$dest/" || exit 1
else
  parent=${dest%/*}
  mkdir -p "${parent:-/}" && cp -a "$src" "$dest" || exit 1
fi
[ -z "$owner" ] || exec chown -R "$owner" "$dest"
"""

MISSING = 3  # COPY_OUT_SCRIPT's exit code for a missing source


def host_path(path: Path) -> Path:
    """``path`` absolute with its parent's symlinks resolved (``path`` itself is not followed)."""
    absolute = Path(os.path.abspath(path))
    return Path(os.path.realpath(absolute.parent)) / absolute.name


def is_under(path: Path, root: Path) -> bool:
    """True when ``path`` (see :func:`host_path`) is ``root`` or inside it."""
    return path == root or root in path.parents


def overlaps(a: str, b: str) -> bool:
    """True when one of two absolute POSIX paths contains the other."""
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def prepare(base: Path, name: str, avoid: Sequence[str]) -> Path | None:
    """The job's staging directory, created empty and private (0700); None if impossible.

    Normally ``<base>/<name>/staging``. When that would lie inside a directory
    a job may copy whole (``avoid``: its home and working directory — a cache
    of ``~/.local`` must not contain the staging area it is copied into), a
    fresh directory in the system's temp dir instead. :func:`remove` deletes
    the directory and its parent.
    """
    try:
        job_dir = Path(os.path.realpath(base)) / name
        if any(overlaps(str(job_dir), other) for other in avoid):
            tmp = os.path.realpath(tempfile.gettempdir())
            if any(overlaps(os.path.join(tmp, f"circlet-{name}"), other) for other in avoid):
                return None
            job_dir = Path(tempfile.mkdtemp(prefix=f"circlet-{name}-", dir=tmp))
        else:
            shutil.rmtree(job_dir, ignore_errors=True)  # a leftover of an interrupted run
            job_dir.mkdir(parents=True, exist_ok=True)
        path = job_dir / STAGING
        path.mkdir(mode=0o700)
        path.chmod(0o700)  # whatever the umask: cache contents may be private
    except OSError:
        return None
    return path


def remove(path: Path) -> None:
    """Delete a staging directory made by :func:`prepare` and its job directory; never raises."""
    shutil.rmtree(path.parent, ignore_errors=True)


def remove_leftovers(base: Path, name_prefix: str) -> None:
    """Delete the staging job directories whose names start with ``name_prefix``."""
    tmp = Path(tempfile.gettempdir())
    for parent, prefix in ((base, name_prefix), (tmp, f"circlet-{name_prefix}")):
        with contextlib.suppress(OSError):
            for child in parent.iterdir():
                if child.name.startswith(prefix) and (child / STAGING).is_dir():
                    shutil.rmtree(child, ignore_errors=True)
