"""A burst of one-click unsubscribes against a real ``digest serve``, and /healthz.

After a large send, mail providers post RFC 8058 one-click unsubscribes in bursts from
few addresses. This seeds a store with N subscribers of the demo newsletter, makes one
valid unsubscribe token for each (as the link in their mail has it), starts ``digest
serve`` as a subprocess (rate limit lifted, ``--workers``) and posts every token once
over keep-alive connections from a load generator in other processes:

(0) the generator's ceiling: GETs answered by a server that parses nothing;
(a) ``GET /healthz`` of a bare Starlette app (one route) on the same uvicorn settings;
(b) ``GET /healthz`` of ``digest serve``, and b/a;
(c) the burst: POSTs/s, latency p50/p95/p99/max, errors, and whether every POST is
    recorded (unsubscriptions in the store = 200 answers = tokens posted; the script
    exits non-zero if not).

The generator writes raw HTTP/1.1 on asyncio streams: the machine's cores are shared by
server and generator, and a client library would spend several times the CPU per request
that the figures are about. Its CPU per request is printed next to the server's. Other
load on the machine moves every figure: the load average is printed first.

    .venv/bin/python benchmarks/web_burst.py
    .venv/bin/python benchmarks/web_burst.py --workers 2
    .venv/bin/python benchmarks/web_burst.py \
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from digest.audience.segments import segment_lists
from digest.audience.tokens import UNSUBSCRIBE, make_token
from digest.config import Settings, load_settings
from digest.ops import jobs
from digest.store import schema as t

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import Run, Server, digest_serve, drive, load_average, one_click_post  # noqa: E402
from _schema import own_schema  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: Lifts the per-address budget: every POST here comes from 127.0.0.1. Over a second,
#: so that the window holds what a second brings: the production budget (60/minute, 20
#: times that for one-click POSTs) holds at most 1,200 hits per address, a lifted
#: per-minute one all 20,000, each a long-lived object in the serving process.
NO_RATE_LIMIT = "100000000/second"
#: Tokens posted before the measured burst, so that first-use costs stay out of it.
WARM_UP = 500

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def health(request):
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/healthz", health, methods=["GET"])])
"""

#: Answers every request head with the same 200, parsing nothing: what the generator can
#: do when the server costs next to nothing.
NULL_SERVER = """
import asyncio, sys

ANSWER = b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok"


async def answer(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\\r\\n\\r\\n")
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", int(sys.argv[-1]))
    await server.serve_forever()


asyncio.run(main())
"""

# --- the store ---------------------------------------------------------------------------


def settings_for(store_url: str) -> Settings:
    return load_settings(ROOT / "config.toml", environ={"DIGEST_STORE_URL": store_url})


def seed(settings: Settings, subscribers: int) -> list[int]:
    """N active subscribers on the demo newsletter's first list; their ids."""
    store = jobs.open_store(settings)
    newsletter = settings.newsletters[0]
    list_name = sorted(segment_lists(newsletter))[0]
    now = datetime.now(UTC)
    chunk = 5000
    try:
        with store.engine.begin() as conn:
            for start in range(0, subscribers, chunk):
                conn.execute(
                    t.subscribers.insert(),
                    [
                        {
                            "email": f"leser{n}@example.org",
                            "email_key": f"leser{n}@example.org",
                            "name": f"Leserin {n}",
                            "locale": None,
                            "categories": [],
                            "regions": [],
                            "status": "active",
                            "created_at": now,
                            "updated_at": now,
                        }
                        for n in range(start, min(start + chunk, subscribers))
                    ],
                )
            ids = [int(i) for i in conn.execute(select(t.subscribers.c.id)).scalars()]
            for start in range(0, len(ids), chunk):
                conn.execute(
                    t.memberships.insert(),
                    [
                        {"subscriber_id": sid, "list_name": list_name, "created_at": now}
                        for sid in ids[start : start + chunk]
                    ],
                )
    finally:
        store.close()
    return ids


def recorded(settings: Settings) -> int:
    """How many unsubscriptions from the demo newsletter the store holds."""
    store = jobs.open_store(settings)
    try:
        with store.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        t.unsubscriptions.c.newsletter == settings.newsletters[0].id
                    )
                ).scalar_one()
            )
    finally:
        store.close()


# --- the servers -------------------------------------------------------------------------


