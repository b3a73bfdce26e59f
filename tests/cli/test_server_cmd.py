"""`circlet server --create-admin`: the first admin, and a clear error for a duplicate."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from circlet.cli import server_cmd
from circlet.store.accounts import AccountStore, SecretBox
from circlet.store.records import RecordStore


def test_create_admin_then_duplicate(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"CIRCLET_ADMIN_PASSWORD": "first-admin-pw", "CIRCLET_DATABASE_URL": ""}
    args = ["--home", str(tmp_path), "--create-admin", "root"]
    first = runner.invoke(server_cmd.command, args, env=env)
    assert first.exit_code == 0, first.output
    assert "created server admin 'root'" in first.output
    again = runner.invoke(server_cmd.command, args, env=env)
    assert again.exit_code == 2
    assert again.output.strip() == "circlet server: user 'root' already exists"
    with RecordStore(f"sqlite:///{tmp_path / 'circlet.db'}") as records:
        accounts = AccountStore(records.engine, SecretBox(tmp_path / "server-secrets.key"))
        user = accounts.authenticate("root", "first-admin-pw")
        assert user is not None
        assert user.is_admin
