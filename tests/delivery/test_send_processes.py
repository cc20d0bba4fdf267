"""One issue sent by several processes that share nothing but the ledger.

Against a real aiosmtpd server and a real store (SQLite file; PostgreSQL when
configured), with real helper processes: every reader gets the issue once, the
connections and limits of ``[smtp]`` hold for all processes together, and a stop in
one process stops them all with every row recorded or given back.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from digest.config import RelaySettings, Settings, SmtpSettings, StoreSettings, load_settings
from digest.core.models import DeliveryState, Subscriber
from digest.delivery.capture import LocalSmtpServer
from digest.delivery.senders import sender_processes, share_of
from digest.ops import jobs
from digest.store import Store
from tests.delivery.test_send import NOW, WEEK, World
from tests.smtp_server import RecordingServer

ROOT = Path(__file__).resolve().parents[2]
#: Enough readers for two processes (a send of fewer stays in one, see SPREAD_AFTER).
READERS = 2100


@pytest.fixture
async def world(demo_settings: Settings, store_url: str) -> AsyncIterator[World]:
    settings = replace(demo_settings, store=StoreSettings(store_url))
    store = jobs.open_store(settings)
    store.save_subscribers(
        [Subscriber(f"leser{n}@example.org", f"Leser {n}") for n in range(READERS)],
        ["allgemein"],
    )
    [collected] = await jobs.collect(settings, store, settings.newsletters[0].id, now=NOW)
    assert not collected.failed
    yield World(settings, store, settings.newsletters[0])
    store.close()


def _received(server: RecordingServer) -> Counter[str]:
    return Counter(rcpt for _, rcpts, _ in server.messages for rcpt in rcpts)


async def test_two_processes_send_each_reader_exactly_once(world: World, smtp_server) -> None:
    report = await world.send(smtp_server, processes=2, pool_size=2)
    received = _received(smtp_server)
    assert set(received.values()) == {1}
    assert len(received) == READERS == report.sent == report.recipients
    assert world.counts() == {DeliveryState.SENT: READERS}
    # Both processes sent a good part of the issue (rows change hands 500 at a time).
    assert len(report.sent_by) == 2 and min(report.sent_by) >= 250, report.sent_by
    assert sum(report.sent_by) == READERS
    assert "2 sender processes" in report.summary()
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None and record.status == "sent"
    # Running it again sends nothing.
    again = await world.send(smtp_server, processes=2, pool_size=2)
    assert again.sent == 0 and again.already_sent == READERS
    assert len(smtp_server.messages) == READERS


@pytest.mark.smtp_server(delay=0.002)
async def test_the_per_domain_limit_holds_for_all_processes_together(
    world: World, smtp_server
) -> None:
    report = await world.send(smtp_server, processes=2, pool_size=4, per_domain_limit=2)
    assert len(report.sent_by) == 2 and report.sent == READERS
    assert smtp_server.handler.peak_in_data["example.org"] == 2


async def test_a_small_issue_stays_in_one_process(demo_settings: Settings, store_url: str,
                                                  smtp_server) -> None:  # fmt: skip
    settings = replace(demo_settings, store=StoreSettings(store_url))
    store = jobs.open_store(settings)
    try:
        from digest.ops.demo import import_demo_lists

        import_demo_lists(settings, store, settings.newsletters[0])
        await jobs.collect(settings, store, settings.newsletters[0].id, now=NOW)
        report = await World(settings, store, settings.newsletters[0]).send(
            smtp_server, processes=2
        )
    finally:
        store.close()
    assert report.sent == 14 and report.sent_by == []


@pytest.mark.smtp_server(disconnect_after=1200)
async def test_a_server_gone_in_one_process_stops_all_and_nothing_is_left_in_flight(
    world: World, smtp_server
) -> None:
    report = await world.send(smtp_server, processes=2, pool_size=2)
    assert report.stopped and "lost the connection" in report.stopped
    assert len(report.sent_by) == 2 and min(report.sent_by) > 0, report.sent_by
    counts = world.counts()
    assert DeliveryState.SENDING not in counts  # recorded, or given back as they were
    assert counts[DeliveryState.SENT] == report.sent == len(smtp_server.messages) < READERS
    # Every planned row not sent is pending and due (planning goes as sending goes, so
    # the stop may have come before the last readers were planned).
    assert counts[DeliveryState.PENDING] == sum(counts.values()) - report.sent
    assert not report.finished
    # The next run sends the rest, nobody twice; the row that was in DATA when the
    # connection dropped waits for its retry.
    await world.send(smtp_server, processes=2, pool_size=2)
    received = _received(smtp_server)
    assert set(received.values()) == {1}
    assert world.counts() == {DeliveryState.SENT: READERS - 1, DeliveryState.PENDING: 1}
    assert len(received) == READERS - 1


# --- dividing the limits ---------------------------------------------------------------


def _smtp(**changes: object) -> SmtpSettings:
    base = SmtpSettings(
        host="127.0.0.1",
        port=25,
        security="none",
        username="",
        password="",
        timeout=30,
        pool_size=5,
        messages_per_connection=100,
        validate_certs=True,
    )
    return replace(base, **changes)


def test_processes_are_bounded_by_connections_the_per_domain_limit_and_the_rates() -> None:
    assert sender_processes(_smtp(pool_size=5), 8) == 5
    assert sender_processes(_smtp(pool_size=5, per_domain_limit=2), 8) == 2
    assert sender_processes(_smtp(pool_size=1), 0) == 1
    assert sender_processes(_smtp(pool_size=64), 0) == len(os.sched_getaffinity(0))
    relays = (RelaySettings("a", 25, 1, 1), RelaySettings("b", 25, 1, 2))
    assert sender_processes(_smtp(relays=relays), 8) == 3
    # Each process's share of a rate must allow a message a period (aiolimiter refuses
    # to take one from a bucket smaller than that).
    assert sender_processes(_smtp(pool_size=8, max_per_second=2.5), 8) == 2
    assert sender_processes(_smtp(pool_size=8, max_per_hour=3), 8) == 3


def test_shares_add_up_to_the_settings() -> None:
    smtp = _smtp(pool_size=5, max_per_second=90, max_per_hour=3600, per_domain_limit=3)
    shares = [share_of(smtp, i, 3) for i in range(3)]
    assert sum(s.pool_size for s in shares) == 5
    assert sum(s.per_domain_limit for s in shares) == 3
    assert all(s.per_domain_limit >= 1 for s in shares)
    assert sum(s.max_per_second for s in shares) == pytest.approx(90)
    assert sum(s.max_per_hour for s in shares) == pytest.approx(3600)
    assert all(s.processes == 1 for s in shares)
    assert share_of(smtp, 0, 1) is smtp
    # Relays: each relay's connections are divided, remainders to different processes.
    relays = (RelaySettings("a", 25, 1, 1), RelaySettings("b", 25, 2, 3))
    shares = [share_of(_smtp(relays=relays), i, 2) for i in range(2)]
    by_relay: Counter[str] = Counter()
    for share in shares:
        assert share.relays  # every process has at least one relay
        for relay in share.relays:
            by_relay[relay.host] += relay.pool_size
    assert by_relay == {"a": 1, "b": 3}


# --- the command, its signals and its helpers ------------------------------------------


class _Counting:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def handle_DATA(self, server: object, session: object, envelope) -> str:  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.001)
        self.received.extend(envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued"


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found |= {int(p) for p in text.split()}
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


Site = tuple[Path, dict[str, str], Store, _Counting]


@pytest.fixture
async def site(tmp_path: Path, store_url: str) -> AsyncIterator[Site]:
    site = tmp_path / "site"
    site.mkdir()
    config = (ROOT / "config.toml").read_text()
    (site / "config.toml").write_text(config.replace("[smtp]\n", "[smtp]\nprocesses = 2\n", 1))
    shutil.copytree(ROOT / "examples", site / "examples")
    handler = _Counting()
    async with LocalSmtpServer(handler) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env |= {
            "DIGEST_STORE_URL": store_url,
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(server.port),
        }
        settings = load_settings(site / "config.toml", environ=env)
        assert settings.smtp.processes == 2
        store = jobs.open_store(settings)
        store.save_subscribers(
            [Subscriber(f"leser{n}@example.org", f"Leser {n}") for n in range(READERS)],
            ["allgemein"],
        )
        await jobs.collect(settings, store, settings.newsletters[0].id, now=NOW)
        try:
            yield site, env, store, handler
        finally:
            store.close()


async def _send(site: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "send", "wochenueberblick", "--week", WEEK,
        cwd=site, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _helpers_of(process: asyncio.subprocess.Process, handler: _Counting) -> set[int]:
    """The helpers of a running send, once messages flow and they have started."""
    async with asyncio.timeout(60):
        while True:
            assert process.returncode is None, "the send ended before its helpers were seen"
            # The multiprocessing resource tracker is a child too; helpers are the rest.
            helpers = {
                pid
                for pid in _children(process.pid)
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
                and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
            }
            if helpers and len(handler.received) > 300:
                return helpers
            await asyncio.sleep(0.01)


async def test_sigterm_stops_every_process_after_recording_what_is_in_flight(site: Site) -> None:
    folder, env, store, handler = site
    process = await _send(folder, env)
    helpers = await _helpers_of(process, handler)
    process.send_signal(signal.SIGTERM)  # the parent only, as `kill PID` does
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 75, err.decode()
    assert not any(_alive(pid) for pid in helpers)
    record = store.get_issue("wochenueberblick", WEEK)
    assert record is not None
    counts = store.delivery_counts(record.id)
    assert DeliveryState.SENDING not in counts
    assert counts[DeliveryState.SENT] == len(handler.received) < READERS
    assert "interrupted" in out.decode()
    # The next run sends the rest, to each reader once.
    process = await _send(folder, env)
    _, err = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, err.decode()
    assert store.delivery_counts(record.id) == {DeliveryState.SENT: READERS}
    assert sorted(Counter(handler.received).values()) == [1] * READERS


async def test_helpers_die_with_their_parent(site: Site) -> None:
    folder, env, store, handler = site
    process = await _send(folder, env)
    helpers = await _helpers_of(process, handler)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    async with asyncio.timeout(10):
        while any(_alive(pid) for pid in helpers):
            await asyncio.sleep(0.02)
    # Nothing is sent any more once they are gone.
    settled = len(handler.received)
    await asyncio.sleep(0.5)
    assert len(handler.received) == settled