def null_server(tmp: Path) -> Server:
    (tmp / "null_server.py").write_text(NULL_SERVER)
    return Server(
        [sys.executable, str(tmp / "null_server.py")], dict(os.environ), tmp / "null.log", tmp
    )


def bare_app(workers: int, tmp: Path) -> Server:
    """The same uvicorn settings as ``digest serve``: access log on, no server header, no
    proxy headers, default logging (to a file, as digest's)."""
    (tmp / "bare_app.py").write_text(BARE_APP)
    command = [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(tmp)]
    command += ["--host", "127.0.0.1", "--no-server-header", "--no-proxy-headers"]
    command += ["--workers", str(workers)]
    return Server(command, dict(os.environ), tmp / "bare.log", tmp)


# --- the load ----------------------------------------------------------------------------


def describe(run: Run) -> str:
    others = {s: n for s, n in run.statuses.items() if s != 200}
    wrong = sum(others.values()) + sum(run.errors.values())
    return (
        f"{run.speed()}, {run.statuses.get(200, 0)} answered 200, errors {wrong}"
        + (f" {others}" if others else "")
        + (f" {dict(run.errors)}" if run.errors else "")
        + f"; {run.cpu_per_request()}"
    )


HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def health(server: Server, count: int, connections: int, clients: int) -> Run:
    drive(server, [HEALTH] * 200, connections, 1)  # warm
    return drive(server, [HEALTH] * count, connections, clients)


# --- the run -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20000, help="one-click POSTs measured")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="digest serve --workers")
    parser.add_argument("--clients", type=int, default=1, help="load generator processes")
    parser.add_argument("--health", type=int, default=20000, help="GET /healthz per server")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL store instead of SQLite")
    parser.add_argument(
        "--rate-limit", default=NO_RATE_LIMIT, help=f"digest serve --rate-limit ({NO_RATE_LIMIT})"
    )
    args = parser.parse_args(argv)
    print(
        f"machine:   {os.cpu_count()} cores, load average {load_average()} (other work on "
        "the machine moves every figure)"
    )
    print(
        f"load:      {args.connections} keep-alive connections from {args.clients} generator "
        f"process(es); digest serve --workers {args.workers} --rate-limit {args.rate_limit}"
    )
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        with own_schema(args.postgres or f"sqlite:///{tmp / 'digest.db'}") as store_url:
            settings = settings_for(store_url)
            started = time.perf_counter()
            ids = seed(settings, args.tokens + WARM_UP)
            newsletter = settings.newsletters[0].id
            requests = [
                one_click_post(make_token(settings.secret_key, UNSUBSCRIBE, i, newsletter))
                for i in ids
            ]
            print(
                f"store:     {store_url.split(':')[0]}, {len(ids)} subscribers seeded and "
                f"tokens made in {time.perf_counter() - started:.1f} s"
            )
            return _measure(args, settings, store_url, requests, tmp)


def _measure(
    args: argparse.Namespace, settings: Settings, store_url: str, requests: list[bytes], tmp: Path
) -> int:
    null = null_server(tmp)
    try:
        # GETs only: this server reads no request body.
        generator = health(null, args.health, args.connections, args.clients)
    finally:
        null.stop()
    print(f"(0) generator vs a null server: {describe(generator)}")
    bare = bare_app(args.workers, tmp)
    try:
        ceiling = health(bare, args.health, args.connections, args.clients)
    finally:
        bare.stop()
    print(f"(a) bare app /healthz:     {describe(ceiling)}")
    serve = digest_serve(store_url, tmp, args.rate_limit, args.workers)
    try:
        healthz = health(serve, args.health, args.connections, args.clients)
        print(
            f"(b) digest /healthz:       {describe(healthz)}; b/a {healthz.rate / ceiling.rate:.2f}"
        )
        warm = drive(serve, requests[:WARM_UP], args.connections, 1)
        burst = drive(serve, requests[WARM_UP:], args.connections, args.clients)
        print(f"(c) one-click POST burst:  {describe(burst)}")
    finally:
        serve.stop()
    answered = warm.statuses.get(200, 0) + burst.statuses.get(200, 0)
    stored = recorded(settings)
    complete = stored == answered == len(requests)
    print(
        f"recorded:  {stored} unsubscriptions in the store for {len(requests)} tokens posted "
        f"({answered} answered 200): {'every one' if complete else 'NOT every one'}"
    )
    print(f"load average after: {load_average()}")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
