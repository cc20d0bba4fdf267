"""`digest run` while the relay is down, and the send's words for what it could not do.

Real `digest` processes, a real SMTP server (aiosmtpd) on a port that is closed for a
while, a real SQLite store. A relay nobody can reach is the run's problem: no reader's
attempts or age change, and `digest run` keeps trying the relay with its own backoff.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.cli.test_cli import ROOT, _env, _import_demo_lists, digest
from tests.delivery import test_send_owners as owners
from tests.smtp_server import RecordingServer

WEEK = "2025-W05"
BUSY = {
    "m.oezdemir@example.net": "450 4.2.1 Mailbox busy, try later",
    "anna.schulze@example.com": "450 4.2.1 Mailbox busy, try later",
}


@pytest.fixture
def site(tmp_path: Path, store_url: str) -> Path:
    """A copy of the shipped config (its store at ``store_url``), demo feeds and lists."""
    config = (ROOT / "config.toml").read_text()
    assert 'url = "sqlite:///digest.db"' in config
    (tmp_path / "config.toml").write_text(
        config.replace('url = "sqlite:///digest.db"', f'url = "{store_url}"', 1)
    )
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "subscribers", tmp_path / "subscribers")
    return tmp_path


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rows(store_url: str) -> dict[str, tuple[str, int]]:
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("select email, state, attempts from deliveries")).all()
    finally:
        engine.dispose()
    return {email: (state, attempts) for email, state, attempts in found}


async def test_a_relay_down_for_several_retry_passes_ages_no_reader(
    site: Path, store_url: str
) -> None:
    # A retry pass every 3 s; a reader is given up after 3 attempts.
    with (site / "config.toml").open("a") as config:
        config.write("\n[retry]\ncheck_minutes = 0.05\nmax_attempts = 3\n")
    await _import_demo_lists(site)
    port = _closed_port()
    async with RecordingServer(temp_fail=BUSY) as server:
        code, out, err = await digest(
            "send", "wochenueberblick", "--week", WEEK, cwd=site,
            DIGEST_SMTP_PORT=str(server.port),
        )  # fmt: skip
        assert code == 75 and "12 sent" in out and "2 deferred" in out, out + err
    code, out, _ = await digest("deliveries", "retry", "wochenueberblick", "--week", WEEK, cwd=site)
    assert code == 0 and "2 deliveries re-queued" in out
    assert {r: _rows(store_url)[r] for r in BUSY} == {r: ("pending", 1) for r in BUSY}
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "run", cwd=site,
        env=_env(DIGEST_SMTP_PORT=str(port)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.sleep(14)  # retry passes at 3, 6, 9 and 12 s find no relay
        assert {r: _rows(store_url)[r] for r in BUSY} == {r: ("pending", 1) for r in BUSY}
        relay = RecordingServer(temp_fail=BUSY)
        relay.port = port  # the relay comes back where it was
        async with relay:
            async with asyncio.timeout(60):
                while len(relay.handler.rcpt_seen) < len(BUSY):
                    await asyncio.sleep(0.2)
            await asyncio.sleep(1)  # the outcome is recorded
    finally:
        run.send_signal(signal.SIGTERM)
        _, err_bytes = await asyncio.wait_for(run.communicate(), timeout=30)
    log = err_bytes.decode()
    assert run.returncode == 0, log
    # The relay answered once more about each reader: one more attempt, nobody given up.
    assert {r: _rows(store_url)[r] for r in BUSY} == {r: ("pending", 2) for r in BUSY}, log
    assert log.count("relay not reached") == 1, log
    assert log.count("relay reached again") == 1, log


async def _status(site: Path) -> str:
    code, out, err = await digest("status", cwd=site)
    assert code == 0, err
    return out


async def test_a_send_that_never_reached_the_relay_says_so_and_ages_nobody(
    site: Path, store_url: str
) -> None:
    await _import_demo_lists(site)
    port = _closed_port()
    code, out, err = await digest(
        "send", "wochenueberblick", "--week", WEEK, cwd=site, DIGEST_SMTP_PORT=str(port)
    )
    assert code == 1 and "error: sending stopped:" in err
    assert "0 sent" in out and "relay not reached" in out, out
    assert "14 readers still due" in out and "deferred" not in out, out
    # The status says it in the same words: due now, nobody deferred.
    status = await _status(site)
    assert "14 due now, 0 deferred" in status, status
    assert set(_rows(store_url).values()) == {("pending", 0)}
    # Once the relay is there, every reader is due at once.
    relay = RecordingServer()
    relay.port = port
    async with relay:
        code, out, err = await digest(
            "send", "wochenueberblick", "--week", WEEK, cwd=site, DIGEST_SMTP_PORT=str(port)
        )
        assert code == 0 and "14 sent" in out, out + err
        assert len(relay.messages) == 14


async def test_a_wrong_login_holds_nobody_back_once_it_is_fixed(site: Path, store_url: str) -> None:
    config = site / "config.toml"
    config.write_text(
        config.read_text()
        .replace('security = "none"', 'security = "starttls"')
        .replace('username = ""', 'username = "digest"')
        .replace("validate_certs = true", "validate_certs = false")
    )
    await _import_demo_lists(site)
    async with RecordingServer(tls="starttls", auth={"digest": "the-right-one"}) as server:
        code, out, err = await digest(
            "send", "wochenueberblick", "--week", WEEK, cwd=site,
            DIGEST_SMTP_PORT=str(server.port), DIGEST_SMTP_PASSWORD="a-wrong-one",
        )  # fmt: skip
        assert code == 1 and "535" in err, err
        assert "relay not reached" in out and "14 readers still due" in out, out
        assert "deferred" not in out, out
        assert "14 due now, 0 deferred" in await _status(site)
        assert set(_rows(store_url).values()) == {("pending", 0)}
        code, out, err = await digest(
            "send", "wochenueberblick", "--week", WEEK, cwd=site,
            DIGEST_SMTP_PORT=str(server.port), DIGEST_SMTP_PASSWORD="the-right-one",
        )  # fmt: skip
        assert code == 0 and "14 sent" in out, out + err


async def test_a_stopped_send_shows_the_states_as_they_are(tmp_path: Path, store_url: str) -> None:
    # 2,000 readers: two chunks of planning; only the read after them tells it was all.
    site = owners._site(tmp_path, "timeout = 30\nprocesses = 1\n")
    async with RecordingServer(delay=0.02) as server:
        env = owners._env(store_url, server)
        await owners._readers(site, env, 2000)
        send = await owners._send(site, env)
        await owners._until_received(server, 20, send)
        send.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(send.communicate(), timeout=60)
    summary = out.decode()
    assert send.returncode == 75, summary + err.decode()
    assert "stopped: interrupted" in summary
    # Said only when it is so: fewer rows in the ledger than readers.
    planned = sum(owners._states(site, env).values())
    assert ("not every recipient planned yet" in summary) == (planned < 2000), (planned, summary)
    code, status, _ = await digest("status", cwd=site, **{
        k: v for k, v in env.items() if k.startswith("DIGEST_")
    })  # fmt: skip
    state = "sending" if planned == 2000 else "sending, not every recipient planned yet"
    assert code == 0 and status.startswith(f"wochenueberblick 2025-W05 ({state}): "), status
