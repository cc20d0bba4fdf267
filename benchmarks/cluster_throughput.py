"""Messages per second of a cluster's send: N ``digest worker`` processes, one issue.

PostgreSQL (DIGEST_TEST_POSTGRES_URL), DKIM-signed, against the discarding sink of
``send_throughput.py`` in another process (Postfix's ``smtp-sink``; when it is not
installed the postfix Debian package is fetched with ``apt-get download`` and unpacked
into the run's temporary folder; else an aiosmtpd sink). For each N of ``--workers``:
N workers, worker i pinned to core i (``taskset -c``) while N is at most the number of
cores, else spread by the kernel (two pinned to one core would each get half of it),
``smtp.processes = 1``, ``cluster.send_slots = N`` with two connections per slot;
``digest send`` queues the issue and the figures are read from the ledger:

- messages/s between the first answer and the last (the ledger's times), and the wall
  time from queueing to the issue marked sent. A cluster plans the whole ledger before
  its first slice, ``digest send`` alone plans while it sends: the rates compare the
  sending, the times from start to sent compare the whole;
- each worker's share: the rows it sent (by the senders its send slices registered as,
  host:pid, read from the senders table while the issue goes out);
- the CPU time per message of the workers, of the sink and of the local PostgreSQL (its
  processes' and ended backends' time, from /proc), how busy that keeps the cores, and
  the machine's load average: on a machine shared with other work the figures say as
  much about that work as about digest. Where PostgreSQL and the sink run on the
  workers' cores, the cores' total bounds the rate: N workers reach N times one worker's
  rate only while the cores have room for what PostgreSQL and the sink do per message.

Then ``digest send`` alone (no queue, one process on core 0, two connections) on its
own copy of the same store, for the cluster's overhead. A fresh schema per run.

    DIGEST_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python benchmarks/cluster_throughput.py --workers 1 2 3 --subscribers 20000
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import send_throughput as base  # noqa: E402
from _proc import cpu_seconds, postgres_cpu  # noqa: E402
from _schema import new_schema  # noqa: E402

ROOT = base.ROOT
NL = "wochenueberblick"
WEEK = base.WEEK


def _sink_command(folder: Path) -> tuple[list[str], dict[str, str]] | None:
    """smtp-sink from PATH, /usr/sbin, .venv/postfix, or unpacked into ``folder``."""
    found = shutil.which("smtp-sink") or next(
        (str(p) for p in (Path("/usr/sbin/smtp-sink"), ROOT / ".venv/postfix/usr/sbin/smtp-sink")
         if p.exists()), None,
    )  # fmt: skip
    if found:
        lib = Path(found).parents[2] / "usr/lib/postfix"
        return [found], {"LD_LIBRARY_PATH": str(lib)} if lib.exists() else {}
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        return None
    fetched = subprocess.run(
        ["apt-get", "download", "postfix"], cwd=folder, capture_output=True, timeout=120
    )
    debs = list(folder.glob("postfix_*.deb"))
    if fetched.returncode != 0 or not debs:
        return None
    subprocess.run(["dpkg", "-x", str(debs[0]), str(folder / "postfix")], check=True)
    binary = folder / "postfix/usr/sbin/smtp-sink"
    return [str(binary)], {"LD_LIBRARY_PATH": str(folder / "postfix/usr/lib/postfix")}


def _config(folder: Path, *, pool_size: int, key_file: str | None, slots: int,
            slice_seconds: float, cluster: bool) -> Path:  # fmt: skip
    config = (ROOT / "config.toml").read_text()
    config = config.replace("pool_size = 2\n", f"pool_size = {pool_size}\nprocesses = 1\n", 1)
    if key_file:
        config = config.replace("[store]\n", f'[dkim]\nkey_file = "{key_file}"\n\n[store]\n', 1)
    if cluster:
        config += (
            f'\n[cluster]\nqueue = "procrastinate"\nsend_slots = {slots}\n'
            f"slice_seconds = {slice_seconds}\n"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(config)
    if not (folder / "examples").exists():
        shutil.copytree(ROOT / "examples", folder / "examples")
    return folder / "config.toml"


def _env(store_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= {"DIGEST_STORE_URL": store_url, "DIGEST_SMTP_HOST": "127.0.0.1",
            "DIGEST_SMTP_PORT": str(port), "PYTHONPATH": str(ROOT)}  # fmt: skip
    return env


def _queue_schema(store_url: str) -> None:
    import psycopg
    from procrastinate.schema import SchemaManager

    from digest.cluster.app import conninfo

    with psycopg.connect(conninfo(store_url), autocommit=True) as conn:
        conn.execute(SchemaManager.get_schema())


def _digest(config: Path, env: dict[str, str], *args: str, core: int | None = None) -> Any:
    """``digest ARGS`` started on core ``core`` (taskset), its output to a log file."""
    pin = ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []
    command = [*pin, sys.executable, "-m", "digest.cli", "--config", str(config), *args]
    log = config.parent / f"{args[0]}-{time.monotonic_ns()}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=config.parent, env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    process.log = log  # type: ignore[attr-defined]
    return process


def _finish(process: Any) -> None:
    """Wait for a command; its output as an error when it failed."""
    if process.wait():
        raise RuntimeError(f"digest failed: {process.log.read_text()}")


class Ledger:
    """The issue as the ledger shows it, read through its own engine."""

    def __init__(self, store_url: str) -> None:
        self.engine = create_engine(store_url)
        self.senders: dict[int, str] = {}  # sender id -> host:pid, as seen while sending

    def issue(self) -> tuple[int, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT id, status FROM issues WHERE newsletter = :n AND key = :k"),
                {"n": NL, "k": WEEK},
            ).first()
        return (row.id, row.status) if row else None

    def note_senders(self) -> None:
        with self.engine.connect() as conn:
            for sid, host, pid in conn.execute(text("SELECT id, host, pid FROM senders")):
                self.senders[sid] = f"{host}:{pid}"

    def figures(self, issue_id: int) -> tuple[int, float, Counter[str]]:
        """(messages sent, seconds from the first answer to the last, sent by host:pid)."""
        with self.engine.connect() as conn:
            sent, first, last = conn.execute(
                text("SELECT count(*), min(first_attempt_at), max(updated_at) FROM deliveries "
                     "WHERE issue_id = :i AND state = 'sent'"), {"i": issue_id},
            ).one()  # fmt: skip
            by: Counter[str] = Counter()
            for claimer, n in conn.execute(
                text("SELECT claimed_by, count(*) FROM deliveries WHERE issue_id = :i "
                     "AND state = 'sent' GROUP BY claimed_by"), {"i": issue_id},
            ):  # fmt: skip
                by[self.senders.get(claimer, f"sender {claimer} (not seen)")] += n
        return int(sent), _seconds(first, last), by

    def close(self) -> None:
        self.engine.dispose()


def _seconds(first: Any, last: Any) -> float:
    if first is None or last is None:
        return float("nan")
    if isinstance(first, str):  # stored as text by the store's UTCDateTime on some drivers
        first, last = datetime.fromisoformat(first), datetime.fromisoformat(last)
    return max(1e-3, (last - first).total_seconds())


def _children_cpu() -> float:
    """CPU time of this process's children that have ended and were waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_sent(ledger: Ledger, started: float, on_sending: Any = None,
               timeout: float = 3600) -> tuple[int, float]:  # fmt: skip
    """Poll until the issue is sent, noting the senders; (issue id, wall seconds).

    ``on_sending()`` is called once the issue is seen 'sending' (planned: a cluster's
    plan job marks it so when it queues the slices)."""
    while time.monotonic() - started < timeout:
        ledger.note_senders()
        found = ledger.issue()
        if found is not None and found[1] in ("sending", "sent") and on_sending is not None:
            on_sending()
            on_sending = None
        if found is not None and found[1] == "sent":
            return found[0], time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError("the issue was not sent within the hour")


