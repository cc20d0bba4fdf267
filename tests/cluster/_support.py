"""What the cluster's sending tests share: a PostgreSQL schema with the queue's tables,
a site whose config has a [cluster] section, readers seeded in bulk, a counting SMTP
server, and real ``digest worker`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from digest.config import Settings, load_settings
from digest.delivery.capture import LocalSmtpServer
from digest.ops import jobs
from digest.store import Store
from digest.store import schema as t
from tests.conftest import POSTGRES_URL, postgres_schema_url

ROOT = Path(__file__).resolve().parents[2]
NL = "wochenueberblick"
#: A second newsletter of the same readers (list "allgemein"), on the same relay.
NL2 = "zweitblick"
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
_MESSAGE_ID = re.compile(rb"(?mi)^Message-ID: (<[^>]+>)")


@contextlib.contextmanager
def postgres_schema(secret_key: str | None = None) -> Iterator[str]:
    """A store URL on a new schema of the test PostgreSQL holding digest's tables (opened
    with ``secret_key``) and the queue's (procrastinate's SchemaManager, as ``digest
    migrate`` applies it)."""
    if not POSTGRES_URL:
        pytest.skip("the cluster needs PostgreSQL: set DIGEST_TEST_POSTGRES_URL")
    pytest.importorskip("procrastinate")
    import psycopg
    from procrastinate.schema import SchemaManager

    from digest.cluster.app import conninfo

    with postgres_schema_url() as url:
        Store.open(url, secret_key=secret_key).close()  # digest's tables
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            conn.execute(SchemaManager.get_schema())  # no parameters: "%" is taken as is
        yield url


def write_site(
    folder: Path, *, pool_size: int, send_slots: int, slice_seconds: float, **smtp: Any
) -> Path:
    """The shipped config with a second newsletter (NL2), the relay's connections, and a
    [cluster] section; its example feeds next to it. Returns the config's path."""
    folder.mkdir(parents=True, exist_ok=True)
    config = (ROOT / "config.toml").read_text()
    config = config.replace("pool_size = 2\n", f"pool_size = {pool_size}\n", 1)
    extra = "".join(f"{key} = {value}\n" for key, value in smtp.items())
    config = config.replace("[smtp]\n", f"[smtp]\n{extra}", 1)
    first = config[config.index("[[newsletters]]") :]
    second = first.replace(f'id = "{NL}"', f'id = "{NL2}"', 1).replace(
        f'list_id = "{NL}.', f'list_id = "{NL2}.', 1
    )
    config += "\n" + second
    config += (
        f'\n[cluster]\nqueue = "procrastinate"\nsend_slots = {send_slots}\n'
        f"slice_seconds = {slice_seconds}\nstalled_seconds = 10\n"
    )
    (folder / "config.toml").write_text(config)
    shutil.copytree(ROOT / "examples", folder / "examples", dirs_exist_ok=True)
    return folder / "config.toml"


