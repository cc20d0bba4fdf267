"""How many ledger rows one sender holds, and how soon it records what became of them.

Two bounds of the crash and ownership rules (see :mod:`digest.store.senders`):

- a sender claims no more rows than it can send in :data:`HOLD_SECONDS` (a third of
  the stale bound) at its pace: its share of ``smtp.max_per_second`` and
  ``smtp.max_per_hour``, and the pace it reaches, which the per-domain limit and the
  server's answers set. A slow sender holds few rows; a fast one up to
  :data:`MAX_HOLD`.
- outcomes are recorded in one transaction per batch, at the latest
  :data:`FLUSH_SECONDS` after the server's answer, and sending pauses while
  :data:`MAX_UNRECORDED` are waiting: a sender killed outright leaves at most that many
  messages sent but not recorded, plus those in flight (the next run repeats each once,
  with its first Message-ID).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from digest.config import SmtpSettings
from digest.store import Store
from digest.store.ledger import Outcome
from digest.store.senders import STALE_SECONDS

__all__ = [
    "CLAIM_CHUNK",
    "FLUSH_ROWS",
    "FLUSH_SECONDS",
    "HOLD_SECONDS",
    "MAX_UNRECORDED",
    "Hold",
    "Outcomes",
    "in_ledger_thread",
]

#: Ledger rows claimed in one transaction, at most.
CLAIM_CHUNK = 500
#: A sender holds no more rows than it sends in this many seconds at its pace.
HOLD_SECONDS = STALE_SECONDS / 3
#: ... and never more than this many (enough to keep a fast sender busy between claims).
MAX_HOLD = 3 * CLAIM_CHUNK
#: Outcomes are recorded at the latest this many seconds after the server's answer ...
FLUSH_SECONDS = 0.02
#: ... or as soon as this many are waiting.
FLUSH_ROWS = 16
#: Sending pauses while this many outcomes are not yet recorded. With the messages in
#: flight this bounds the messages a killed sender sent but did not record.
MAX_UNRECORDED = 2 * FLUSH_ROWS

T = TypeVar("T")

# One thread for the ledger work of every send (claims, planning, reading subscribers):
# one database connection busy at a time and one more malloc arena, rather than one per
# thread of the default executor. Outcomes have a thread of their own, so that no claim
# or planned chunk delays them (each moment an outcome waits is a repeat after a kill).
_LEDGER_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-ledger")
_OUTCOME_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-outcomes")


async def in_ledger_thread(
    call: Callable[[], T], *, thread: ThreadPoolExecutor = _LEDGER_THREAD
) -> T:
    """``call()`` in the ledger thread (or ``thread``), so the event loop keeps sending.

    Cancelled, it still waits for the call to end (a transaction is never left to
    finish behind the caller's back) and then raises.
    """
    future = asyncio.get_running_loop().run_in_executor(thread, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


class Hold:
    """How many rows this sender may hold now (claimed and not settled)."""

    def __init__(self, settings: SmtpSettings, connections: int) -> None:
        rates = [settings.max_per_second, settings.max_per_hour / 3600]
        limited = [rate for rate in rates if rate > 0]
        # Enough for every connection to have a message ready behind the one it sends.
        self.least = max(8, 4 * connections)
        self.most = MAX_HOLD
        if limited:
            self.most = max(self.least, min(MAX_HOLD, math.ceil(min(limited) * HOLD_SECONDS)))
        self._done: deque[float] = deque()  # when each recent message was finished
        self._started = time.monotonic()

    def finished(self) -> None:
        """One message was finished (answered, or given up on)."""
        now = time.monotonic()
        self._done.append(now)
        while self._done and self._done[0] < now - HOLD_SECONDS:
            self._done.popleft()

    def limit(self) -> int:
        """Rows to hold at most: the configured pace, and the pace reached recently."""
        now = time.monotonic()
        window = min(HOLD_SECONDS, now - self._started)
        if window < 0.5:  # no pace measured yet: a few claims' worth, to measure it
            return min(self.most, max(self.least, CLAIM_CHUNK // 8))
        while self._done and self._done[0] < now - HOLD_SECONDS:
            self._done.popleft()
        recent = len(self._done)  # finished within the window (never longer than HOLD)
        reached = math.ceil(2 * recent / window * HOLD_SECONDS)
        return max(self.least, min(self.most, reached))


class Outcomes:
    """Outcomes waiting to be recorded, written in one transaction per batch, each only
    while the row is still held by ``claimer``."""

    def __init__(self, store: Store, claimer: int | None) -> None:
        self.store = store
        self.claimer = claimer
        self.waiting: list[Outcome] = []
        self.writing = 0  # outcomes in the transaction being written
        self.due = asyncio.Event()  # an outcome is waiting
        self.full = asyncio.Event()  # FLUSH_ROWS are waiting

    @property
    def unrecorded(self) -> int:
        return len(self.waiting) + self.writing

    def add(self, outcome: Outcome) -> None:
        self.waiting.append(outcome)
        self.due.set()
        if len(self.waiting) >= FLUSH_ROWS:
            self.full.set()

    async def room(self) -> None:
        """Wait while too many outcomes are unrecorded."""
        while self.unrecorded >= MAX_UNRECORDED:
            await asyncio.sleep(0.002)

    async def write(self) -> None:
        batch, self.waiting = self.waiting, []
        if not batch:
            return
        self.writing = len(batch)
        try:
            await in_ledger_thread(
                lambda: self.store.record_outcomes(batch, claimer=self.claimer),
                thread=_OUTCOME_THREAD,
            )
        finally:
            self.writing = 0

    async def write_now_and_then(self, running: Callable[[], bool]) -> None:
        """Write each batch soon after its first outcome, while ``running()``.

        A batch waits at most FLUSH_SECONDS for more outcomes (fewer transactions at a
        high pace), less once FLUSH_ROWS are waiting.
        """
        while running():
            try:
                async with asyncio.timeout(0.05):  # not wait_for: see sending._next_item
                    await self.due.wait()
            except TimeoutError:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self.full.wait()
            self.due.clear()
            self.full.clear()
            await self.write()

    def flush(self) -> None:
        batch, self.waiting = self.waiting, []
        self.store.record_outcomes(batch, claimer=self.claimer)