def run_cluster(base_url: str, sink: Any, tmp: Path, workers: int, subscribers: int,
                key_file: str | None, slice_seconds: float) -> dict[str, Any]:  # fmt: skip
    url, drop = new_schema(base_url)
    ledger = Ledger(url)
    processes: list[Any] = []
    try:
        base.seed(url, subscribers)
        _queue_schema(url)
        config = _config(tmp / f"cluster{workers}", pool_size=2 * workers, key_file=key_file,
                         slots=workers, slice_seconds=slice_seconds, cluster=True)  # fmt: skip
        env = _env(url, sink.port)
        # One core each while there are enough; beyond that, pinning would put two
        # workers on one core beside one alone, so the kernel spreads them instead.
        pinned = workers <= len(os.sched_getaffinity(0))
        processes = [
            _digest(config, env, "worker", core=i if pinned else None) for i in range(workers)
        ]
        time.sleep(3)  # the workers import and connect before the clock starts

        def cpu_now() -> tuple[float, float, float, float]:
            """(monotonic time, CPU seconds of the workers, the sink, PostgreSQL)."""
            workers_cpu = sum(cpu_seconds(p.pid) for p in processes)
            return time.monotonic(), workers_cpu, sink.cpu_seconds(), postgres_cpu()

        marks = [cpu_now()]
        started = marks[0][0]
        _finish(_digest(config, env, "send", NL, "--week", WEEK))
        issue_id, wall = _wait_sent(ledger, started, lambda: marks.append(cpu_now()))
        marks.append(cpu_now())
        sent, seconds, by = ledger.figures(issue_id)
        whole = [b - a for a, b in zip(marks[0], marks[-1], strict=True)]
        sending = [b - a for a, b in zip(marks[-2], marks[-1], strict=True)]
        index = {str(p.pid): i for i, p in enumerate(processes)}
        shares = {
            f"worker {index[who.rsplit(':', 1)[-1]]} ({who})"
            if who.rsplit(":", 1)[-1] in index else who: count
            for who, count in by.items()
        }  # fmt: skip
        return {"sent": sent, "rate": sent / seconds, "wall": wall, "shares": shares,
                "pinned": pinned, "whole": whole, "sending": sending}  # fmt: skip
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        ledger.close()
        drop()


