"""``digest migrate`` and ``digest store copy``: the real commands on a store made the
real way (collected, imported, sent, signed up, bounced, scheduled), copied from SQLite
into PostgreSQL and compared table by table."""

from __future__ import annotations

import asyncio
import mailbox
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, create_engine, select

from digest.store import Store
from digest.store import schema as t
from digest.store.copy import head_revision
from tests.cli.test_cli import _env, _import_demo_lists, _serving, _sign_up, digest
from tests.cli.test_cli import site as site  # the fixture
from tests.conftest import POSTGRES_URL, postgres_schema_url
from tests.smtp_server import RecordingServer
from tests.store.test_migrations import _upgrade

NL = "wochenueberblick"
JOBS = "apscheduler_jobs"


async def test_migrate_says_from_where_to_where(site: Path) -> None:
    head = head_revision()
    _upgrade(f"sqlite:///{site / 'digest.db'}", "0008")
    code, out, err = await digest("migrate", cwd=site)
    assert (code, err, out) == (0, "", f"store migrated from 0008 to {head}\n")
    code, out, err = await digest("migrate", cwd=site)
    assert (code, err, out) == (0, "", f"store at {head}, nothing to do\n")
    code, out, err = await digest("migrate", cwd=site, DIGEST_STORE_URL="sqlite:///new.db")
    assert (code, err, out) == (0, "", f"store created at {head}\n")


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """The URL of a new, empty schema in the test PostgreSQL."""
    if not POSTGRES_URL:
        pytest.skip("DIGEST_TEST_POSTGRES_URL is not set")
    with postgres_schema_url() as url:
        yield url


async def _populate(site: Path) -> None:
    """Everything the store keeps, made by the commands and the web app."""
    config = site / "config.toml"
    config.write_text(
        config.read_text()
        + '\n[bounces]\ndomain = "bounces.kommune-digital.example"\nmaildir = "rueck"\n'
    )
    mailbox.Maildir(site / "rueck", create=True).close()
    await _import_demo_lists(site)
    async with RecordingServer() as server:
        code, _, err = await digest(
            "send", NL, "--week", "2025-W05", cwd=site, DIGEST_SMTP_PORT=str(server.port)
        )
        assert code == 0, err
        async with _serving(site, DIGEST_SMTP_PORT=str(server.port)) as client:
            assert (await _sign_up(client, "neu@example.org")).status_code == 200
    await _bounce(site, *server.messages[0][:2])
    await _schedule(site)


async def _bounce(site: Path, mail_from: str, recipients: list[str]) -> None:
    from tests.mailboxes.test_bounces import FIXTURES

    text_ = (FIXTURES / "postfix-hard-5.1.1.eml").read_text(encoding="utf-8")
    text_ = text_.replace("{{RETURN_PATH}}", mail_from).replace("{{RECIPIENT}}", recipients[0])
    box = mailbox.Maildir(site / "rueck", create=False)
    box.add(text_.replace("{{ORIGINAL_HEADERS}}", "Subject: x").encode())
    box.close()
    code, out, err = await digest("bounces", "process", cwd=site)
    assert (code, err) == (0, ""), err
    assert "1 addresses suppressed" in out


async def _schedule(site: Path) -> None:
    """`digest run` until it has stored its job, then stopped as a service manager does."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "run", cwd=site, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    seen = b""
    async with asyncio.timeout(30):
        while b"next run" not in seen:
            line = await process.stderr.readline()
            assert line, seen.decode()
            seen += line
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0


def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in key order; datetimes come back aware, in UTC."""
    engine = create_engine(url)
    try:
        jobs = Table(JOBS, MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            return {
                table.name: [
                    tuple(row)
                    for row in conn.execute(select(table).order_by(*table.primary_key.columns))
                ]
                for table in [*t.metadata.sorted_tables, jobs]
            }
    finally:
        engine.dispose()


async def test_store_copy_moves_every_row_into_postgresql(site: Path, postgres_schema: str) -> None:
    await _populate(site)
    source = _rows(f"sqlite:///{site / 'digest.db'}")
    for table in ("deliveries", "signups", "mail_queue", "suppressions", "consents", JOBS):
        assert source[table], f"the populated store has no {table}"

    code, out, err = await digest("store", "copy", "--to", postgres_schema, cwd=site)
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert f"subscribers: {len(source['subscribers'])} rows" in lines
    assert f"{JOBS}: 1 rows" in lines
    tables = len(t.metadata.sorted_tables) + 1  # the scheduler's job table too
    assert lines[-1].startswith(
        f"copied {sum(map(len, source.values()))} rows in {tables} tables to "
    )
    assert _rows(postgres_schema) == source

    # The sequences follow the copied ids: a new subscriber in the target gets a new id,
    # and the target opens with the configuration's secret_key (its check value came along).
    (site / "one.csv").write_text("email,name\nnach.umzug@example.org,Nach Umzug\n")
    code, _, err = await digest(
        "subscribers", "import", "one.csv", "--list", "allgemein", "--consent", "Demo",
        cwd=site, DIGEST_STORE_URL=postgres_schema,
    )  # fmt: skip
    assert code == 0, err
    store = Store.open(postgres_schema, migrate=False)
    try:
        ids = {s.email: s.id for s, _ in store.subscriber_rows()}
    finally:
        store.close()
    assert ids["nach.umzug@example.org"] == max(row[0] for row in source["subscribers"]) + 1

    # A target that holds rows is refused, naming the table; it is left as it was.
    code, out, err = await digest("store", "copy", "--to", postgres_schema, cwd=site)
    assert (code, out) == (2, "")
    assert re.fullmatch(
        r"error: the target store \S+ is not empty: table \w+ has rows; "
        r"copy into a new, empty database\n",
        err,
    ), err
    assert len(_rows(postgres_schema)["subscribers"]) == len(source["subscribers"]) + 1
