"""A job copy's host staging directory, and where ``circleci-agent step halt`` leaves its flag.

The data steps (caches, workspaces, checkout, checksums) stage files in one
host directory per job copy. When the started environment has a shared
staging directory (``Environment.staging_dir``: a host directory it sees at
the same path), the job's directory is made inside it, so copies between it
and the job are local ``cp -a`` runs instead of tar streams. Otherwise it is
made under the run's ``staging_root`` (created if missing), or the system's
temp directory.

The halt flag: the agent creates the file named by ``$CIRCLET_HALT_FILE``,
and the JobRunner looks for it after every ``run`` step. When the job's user
can write into the shared directory (the *Preparing environment variables*
exec tries to create :attr:`JobStaging.probe`), the flag lives there and the
look is a ``stat`` on the host. Otherwise (a container user that cannot enter
the private staging directory, or no shared directory) it stays in the
job's task-data directory and is looked for with one ``copy_out`` to a host
path outside the shared directory (an archive call, not an exec).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from circlet.executors.base import Environment, ExecutorError

PROBE = ".halt-probe"
HALT = "halt"


class JobStaging:
    """The staging directory of one job copy; made after the environment started."""

    def __init__(self, env: Environment, *, root: Path | None, halt_inside: str) -> None:
        """Make the directory (OSError if impossible); ``halt_inside`` is the default flag path."""
        self._env = env
        shared = env.staging_dir
        if shared is None and root is not None:
            root.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="circlet-job-", dir=shared or root))
        self.shared = shared is not None
        self._halt_inside = halt_inside
        self.halt_file = halt_inside  # what $CIRCLET_HALT_FILE says
        self._outside: Path | None = None  # for copy_out of the flag when it stays inside

    @property
    def probe(self) -> str:
        """A path the job's first exec tries to create ("" without a shared directory)."""
        return str(self.path / PROBE) if self.shared else ""

    def settle_halt(self) -> str:
        """The halt flag's path for ``$CIRCLET_HALT_FILE``, once the probe was tried."""
        probe = self.path / PROBE
        if self.shared and probe.exists():
            probe.unlink()
            self.halt_file = str(self.path / HALT)
        return self.halt_file

    def halted(self) -> bool:
        """Whether the job asked to halt (``circleci-agent step halt``)."""
        if self.halt_file != self._halt_inside:
            return Path(self.halt_file).exists()
        if self._outside is None:
            # Into the shared directory a copy would be an exec; elsewhere it is
            # one archive call that fails fast while the flag does not exist.
            if self.shared:
                self._outside = Path(tempfile.mkdtemp(prefix="circlet-halt-"))
            else:
                self._outside = self.path
        try:
            return self._env.copy_out(self._halt_inside, self._outside / HALT)
        except ExecutorError:
            return False

    def remove(self) -> None:
        """Delete the directory (and the private one for the flag); never raises."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._outside is not None and self._outside != self.path:
            shutil.rmtree(self._outside, ignore_errors=True)
