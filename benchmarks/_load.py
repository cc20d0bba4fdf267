"""What the web benchmarks share: a server subprocess on a free port (``digest serve`` or
another), and a load generator that sends prepared HTTP/1.1 requests over keep-alive
connections from processes of its own.

The generator writes raw HTTP/1.1 on asyncio streams: a client library would spend several
times the CPU per request that the figures are about, and server and generator share the
machine's cores. Its CPU per request is measured next to the server's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _proc import free_port, tree_cpu

ROOT = Path(__file__).resolve().parent.parent
ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"


# --- the servers -------------------------------------------------------------------------


class Server:
    """A server subprocess on a free port (``command --port N``) in a session of its own,
    its output in a file; ready once /healthz is."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the server did not start:\n{log.read_text()}")
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
        """SIGTERM, as systemd stops it: ``digest serve`` writes its counts on the way out.
        What has not ended a minute later is killed, its worker processes with it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def digest_serve(store_url: str, tmp: Path, rate_limit: str, workers: int = 1) -> Server:
    """``digest serve`` of this checkout on the bundled config.toml and ``store_url``, its
    output in ``tmp``/serve.log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["DIGEST_STORE_URL"] = store_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "digest.cli", "--config", str(ROOT / "config.toml")]
    command += ["serve", "--rate-limit", rate_limit]
    if workers > 1:
        command += ["--workers", str(workers)]
    return Server(command, env, tmp / "serve.log", tmp)


# --- the load generator ------------------------------------------------------------------


def one_click_post(token: str) -> bytes:
    """A valid RFC 8058 one-click unsubscribe of ``token``."""
    return (
        f"POST /unsubscribe/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(ONE_CLICK_BODY)}\r\n\r\n"
    ).encode("ascii") + ONE_CLICK_BODY


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request, read its whole answer; its status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    if length is None:
        raise RuntimeError(f"an answer without Content-Length: {head!r}")
    await reader.readexactly(length)
    return status


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
            except (OSError, asyncio.IncompleteReadError, ValueError, RuntimeError) as exc:
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
        "started": started,
        "ended": ended,
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

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def speed(self) -> str:
        """Requests per second and the latencies, e.g. ``2,673/s (300 in 0.1 s), latency
        ms p50 1.4 p95 1.8 p99 3.0 max 3``."""
        return (
            f"{self.rate:,.0f}/s ({self.requests} in {self.seconds:.1f} s), latency ms "
            f"p50 {self.percentile(50):.1f} p95 {self.percentile(95):.1f} "
            f"p99 {self.percentile(99):.1f} max {1000 * max(self.latencies):.0f}"
        )

    def cpu_per_request(self) -> str:
        return (
            f"CPU per request: server {1000 * self.server_cpu / self.requests:.2f} ms, "
            f"generator {1000 * self.client_cpu / self.requests:.2f} ms"
        )


def drive(server: Server, requests: list[bytes], connections: int, clients: int = 1) -> Run:
    """Send ``requests`` over ``connections`` keep-alive connections from ``clients``
    processes, each request once."""
    context = multiprocessing.get_context("spawn")
    go, out = context.Event(), context.Queue()
    shares = [requests[i::clients] for i in range(clients)]
    per = [connections // clients + (i < connections % clients) for i in range(clients)]
    children = [
        context.Process(target=_generator, args=(server.port, share, n, go, out))
        for share, n in zip(shares, per, strict=True)
    ]
    for child in children:
        child.start()
    time.sleep(max(1.0, 0.5 + 0.2 * clients))  # connected and waiting
    cpu = server.cpu()
    go.set()
    results: list[dict[str, Any]] = []
    while len(results) < len(children):
        try:
            results.append(out.get(timeout=5))
        except queue.Empty:
            if any(child.exitcode not in (None, 0) for child in children):
                raise SystemExit("a load generator process failed") from None
    server_cpu = server.cpu() - cpu
    for child in children:
        child.join()
    run = Run(
        requests=len(requests),
        seconds=max(r["ended"] for r in results) - min(r["started"] for r in results),
        latencies=[x for r in results for x in r["latencies"]],
        client_cpu=sum(r["cpu"] for r in results),
        server_cpu=server_cpu,
    )
    for r in results:
        run.statuses.update(r["statuses"])
        run.errors.update(r["errors"])
    return run


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