def environment(store_url: str, smtp_port: int) -> dict[str, str]:
    """The environment of a ``digest`` process: this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= {
        "DIGEST_STORE_URL": store_url,
        "DIGEST_SMTP_HOST": "127.0.0.1",
        "DIGEST_SMTP_PORT": str(smtp_port),
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    return env


def seed_readers(store: Store, count: int) -> None:
    """``count`` active readers on the list "allgemein", interested in everything, in
    two statements (the bulk path of an import, without its per-row checks)."""
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        for start in range(0, count, 5000):
            conn.execute(
                t.subscribers.insert(),
                [
                    {"email": f"leser{n}@example.org", "email_key": f"leser{n}@example.org",
                     "name": f"Leser {n}", "locale": None, "categories": [], "regions": [],
                     "status": "active", "created_at": now, "updated_at": now}
                    for n in range(start, min(start + 5000, count))
                ],
            )  # fmt: skip
        ids = conn.execute(text("SELECT id FROM subscribers ORDER BY id")).scalars().all()
        for start in range(0, len(ids), 5000):
            conn.execute(
                t.memberships.insert(),
                [
                    {"subscriber_id": sid, "list_name": "allgemein", "created_at": now}
                    for sid in ids[start : start + 5000]
                ],
            )


@dataclass
class Site:
    """A cluster site of the tests: its config, the environment of its ``digest``
    processes, its settings and its open store."""

    config: Path
    env: dict[str, str]
    settings: Settings
    store: Store


@contextlib.contextmanager
def cluster_site(
    folder: Path, store_url: str, smtp_port: int, *, readers: int, **site: Any
) -> Iterator[Site]:
    """A site (:func:`write_site` with ``site``) on ``store_url`` and the relay at
    ``smtp_port``, its store open with ``readers`` seeded; the store is closed after."""
    config = write_site(folder, **site)
    env = environment(store_url, smtp_port)
    settings = load_settings(config, environ=env)
    store = jobs.open_store(settings)
    try:
        seed_readers(store, readers)
        yield Site(config, env, settings, store)
    finally:
        store.close()


@dataclass
class Counting:
    """An SMTP handler that keeps who got which message (its Message-ID), not the bytes,
    and the most sessions open at once."""

    received: list[tuple[str, bytes]] = field(default_factory=list)
    open: int = 0
    peak_open: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        found = _MESSAGE_ID.search(envelope.original_content or b"")
        assert found is not None
        for rcpt in envelope.rcpt_tos:
            self.received.append((rcpt, found[1]))
        return "250 2.0.0 Ok: queued"

    def times(self, newsletter: str | None = None) -> Counter[str]:
        """How often each reader got a message (of ``newsletter``'s issues)."""
        prefix = f"<{newsletter}.".encode() if newsletter else b"<"
        return Counter(rcpt for rcpt, mid in self.received if mid.startswith(prefix))

    def newsletters(self) -> list[str]:
        """The newsletter of each message received, in order (its Message-ID says it)."""
        return [mid[1:].split(b".")[0].decode() for _rcpt, mid in self.received]

    def ids_of(self) -> dict[str, set[bytes]]:
        found: dict[str, set[bytes]] = defaultdict(set)
        for rcpt, message_id in self.received:
            found[rcpt].add(message_id)
        return found


class CountingServer(LocalSmtpServer):
    """A real aiosmtpd server that counts the sessions open at once."""

    def __init__(self, port: int = 0) -> None:
        self.counting = Counting()
        super().__init__(self.counting, port=port)

    def _protocol(self) -> Any:
        protocol = super()._protocol()
        made, lost = protocol.connection_made, protocol.connection_lost
        counting = self.counting

        def connection_made(transport: Any) -> None:
            counting.open += 1
            counting.peak_open = max(counting.peak_open, counting.open)
            made(transport)

        def connection_lost(exc: BaseException | None) -> None:
            counting.open -= 1
            lost(exc)

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol


async def digest(
    config: Path, env: dict[str, str], *args: str, timeout: float = 120
) -> tuple[int, str, str]:
    """Run ``digest --config CONFIG ARGS...``; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "--config", str(config), *args,
        cwd=config.parent, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Workers:
    """``digest worker`` processes, each logging to a file of its own."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config, self.env = config, env
        self.processes: list[asyncio.subprocess.Process] = []
        self.logs: list[Path] = []

    async def start(self, count: int) -> None:
        for _ in range(count):
            log = self.config.parent / f"worker-{len(self.processes)}.log"
            with log.open("wb") as sink:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "digest.cli", "--config", str(self.config), "worker",
                    cwd=self.config.parent, env=self.env,
                    stdout=sink, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
            self.processes.append(process)
            self.logs.append(log)

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            for log in self.logs
        )

    async def stop(self) -> None:
        """SIGTERM each one still running; SIGKILL what has not ended 30 s later."""
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def running_workers(config: Path, env: dict[str, str], count: int) -> AsyncIterator[Workers]:
    workers = Workers(config, env)
    try:
        await workers.start(count)
        yield workers
    finally:
        await workers.stop()


async def until(
    condition: Any,
    *,
    timeout: float,
    what: str,
    every: float = 0.2,
    workers: Workers | None = None,
) -> None:
    """Wait until ``condition()`` is true; fail after ``timeout`` s saying ``what`` (and
    showing the ends of the ``workers``' logs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            logs = f"\n{workers.log_tails()}" if workers is not None else ""
            raise AssertionError(f"not within {timeout:.0f} s: {what}{logs}")
        await asyncio.sleep(every)


def job_rows(store: Store, task: str) -> list[Any]:
    """The queue's jobs of ``task``: (id, status, attempts, args), oldest first."""
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT id, status, attempts, args FROM procrastinate_jobs "
                    "WHERE task_name = :task ORDER BY id"
                ),
                {"task": task},
            ).all()
        )
