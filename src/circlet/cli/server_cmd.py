"""``circlet server``: the dashboard, the CircleCI-compatible API, webhooks and
an in-process runner pool, on one port.

``--create-admin USER`` creates a server admin (password from
``$CIRCLET_ADMIN_PASSWORD`` or a prompt) and exits. On a fresh server,
``$CIRCLET_ADMIN_USER`` + ``$CIRCLET_ADMIN_PASSWORD`` create the first admin
at startup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

EXIT_USAGE = 2


def _settings(opts: dict[str, Any]) -> Any:
    from circlet.server.settings import from_environment

    return from_environment(
        home=Path(opts["home"]) if opts.get("home") else None,
        database_url=opts.get("database_url") or None,
        executor=opts.get("executor"),
        workers=opts.get("workers"),
        base_url=opts.get("base_url"),
    )


def _accounts(settings: Any) -> Any:
    from circlet.store.accounts import AccountStore, SecretBox
    from circlet.store.records import RecordStore

    records = RecordStore(settings.url)
    return records, AccountStore(records.engine, SecretBox(settings.key_file))


def create_admin(settings: Any, login: str, password: str) -> str:
    """Create a server admin; returns a one-line message (raises ValueError/DuplicateError)."""
    records, accounts = _accounts(settings)
    try:
        accounts.create_user(login, password, is_admin=True)
    finally:
        records.close()
    return f"created server admin {login!r}"


def first_admin_from_env(settings: Any) -> str | None:
    """``$CIRCLET_ADMIN_USER``/``$CIRCLET_ADMIN_PASSWORD`` on a server with no users."""
    login = os.environ.get("CIRCLET_ADMIN_USER")
    password = os.environ.get("CIRCLET_ADMIN_PASSWORD")
    if not login or not password:
        return None
    records, accounts = _accounts(settings)
    try:
        if accounts.count_users():
            return None
        accounts.create_user(login, password, is_admin=True)
    finally:
        records.close()
    return f"created server admin {login!r} from CIRCLET_ADMIN_USER"


@click.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--database-url", help="SQLAlchemy URL of the records (default: SQLite in the home).")
@click.option(
    "--home", type=click.Path(file_okay=False), help="Data directory (default: $CIRCLET_HOME)."
)
@click.option("--executor", type=click.Choice(["docker", "host"]), help="Where docker jobs run.")
@click.option("--workers", type=int, help="Pipelines run at once (default 2).")
@click.option("--base-url", help="Public URL of this server (for links in builds).")
@click.option("--create-admin", metavar="USER", help="Create a server admin and exit.")
def command(**opts: Any) -> None:
    """Serve the circlet dashboard and API, and run pipelines."""
    from circlet.store.accounts import DuplicateError

    settings = _settings(opts)
    if opts["create_admin"]:
        password = os.environ.get("CIRCLET_ADMIN_PASSWORD") or click.prompt(
            "Password", hide_input=True, confirmation_prompt=True
        )
        try:
            click.echo(create_admin(settings, opts["create_admin"], password))
        except (DuplicateError, ValueError) as exc:
            click.echo(f"circlet server: {exc}", err=True)
            raise SystemExit(EXIT_USAGE) from None
        return
    import uvicorn

    from circlet.server.app import create_app

    note = first_admin_from_env(settings)
    if note:
        click.echo(note)
    click.echo(f"circlet server on http://{opts['host']}:{opts['port']} (data in {settings.home})")
    try:
        uvicorn.run(
            create_app(settings),
            host=opts["host"],
            port=opts["port"],
            log_level="info",
            timeout_graceful_shutdown=3,
        )
    except OSError as exc:
        click.echo(
            f"circlet server: cannot listen on {opts['host']}:{opts['port']}: {exc}", err=True
        )
        raise SystemExit(EXIT_USAGE) from None