def run_alone(base_url: str, port: int, tmp: Path, subscribers: int,
              key_file: str | None) -> dict[str, Any]:  # fmt: skip
    url, drop = new_schema(base_url)
    ledger = Ledger(url)
    try:
        base.seed(url, subscribers)
        config = _config(tmp / "alone", pool_size=2, key_file=key_file, slots=1,
                         slice_seconds=30, cluster=False)  # fmt: skip
        started = time.monotonic()
        cpu = _children_cpu()
        _finish(_digest(config, _env(url, port), "send", NL, "--week", WEEK, core=0))
        cpu = _children_cpu() - cpu
        issue_id, wall = _wait_sent(ledger, started)
        sent, seconds, _by = ledger.figures(issue_id)
        return {"sent": sent, "rate": sent / seconds, "wall": wall,
                "cpu_ms": 1000 * cpu / max(1, sent)}  # fmt: skip
    finally:
        ledger.close()
        drop()


def _cluster_lines(n: int, f: dict[str, Any], rates: dict[int, float],
                   alone: dict[str, Any] | None, cores: int) -> str:  # fmt: skip
    """What one cluster run measured, as the lines to print."""
    shares = ", ".join(
        f"{who} {count} ({100 * count / max(1, f['sent']):.0f} %)"
        for who, count in sorted(f["shares"].items())
    )
    line = (f"{n} worker{'s' if n > 1 else ' '}: {f['rate']:.0f} messages/s "
            f"({f['sent']} in {f['sent'] / f['rate']:.1f} s; {f['wall']:.1f} s "
            f"from queueing to sent)")  # fmt: skip
    if 1 in rates and n != 1:
        line += f", {f['rate'] / rates[1]:.2f}x one worker"
    if n == 1 and alone:
        line += (f"; against digest send alone: {f['rate'] / alone['rate']:.2f}x "
                 f"its rate, {f['wall'] / alone['wall']:.2f}x its time from start "
                 "to sent")  # fmt: skip
    per = 1000 / max(1, f["sent"])
    _, workers, sink, postgres = f["whole"]
    seconds, *busy = f["sending"]
    most = cores * f["sent"] / max(1e-9, sum(busy))
    placed = "one core each" if f["pinned"] else "spread by the kernel"
    return "\n".join([
        line,
        f"    shares: {shares}",
        f"    CPU per message from queueing to sent (planning included): the workers "
        f"{workers * per:.2f} ms, the sink {sink * per:.2f} ms, PostgreSQL "
        f"{postgres * per:.2f} ms; load average {os.getloadavg()[0]:.1f}",
        f"    while sending ({seconds:.1f} s, workers {placed}): the workers "
        f"{busy[0] * per:.2f} ms, the sink {busy[1] * per:.2f} ms, PostgreSQL "
        f"{busy[2] * per:.2f} ms per message, the {cores} cores "
        f"{100 * sum(busy) / (seconds * cores):.0f} % busy; at that CPU per message the "
        f"cores carry at most {most:.0f} messages/s"
        + (f" ({most / rates[1]:.2f}x one worker)" if 1 in rates else ""),
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--subscribers", type=int, default=20000)
    parser.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    parser.add_argument("--slice-seconds", type=float, default=30)
    parser.add_argument("--no-alone", action="store_true", help="skip `digest send` alone")
    args = parser.parse_args()
    base_url = os.environ.get("DIGEST_TEST_POSTGRES_URL")
    if not base_url:
        sys.exit("set DIGEST_TEST_POSTGRES_URL: a cluster needs PostgreSQL")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        base._smtp_sink = lambda: _sink_command(tmp)  # never into the shared virtualenv
        sink = base.Sink()
        try:
            key_file = base._key(tmp, args.algorithm)
            print(f"sink:        {sink.kind} on 127.0.0.1:{sink.port}")
            print(f"store:       PostgreSQL; {args.subscribers} subscribers; DKIM "
                  f"{args.algorithm if key_file else 'off'}; cores: "
                  f"{len(os.sched_getaffinity(0))}; slices of {args.slice_seconds:.0f} s; "
                  f"two connections per send slot")  # fmt: skip
            alone = None
            if not args.no_alone:
                alone = run_alone(base_url, sink.port, tmp, args.subscribers, key_file)
                load = os.getloadavg()[0]
                print(f"digest send alone: {alone['rate']:.0f} messages/s ({alone['sent']} in "
                      f"{alone['sent'] / alone['rate']:.1f} s; {alone['wall']:.1f} s from "
                      f"start to sent); its CPU {alone['cpu_ms']:.2f} ms per message (its "
                      f"start and planning included); load average {load:.1f}")  # fmt: skip
            rates: dict[int, float] = {}
            cores = len(os.sched_getaffinity(0))
            for n in args.workers:
                f = run_cluster(base_url, sink, tmp, n, args.subscribers, key_file,
                                args.slice_seconds)  # fmt: skip
                rates[n] = f["rate"]
                print(_cluster_lines(n, f, rates, alone, cores))
        finally:
            sink.stop()


if __name__ == "__main__":
    main()
