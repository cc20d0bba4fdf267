"""Which registered senders are gone: a process that has ended, a zombie included."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime

from sqlalchemy import insert, select

from digest.store import Store, schema


def _register(store: Store, pid: int) -> int:
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        return int(
            conn.execute(
                insert(schema.senders)
                .values(host=socket.gethostname(), pid=pid, started_at=now, heartbeat_at=now)
                .returning(schema.senders.c.id)
            ).scalar_one()
        )


def _senders(store: Store) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.execute(select(schema.senders.c.id)).scalars())


def test_a_sender_whose_process_ended_is_gone_even_as_a_zombie(store: Store) -> None:
    """A helper killed with its parent stays a zombie until whoever adopted it reaps it
    (in a container, maybe never): its rows must be free at once all the same."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Wait for it to end but leave it unreaped: a zombie.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        zombie = _register(store, child.pid)
        running = _register(store, live.pid)
        store.forget_gone_senders()
        assert _senders(store) == {running}
        assert zombie not in _senders(store)
    finally:
        live.kill()
        live.wait()
        child.wait()
