"""This process as a registered sender: its heartbeat, written from a thread of its own.

The rows a sender claims stay its own while its heartbeat is fresh (see
:mod:`digest.store.senders`). The heartbeat is written by a thread, not the event
loop, so that a busy loop or a long ledger transaction never delays it; a sender
whose heartbeat cannot be written, or was not written for half the stale bound,
must start no new message (:attr:`Heartbeat.lost`): its rows may change hands.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Self

from sqlalchemy.exc import SQLAlchemyError

from digest.store import Store
from digest.store.senders import HEARTBEAT_SECONDS, STALE_SECONDS

__all__ = ["Heartbeat"]

log = logging.getLogger("digest.delivery.heartbeat")


class Heartbeat:
    """Registers this process as a sender and keeps its heartbeat fresh until closed."""

    def __init__(self, store: Store, *, every: float = HEARTBEAT_SECONDS) -> None:
        self.store = store
        self.every = every
        self.id = store.register_sender()
        self._last = time.monotonic()
        self._problem: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="digest-heartbeat", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> str | None:
        """Why this sender may no longer hold its rows, or None while it does."""
        if self._problem is None and time.monotonic() - self._last > STALE_SECONDS / 2:
            return f"no heartbeat written to the store for {time.monotonic() - self._last:.0f} s"
        return self._problem

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self.store.beat(self.id):
                    self._problem = (
                        "this sender was taken for gone by another one (its heartbeat was "
                        "stale); the rows it held may be sent by that one"
                    )
                    return
            except SQLAlchemyError as exc:
                self._problem = f"cannot write the sender's heartbeat to the store: {exc}"
                log.error("%s", self._problem)
                return
            self._last = time.monotonic()

    def close(self) -> None:
        """Stop the heartbeat and forget the registration (the rows are settled)."""
        self._stop.set()
        self._thread.join()
        try:
            self.store.unregister_sender(self.id)
        except SQLAlchemyError as exc:  # it goes stale by itself
            log.warning("cannot unregister sender %s: %s", self.id, exc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
