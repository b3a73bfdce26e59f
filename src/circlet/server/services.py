"""What every request handler reaches: the stores, the runner pool, the notifier.

One :class:`Services` per app, built by ``create_app`` and kept in
``app.state.services``; handlers get it with :func:`services`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.templating import Jinja2Templates

from circlet.engine import events as ev
from circlet.server import auth
from circlet.server.actions import Runs
from circlet.server.live import Notifier
from circlet.server.logs import LogIndex
from circlet.server.settings import ServerSettings
from circlet.store.accounts import AccountStore, ProjectSettings, Role, SecretBox
from circlet.store.api import BlobStore
from circlet.store.records import RecordStore

TEMPLATES_DIR = Path(__file__).parent / "templates"


@dataclass
class Services:
    settings: ServerSettings
    records: RecordStore
    accounts: AccountStore
    box: SecretBox  # the secrets key (shared with the fleet API, which seals for runners)
    blobs: BlobStore
    notifier: Notifier
    runs: Runs
    logs: LogIndex
    templates: Jinja2Templates

    @classmethod
    def open(cls, settings: ServerSettings) -> Services:
        """Open the stores and start the runner pool."""
        from circlet.store.blobs import LocalBlobStore

        settings.home.mkdir(parents=True, exist_ok=True)
        records = RecordStore(settings.url)
        box = SecretBox(settings.key_file)
        accounts = AccountStore(records.engine, box)
        blobs = LocalBlobStore(settings.blobs_dir)
        notifier = Notifier()
        sink = ev.fan_out(records.sink, notifier.sink)
        runs = Runs(settings, records, accounts, blobs, sink, sealer=box)
        return cls(
            settings=settings,
            records=records,
            accounts=accounts,
            box=box,
            blobs=blobs,
            notifier=notifier,
            runs=runs,
            logs=LogIndex(records.engine),
            templates=Jinja2Templates(directory=str(TEMPLATES_DIR)),
        )

    def close(self) -> None:
        """Stop the runner pool, then the records (flushing output)."""
        self.runs.close()
        close_blobs = getattr(self.blobs, "close", None)  # LocalBlobStore holds an index
        if callable(close_blobs):
            close_blobs()
        self.records.close()


def services(request: Request) -> Services:
    """The app's services (a FastAPI dependency)."""
    found: Services = request.app.state.services
    return found


def principal(request: Request) -> auth.Principal:
    """Who is asking (a FastAPI dependency)."""
    return auth.resolve(request, services(request).accounts)


def project_for(
    request: Request, slug: str, needed: Role, *, missing: str = "Project not found"
) -> ProjectSettings:
    """The project if the principal has ``needed`` on it; 404 when they may not
    even see it (nothing leaks), 401/403 when they may see but not act."""
    svc = services(request)
    who = principal(request)
    project = svc.accounts.project(slug)
    if project is None or who.role(slug) is None:
        raise HTTPException(404, missing)
    if not who.can(slug, needed):
        if who.user is None:
            raise HTTPException(401, "You must log in first.")
        raise HTTPException(403, "Permission denied.")
    return project


def can_see(request: Request, slug: str) -> bool:
    """Whether the principal may read ``slug``'s records (admins: any recorded project)."""
    who = principal(request)
    return who.is_admin or who.role(slug) is not None
