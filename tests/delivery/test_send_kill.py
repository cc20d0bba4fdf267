"""`digest send` killed (SIGKILL) at random points against a real SMTP server.

The crash rule of the ledger: killing the sending process at any point and running it
again loses no recipient; a repeat happens only for a message the server accepted in
the moments before the kill (sent, its outcome not yet recorded), it carries its first
Message-ID, and repeats are bounded by the messages a run holds unrecorded. The next
run, started at once, takes over the rows a killed run held: its process is gone.

DIGEST_TEST_KILL_READERS and DIGEST_TEST_KILLS make it larger (the figures README gives
were measured with 5,000 readers and 20 kills).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from digest.config import load_settings
from digest.core.models import DeliveryState, Subscriber
from digest.delivery.capture import LocalSmtpServer
from digest.delivery.holding import MAX_UNRECORDED
from digest.ops import jobs

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
RECIPIENTS = int(os.environ.get("DIGEST_TEST_KILL_READERS", "2000"))
KILLS = int(os.environ.get("DIGEST_TEST_KILLS", "8"))
POOL_SIZE = 2
_MESSAGE_ID = re.compile(rb"(?mi)^Message-ID: (<[^>]+>)")


class _Counting:
    """Keeps the recipient and Message-ID of each accepted message, not its bytes."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        found = _MESSAGE_ID.search(envelope.original_content or b"")
        assert found is not None
        for rcpt in envelope.rcpt_tos:
            self.received.append((rcpt, found[1]))
        return "250 2.0.0 Ok: queued"


async def _send(site: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "send", "wochenueberblick", "--week", "2025-W05",
        cwd=site, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.parametrize("processes", [1, 2])
async def test_killed_at_random_points_nobody_is_lost_and_repeats_keep_their_id(
    tmp_path: Path, store_url: str, processes: int
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    config = (ROOT / "config.toml").read_text()
    # With two, helpers send alongside and die with the process that is killed.
    (site / "config.toml").write_text(
        config.replace("[smtp]\n", f"[smtp]\nprocesses = {processes}\n", 1)
    )
    shutil.copytree(ROOT / "examples", site / "examples")
    handler = _Counting()
    chance = random.Random()
    seed = chance.randrange(1 << 30)
    chance.seed(seed)
    async with LocalSmtpServer(handler) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env |= {
            "DIGEST_STORE_URL": store_url,
            "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(server.port),
        }
        settings = load_settings(site / "config.toml", environ=env)
        store = jobs.open_store(settings)
        try:
            newsletter = settings.newsletters[0]
            store.save_subscribers(
                [Subscriber(f"leser{n}@example.org", f"Leser {n}") for n in range(RECIPIENTS)],
                ["allgemein"],
            )
            await jobs.collect(settings, store, newsletter.id, now=NOW)
            kills = 0
            while kills < KILLS:
                before = len(handler.received)
                process = await _send(site, env)
                # Half the kills land anywhere (also while the ledger is planned), half
                # once messages flow.
                if kills % 2:
                    await asyncio.sleep(chance.uniform(0.05, 1.5))
                else:
                    target = before + chance.randint(1, 400)
                    async with asyncio.timeout(60):
                        while len(handler.received) < target and process.returncode is None:
                            await asyncio.sleep(0.005)
                if process.returncode is not None:
                    break  # it finished before the kill
                process.send_signal(signal.SIGKILL)
                await process.wait()
                kills += 1
                # The next run starts at once: the rows the killed one held are free,
                # as its process is gone.
            process = await _send(site, env)
            _, err = await asyncio.wait_for(process.communicate(), timeout=300)
            # Finished: nothing was left held by a killed run.
            assert process.returncode == 0, err.decode()
            record = store.get_issue(newsletter.id, "2025-W05")
            assert record is not None
            assert store.delivery_counts(record.id) == {DeliveryState.SENT: RECIPIENTS}
        finally:
            store.close()
    ids_of: dict[str, set[bytes]] = defaultdict(set)
    times: dict[str, int] = defaultdict(int)
    for rcpt, message_id in handler.received:
        ids_of[rcpt].add(message_id)
        times[rcpt] += 1
    assert set(times) == {f"leser{n}@example.org" for n in range(RECIPIENTS)}, seed
    # A repeat carries the Message-ID of the first attempt.
    assert all(len(ids) == 1 for ids in ids_of.values()), seed
    repeats = sum(n - 1 for n in times.values())
    # Each process holds at most MAX_UNRECORDED outcomes, plus the messages in flight.
    assert repeats <= kills * (processes * MAX_UNRECORDED + POOL_SIZE), (seed, kills, repeats)
    print(f"seed {seed}: {kills} kills, {repeats} repeats, {RECIPIENTS} readers")
