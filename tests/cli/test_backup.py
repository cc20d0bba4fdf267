"""``digest backup``, the modes of the files holding personal data, ``digest --version``:
the real command in a process of its own, next to a running ``digest serve``."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.audience.tokens import UNSUBSCRIBE, make_token
from digest.config import load_settings
from digest.store import Store
from tests.cli.test_cli import _serving, digest
from tests.cli.test_cli import site as site  # the fixture

NL = "wochenueberblick"


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    """The umask of most systems (022), under which a file is created 0644 unless the
    code asks for less; the commands started here inherit it."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _subscriber_id(site: Path, email: str) -> int:
    code, _, err = await digest(
        "subscribers", "import", "subscribers/allgemein.csv", "--list", "allgemein",
        "--consent", "Demo", cwd=site,
    )  # fmt: skip
    assert code == 0, err
    store = Store.open(f"sqlite:///{site / 'digest.db'}", migrate=False)
    try:
        rows = store.subscriber_rows()
    finally:
        store.close()
    [sid] = [s.id for s, _ in rows if s.email == email]
    assert sid is not None
    return sid


async def test_backup_holds_an_unsubscribe_made_through_the_running_web_app(site: Path) -> None:
    sid = await _subscriber_id(site, "anna.schulze@example.com")
    secret_key = load_settings(site / "config.toml", environ={}).secret_key
    token = make_token(secret_key, UNSUBSCRIBE, sid, NL)
    async with _serving(site) as client:
        done = await client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200
        # What a plain copy of the file would hold: the unsubscribe is still in the WAL
        # while `digest serve` keeps the store open.
        shutil.copy(site / "digest.db", site / "cp.db")
        code, out, err = await digest("backup", "backups/digest.db", cwd=site)
    assert (code, err) == (0, "")
    copy = site / "backups" / "digest.db"
    assert out == f"backup written to backups/digest.db ({copy.stat().st_size / 1024:.1f} KiB)\n"
    assert _mode(copy) == 0o600
    assert not copy.with_name("digest.db-wal").exists()  # one self-contained file
    plain = Store.open(f"sqlite:///{site / 'cp.db'}", migrate=False)
    try:
        assert not plain.unsubscribed(sid, NL)  # the scenario a backup must survive
    finally:
        plain.close()
    # The copy opens as a store (the suppression key checked) and holds the unsubscribe.
    store = Store.open(f"sqlite:///{copy}", secret_key=secret_key)
    try:
        assert store.unsubscribed(sid, NL)
    finally:
        store.close()
    code, out, err = await digest(
        "subscribers", "list", cwd=site, DIGEST_STORE_URL=f"sqlite:///{copy}"
    )
    assert code == 0, err
    assert "anna.schulze@example.com" in out


async def test_backup_refuses_an_existing_file_unless_forced(site: Path) -> None:
    await _subscriber_id(site, "anna.schulze@example.com")
    (site / "old.db").write_text("the backup of yesterday")
    code, out, err = await digest("backup", "old.db", cwd=site)
    assert (code, out) == (2, "")
    assert err == "error: old.db exists already; use --force to overwrite it\n"
    assert (site / "old.db").read_text() == "the backup of yesterday"
    code, out, err = await digest("backup", "old.db", "--force", cwd=site)
    assert (code, err) == (0, ""), err
    assert out.startswith("backup written to old.db (")
    store = Store.open(f"sqlite:///{site / 'old.db'}", migrate=False)
    try:
        assert len(store.subscriber_rows()) > 0
    finally:
        store.close()
    assert sorted(p.name for p in site.glob(".old.db*")) == []  # no partial copy left
    code, _, err = await digest("backup", "digest.db", "--force", cwd=site)
    assert code == 2 and err == "error: digest.db is the store itself; name another file\n"
    code, _, err = await digest("backup", "x.db", cwd=site, DIGEST_STORE_URL="sqlite:///none.db")
    assert code == 1 and err == f"error: there is no store at {site / 'none.db'} to back up\n"
    assert not (site / "none.db").exists() and not (site / "x.db").exists()


async def test_backup_of_a_postgresql_store_shows_the_pg_dump_command(site: Path) -> None:
    url = "postgresql+psycopg://digest:Geheim%2F42@db.kommune.example:5432/digest"
    code, out, err = await digest("backup", "digest.dump", cwd=site, DIGEST_STORE_URL=url)
    assert (code, out) == (2, "")
    assert err == (
        "error: digest backup copies SQLite stores only; back up this one with pg_dump: "
        "pg_dump --format=custom --file=digest.dump "
        "'postgresql://digest:***@db.kommune.example:5432/digest'\n"
    )
    assert not (site / "digest.dump").exists()


async def test_store_outbox_and_keys_are_readable_by_the_owner_only(site: Path) -> None:
    code, _, err = await digest("demo", cwd=site)
    assert code == 0, err
    assert _mode(site / "digest.db") == 0o600
    assert _mode(site / "outbox") == 0o700
    emls = list((site / "outbox").glob("*.eml"))
    assert emls and {_mode(path) for path in emls} == {0o600}
    code, _, err = await digest(
        "dkim", "keygen", "--selector", "s1", "--domain", "kommune.example",
        "--key-file", "keys/s1.key", cwd=site,
    )  # fmt: skip
    assert code == 0, err
    assert _mode(site / "keys") == 0o700
    assert _mode(site / "keys" / "s1.key") == _mode(site / "keys" / "s1.key.pub") == 0o600


async def test_version() -> None:
    code, out, err = await digest("--version", cwd=Path.cwd())
    assert (code, err) == (0, "")
    assert out == f"digest {importlib.metadata.version('digest')}\n"
