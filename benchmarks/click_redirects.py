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
import multiprocessing
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from digest.audience.tokens import UNSUBSCRIBE, click_url, make_token
from digest.config import Settings, load_settings
from digest.issue.prepare import prepare_issue
from digest.ops import jobs
from digest.store import schema as t

ROOT = Path(__file__).resolve().parent.parent
NL = "wochenueberblick"
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, tzinfo=UTC)
NO_RATE_LIMIT = "100000000/minute"
#: Requests before the measured run, so that first-use costs stay out of it.
WARM_UP = 500
BODY = b"List-Unsubscribe=One-Click"


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


# --- the server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu(pid: int) -> float:
    """CPU seconds (user and system) of a process and its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return total


class Server:
    """``digest serve`` on a free port, its output in a file; ready once /healthz is."""

    def __init__(self, store_url: str, tmp: Path) -> None:
        self.port = free_port()
        self.log = tmp / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        env["DIGEST_STORE_URL"] = store_url
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "digest.cli", "--config", str(ROOT / "config.toml")]
        command += ["serve", "--rate-limit", NO_RATE_LIMIT, "--port", str(self.port)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the server did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def cpu(self) -> float:
        return tree_cpu(self.process.pid)

    def stop(self) -> None:
        """SIGTERM, as systemd stops it: the app writes its counts on the way out."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- the load generator ------------------------------------------------------------------


def get(path: str, n: int) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Reader/{n}\r\n\r\n"
    ).encode("ascii")


def post(token: str) -> bytes:
    return (
        f"POST /unsubscribe/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode("ascii") + BODY


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head[9:12])


async def _drive(port: int, requests: list[bytes], connections: int, go: Any) -> dict[str, Any]:
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    todo = iter(requests)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for request in todo:
            sent = time.monotonic()
            try:
                status = await _exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors[type(exc).__name__] += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latencies.append(time.monotonic() - sent)
            statuses[status] += 1
        writer.close()

    await asyncio.gather(*(connection(r, w) for r, w in streams))
    ended = time.monotonic()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": ended - started,
        "latencies": latencies,
        "statuses": dict(statuses),
        "errors": dict(errors),
        "cpu": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
    }


def _generator(port: int, requests: list[bytes], connections: int, go: Any, out: Any) -> None:
    out.put(asyncio.run(_drive(port, requests, connections, go)))


@dataclass
class Run:
    requests: int
    seconds: float
    latencies: list[float]
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    client_cpu: float = 0.0
    server_cpu: float = 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def describe(self, expected: int) -> str:
        others = {s: n for s, n in self.statuses.items() if s != expected}
        return (
            f"{self.requests / self.seconds:,.0f}/s ({self.requests} in {self.seconds:.1f} s), "
            f"latency ms p50 {self.percentile(50):.1f} p95 {self.percentile(95):.1f} "
            f"p99 {self.percentile(99):.1f} max {1000 * max(self.latencies):.0f}; "
            f"{self.statuses.get(expected, 0)} answered {expected}"
            + (f", others {others}" if others else "")
            + (f", errors {dict(self.errors)}" if self.errors else "")
            + f"; CPU per request: server {1000 * self.server_cpu / self.requests:.2f} ms, "
            f"generator {1000 * self.client_cpu / self.requests:.2f} ms"
        )


def drive(server: Server, requests: list[bytes], connections: int) -> Run:
    """Send ``requests`` over ``connections`` keep-alive connections from another process."""
    context = multiprocessing.get_context("spawn")
    go, out = context.Event(), context.Queue()
    child = context.Process(target=_generator, args=(server.port, requests, connections, go, out))
    child.start()
    time.sleep(1.0)  # connected and waiting
    cpu = server.cpu()
    go.set()
    while True:
        try:
            result = out.get(timeout=5)
            break
        except queue.Empty:
            if child.exitcode not in (None, 0):
                raise SystemExit("the load generator failed") from None
    server_cpu = server.cpu() - cpu
    child.join()
    run = Run(
        requests=len(requests),
        seconds=result["seconds"],
        latencies=result["latencies"],
        client_cpu=result["cpu"],
        server_cpu=server_cpu,
    )
    run.statuses.update(result["statuses"])
    run.errors.update(result["errors"])
    return run


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


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
        server = Server(store_url, tmp)
        try:
            warm = [get(paths[n % len(paths)], -n - 1) for n in range(WARM_UP)]
            drive(server, warm, args.connections)
            requests = [get(paths[n % len(paths)], n) for n in range(args.requests)]
            clicks = drive(server, requests, args.connections)
            print(f"redirects: {clicks.describe(302)}")
            if args.one_click:
                tokens = [make_token(settings.secret_key, UNSUBSCRIBE, i, NL) for i in ids]
                drive(server, [post(token) for token in tokens[:WARM_UP]], args.connections)
                posts = drive(server, [post(token) for token in tokens[WARM_UP:]], args.connections)
                print(f"one-click: {posts.describe(200)}")
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
