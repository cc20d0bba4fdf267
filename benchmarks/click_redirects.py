"""Counted article links against a real ``digest serve`` on SQLite: redirects per second.

Seeds a store with the demo newsletter's issue 2025-W05 (its feeds collected and the
week composed, so the issue claims its articles), starts ``digest serve`` as a
subprocess (rate limit lifted) and sends ``GET /r/<token>`` for the issue's articles over
keep-alive connections from a load generator in another process. Every request carries
a user agent of its own, so each is a reader of its own: none is a scanner, and the
server remembers about a second of them to tell bursts. Printed: redirects per second,
latency p50/p95/p99/max, answers other than 302, the CPU per request of server and
generator. When the server has stopped (and written what it counted), the reads in
``click_counts`` must equal the redirects: the script exits non-zero if not.

With ``--one-click N`` the same server then gets N valid RFC 8058 one-click unsubscribe
POSTs the same way, for the figure to compare with on the same machine at the same time.

The generator writes raw HTTP/1.1 on asyncio streams (a client library would spend
several times the CPU per request the figures are about); server and generator share
the machine's cores, and other load moves every figure: the load average is printed.

    .venv/bin/python benchmarks/click_redirects.py
    .venv/bin/python benchmarks/click_redirects.py --requests 50000 --one-click 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from digest.audience.tokens import UNSUBSCRIBE, click_url, make_token
from digest.config import Settings, load_settings
from digest.issue.prepare import prepare_issue
from digest.ops import jobs
from digest.store import schema as t

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import Run, digest_serve, drive, load_average, one_click_post  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NL = "wochenueberblick"
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, tzinfo=UTC)
NO_RATE_LIMIT = "100000000/minute"
#: Requests before the measured run, so that first-use costs stay out of it.
WARM_UP = 500


# --- the store ---------------------------------------------------------------------------


def seed(settings: Settings, subscribers: int) -> tuple[list[str], list[int]]:
    """The issue's counted link paths, and the ids of ``subscribers`` new readers."""
    store = jobs.open_store(settings)
    try:
        asyncio.run(jobs.collect(settings, store, NL, now=NOW))
        prepared = prepare_issue(store, settings.newsletter(NL), WEEK, NOW)
        assert prepared is not None and prepared.record is not None
        paths = [
            "/" + click_url(settings, NL, WEEK, article.uid, "mail").split("/", 3)[3]
            for article in prepared.issue.articles
        ]
        ids = []
        if subscribers:
            now = datetime.now(UTC)
            with store.engine.begin() as conn:
                conn.execute(
                    t.subscribers.insert(),
                    [
                        {
                            "email": f"leser{n}@example.org",
                            "email_key": f"leser{n}@example.org",
                            "name": "",
                            "locale": None,
                            "categories": [],
                            "regions": [],
                            "status": "active",
                            "created_at": now,
                            "updated_at": now,
                        }
                        for n in range(subscribers)
                    ],
                )
                ids = [int(i) for i in conn.execute(select(t.subscribers.c.id)).scalars()]
    finally:
        store.close()
    return paths, ids


def stored(settings: Settings) -> tuple[int, int, int]:
    """Reads and scanner requests in ``click_counts``, and unsubscriptions."""
    store = jobs.open_store(settings)
    try:
        with store.engine.connect() as conn:
            c = t.click_counts.c
            counts = dict(conn.execute(select(c.kind, func.sum(c.count)).group_by(c.kind)).all())
            gone = conn.execute(select(func.count()).select_from(t.unsubscriptions)).scalar_one()
    finally:
        store.close()
    return int(counts.get("read", 0)), int(counts.get("scanner", 0)), int(gone)


# --- the load ----------------------------------------------------------------------------


def get(path: str, n: int) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Reader/{n}\r\n\r\n"
    ).encode("ascii")


def describe(run: Run, expected: int) -> str:
    others = {s: n for s, n in run.statuses.items() if s != expected}
    return (
        f"{run.speed()}; {run.statuses.get(expected, 0)} answered {expected}"
        + (f", others {others}" if others else "")
        + (f", errors {dict(run.errors)}" if run.errors else "")
        + f"; {run.cpu_per_request()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="redirects measured")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--one-click", type=int, default=0, metavar="N", help="also N POSTs")
    args = parser.parse_args(argv)
    print(
        f"machine:   {os.cpu_count()} cores, load average {load_average()} (other work on "
        "the machine moves every figure)"
    )
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        store_url = f"sqlite:///{tmp / 'digest.db'}"
        settings = load_settings(ROOT / "config.toml", environ={"DIGEST_STORE_URL": store_url})
        paths, ids = seed(settings, args.one_click + WARM_UP if args.one_click else 0)
        print(f"store:     SQLite, issue {WEEK} with {len(paths)} counted links")
        server = digest_serve(store_url, tmp, NO_RATE_LIMIT)
        try:
            warm = [get(paths[n % len(paths)], -n - 1) for n in range(WARM_UP)]
            drive(server, warm, args.connections)
            requests = [get(paths[n % len(paths)], n) for n in range(args.requests)]
            clicks = drive(server, requests, args.connections)
            print(f"redirects: {describe(clicks, 302)}")
            if args.one_click:
                posted = [
                    one_click_post(make_token(settings.secret_key, UNSUBSCRIBE, i, NL)) for i in ids
                ]
                drive(server, posted[:WARM_UP], args.connections)
                posts = drive(server, posted[WARM_UP:], args.connections)
                print(f"one-click: {describe(posts, 200)}")
        finally:
            server.stop()
        reads, scanners, _gone = stored(settings)
        expected = WARM_UP + clicks.statuses.get(302, 0)
        print(f"counted:   {reads} reads, {scanners} scanner requests (expected {expected} reads)")
        if reads != expected or scanners:
            print(f"the counts are wrong; server log:\n{server.log.read_text()[-2000:]}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
