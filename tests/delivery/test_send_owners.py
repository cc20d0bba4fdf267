"""Two `digest send` runs of one issue, and a run after a kill: rows belong to a sender.

Real processes of the `digest` command against a real SMTP server and a real store
(SQLite file; PostgreSQL when configured). A row in 'sending' changes hands only when
the sender holding it is gone, however long a live one takes to send it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from digest.config import load_settings
from digest.core.models import DeliveryState, Subscriber
from digest.ops import jobs
from tests.delivery.test_send import NOW, WEEK
from tests.smtp_server import RecordingServer

ROOT = Path(__file__).resolve().parents[2]


def _site(tmp_path: Path, smtp: str) -> Path:
    """A site whose config has ``smtp`` in place of the shipped SMTP timeout."""
    site = tmp_path / "site"
    site.mkdir()
    config = (ROOT / "config.toml").read_text()
    assert "timeout = 30\n" in config
    (site / "config.toml").write_text(config.replace("timeout = 30\n", smtp, 1))
    shutil.copytree(ROOT / "examples", site / "examples")
    return site


def _env(store_url: str, server: RecordingServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    return env | {
        "DIGEST_STORE_URL": store_url,
        "DIGEST_SMTP_HOST": "127.0.0.1",
        "DIGEST_SMTP_PORT": str(server.port),
    }


async def _readers(site: Path, env: dict[str, str], count: int) -> None:
    settings = load_settings(site / "config.toml", environ=env)
    store = jobs.open_store(settings)
    try:
        store.save_subscribers(
            [Subscriber(f"leser{n}@example.org", f"Leser {n}") for n in range(count)],
            ["allgemein"],
        )
        await jobs.collect(settings, store, settings.newsletters[0].id, now=NOW)
    finally:
        store.close()


def _states(site: Path, env: dict[str, str]) -> dict[str, int]:
    settings = load_settings(site / "config.toml", environ=env)
    store = jobs.open_store(settings)
    try:
        record = store.get_issue(settings.newsletters[0].id, WEEK)
        assert record is not None
        return store.delivery_counts(record.id)
    finally:
        store.close()


async def _send(site: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "send", "wochenueberblick", "--week", WEEK,
        cwd=site, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def _received(server: RecordingServer) -> Counter[str]:
    return Counter(rcpt for _, rcpts, _ in server.messages for rcpt in rcpts)


async def _until_received(
    server: RecordingServer, count: int, process: asyncio.subprocess.Process
) -> None:
    async with asyncio.timeout(90):
        while len(server.messages) < count:
            if process.returncode is not None:
                out, err = await process.communicate()
                raise AssertionError(f"the send ended early: {out.decode()}{err.decode()}")
            await asyncio.sleep(0.02)


#: A slow first sender: 20 messages a second, so 800 readers take 40 s, longer than
#: the lease of twice the SMTP timeout (1 s) plus 30 s that rows once had.
READERS = 800
SLOW = "timeout = 1\nmax_per_second = 20\nprocesses = 1\n"


async def test_a_second_run_never_takes_rows_a_slow_live_run_holds(
    tmp_path: Path, store_url: str
) -> None:
    site = _site(tmp_path, SLOW)
    async with RecordingServer() as server:
        env = _env(store_url, server)
        await _readers(site, env, READERS)
        first = await _send(site, env)
        # 34 s of sending at 20 a second: every row the first run claimed at its start
        # is older than 32 s when the second run claims.
        await _until_received(server, 680, first)
        assert first.returncode is None
        # A slow sender holds no more rows than it sends in 5 s: 100 at 20 a second.
        assert _states(site, env).get(DeliveryState.SENDING, 0) <= 100
        second = await _send(site, env)
        _, second_err = await asyncio.wait_for(second.communicate(), timeout=90)
        _, first_err = await asyncio.wait_for(first.communicate(), timeout=90)
        assert first.returncode in (0, 75), first_err.decode()
        assert second.returncode in (0, 75), second_err.decode()
        received = _received(server)
    twice = sorted(reader for reader, times in received.items() if times > 1)
    assert not twice, f"{len(twice)} readers mailed twice, first {twice[:3]}"
    assert set(received) == {f"leser{n}@example.org" for n in range(READERS)}
    assert _states(site, env) == {DeliveryState.SENT: READERS}


async def test_a_run_right_after_a_kill_takes_over_the_killed_runs_rows(
    tmp_path: Path, store_url: str
) -> None:
    # A long SMTP timeout: the lease of old (2 × 60 s + 30 s) would hold the killed
    # run's rows for two and a half minutes.
    site = _site(tmp_path, "timeout = 60\nmax_per_second = 50\nprocesses = 1\n")
    async with RecordingServer() as server:
        env = _env(store_url, server)
        await _readers(site, env, 300)
        first = await _send(site, env)
        await _until_received(server, 50, first)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert _states(site, env).get(DeliveryState.SENDING), "the kill left no row held"
        # The next run, started at once, sends the rows the killed one held.
        second = await _send(site, env)
        out, err = await asyncio.wait_for(second.communicate(), timeout=60)
        assert second.returncode == 0, out.decode() + err.decode()
        assert "being sent by another run" not in out.decode()
        received = _received(server)
    assert set(received) == {f"leser{n}@example.org" for n in range(300)}
    assert _states(site, env) == {DeliveryState.SENT: 300}


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append((int(entry.name), cmdline))
    return found


def _is_zombie(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False  # reaped


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
async def test_a_stopped_or_killed_send_leaves_no_semaphore_and_no_zombie(
    tmp_path: Path, how: signal.Signals
) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    site = _site(tmp_path, "timeout = 30\nprocesses = 2\n")
    async with RecordingServer(delay=0.005) as server:
        env = _env(f"sqlite:///{tmp_path / 'digest.db'}", server)
        await _readers(site, env, 2100)
        send = await _send(site, env)
        await _until_received(server, 300, send)  # both processes send by now
        trackers = [pid for pid, cmd in _children(send.pid) if "resource_tracker" in cmd]
        send.send_signal(how)
        _, err = await asyncio.wait_for(send.communicate(), timeout=60)
    assert "leaked semaphore" not in err.decode(), err.decode()
    assert "Traceback" not in err.decode(), err.decode()
    if how == signal.SIGTERM:
        assert send.returncode == 75
        assert trackers and not any(_is_zombie(pid) for pid in trackers)
