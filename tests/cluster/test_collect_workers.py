"""Two real ``digest worker`` processes collecting sources of one host: the host's lock
in the queue keeps them from fetching it at the same time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from sqlalchemy import select, text

from digest.cluster import app as names
from digest.cluster.tick import tick
from digest.config import load_settings
from digest.store import Store
from digest.store import schema as t
from tests.cluster.conftest import apply_queue_schema
from tests.cluster.test_tick import queued
from tests.conftest import ROOT, TEST_SECRET_KEY
from tests.sources.test_sources_feed import FeedServer, Route, respond

NEWSLETTERS = ("eins", "zwei")
FEEDS = ("a", "b")


class Overlaps:
    """Counts the requests the server is answering at once; each takes 0.3 s."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0
        self.paths: list[str] = []

    def route(self, inner: Route) -> Route:
        def tracked(handler: BaseHTTPRequestHandler) -> None:
            with self.lock:
                self.active += 1
                self.most = max(self.most, self.active)
                self.paths.append(handler.path)
            try:
                time.sleep(0.3)
                inner(handler)
            finally:
                with self.lock:
                    self.active -= 1

        return tracked


def feed(name: str) -> bytes:
    published = format_datetime(datetime.now(UTC))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Test</title>'
        "<link>https://kommune-digital.example/</link>"
        f"<item><title>Meldung {name}</title><link>https://kommune-digital.example/{name}</link>"
        f"<guid>{name}-1</guid><pubDate>{published}</pubDate><category>Politik</category>"
        "<description>Kurz</description></item></channel></rss>"
    ).encode()


def config_text(store_url: str, server_url: str) -> str:
    """Two newsletters, each with both feeds of the one local host."""
    parts = [
        f'secret_key = "{TEST_SECRET_KEY}"\n',
        f'[store]\nurl = "{store_url}"\n',
        '[cluster]\nqueue = "procrastinate"\n',
    ]
    for newsletter in NEWSLETTERS:
        parts.append(
            f'[[newsletters]]\nid = "{newsletter}"\nname = "Kommune Digital"\n'
            'sender = "Kommune Digital <news@example.org>"\ncollect_every_minutes = 60\n'
            "segments = []\n"
            '[newsletters.impressum]\npublisher = "Verlag"\naddress = "Straße 1, 10115 Berlin"\n'
            'contact = "redaktion@example.org"\nresponsible = "E. Mustermann"\n'
            '[[newsletters.categories]]\nkey = "politik"\ntitle = "Politik"\n'
        )
        for name in FEEDS:
            parts.append(
                f'[[newsletters.sources]]\nname = "{name}"\nurl = "{server_url}/{name}.xml"\n'
                # The test server listens on 127.0.0.1, which sources may not reach unless allowed.
                'default_category = "politik"\nallow_private = true\n'
            )
    return "\n".join(parts)


@pytest.fixture
def overlaps() -> Iterator[tuple[FeedServer, Overlaps]]:
    seen = Overlaps()
    with FeedServer() as server:
        for name in FEEDS:
            server.routes[f"/{name}.xml"] = seen.route(respond(feed(name)))
        server.routes["/robots.txt"] = seen.route(respond(b"", 404, "text/plain"))
        yield server, seen


def collected(store: Store) -> set[tuple[str, str]]:
    s = t.sources.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(s.newsletter, s.name).where(s.fetched_at.is_not(None), s.last_error.is_(None))
        )
        return {(row.newsletter, row.name) for row in rows}


def drop_jobs(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM procrastinate_jobs"))


def workers_running(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM procrastinate_workers")).scalar_one())


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "digest.cli", "--config", str(config), "worker"],
            cwd=config.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_two_workers_never_fetch_one_host_at_once(
    cluster_url: str, tmp_path: Path, overlaps: tuple[FeedServer, Overlaps]
) -> None:
    server, seen = overlaps
    config = tmp_path / "config.toml"
    config.write_text(config_text(cluster_url, server.url), encoding="utf-8")
    settings = load_settings(config)
    store = Store.open(settings.store.url, secret_key=TEST_SECRET_KEY)
    try:
        apply_queue_schema(settings)
        # The first tick marks the schedule; its jobs are dropped, so that the workers'
        # own ticks (on the real clock) find nothing due and both workers are idle when
        # the next collect jobs come.
        now = datetime.now(UTC)
        tick(settings, store, now)
        drop_jobs(store)

        workers = [start_worker(config, tmp_path / f"worker{i}.log") for i in range(2)]
        try:
            deadline = time.monotonic() + 90
            while workers_running(store) < 2:
                assert time.monotonic() < deadline, "the workers did not start"
                assert all(w.poll() is None for w in workers), "a worker ended early"
                time.sleep(0.1)
            tick(settings, store, now + timedelta(minutes=60))
            jobs = queued(store, names.COLLECT_HOST)
            assert [(j["args"]["host"], j["lock"]) for j in jobs] == [
                ("127.0.0.1", "host:127.0.0.1")
            ] * 2  # one job per newsletter, both holding the host's lock
            while collected(store) != {(n, f) for n in NEWSLETTERS for f in FEEDS}:
                assert time.monotonic() < deadline, [
                    (tmp_path / f"worker{i}.log").read_text() for i in range(2)
                ]
                assert all(w.poll() is None for w in workers), "a worker ended early"
                time.sleep(0.2)
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            codes = [worker.wait(timeout=60) for worker in workers]
        logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
        assert codes == [0, 0], logs
        assert all("worker stopped" in log for log in logs), logs
    finally:
        store.close()

    assert set(seen.paths) <= {"/a.xml", "/b.xml", "/robots.txt"}
    assert seen.paths.count("/a.xml") == seen.paths.count("/b.xml") == 2  # one per newsletter
    assert seen.most == 1, seen.paths
