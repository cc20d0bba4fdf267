"""Messages per second over real SMTP to a sink in another process, and what it costs.

Against Postfix's C ``smtp-sink`` on a free loopback port (from PATH or /usr/sbin; else
the postfix Debian package is fetched with ``apt-get download`` and unpacked into
.venv/postfix, nothing installed; else an aiosmtpd sink in another process, and the
output says so):

(a) the client ceiling: one prepared message's bytes sent again and again with bare
    aiosmtplib over the same number of connections as (b);
(b) the full ``digest send`` path for N recipients over several segments, DKIM-signed,
    with the ledger on SQLite, and again on PostgreSQL when DIGEST_TEST_POSTGRES_URL is
    set: messages/s, b/a, peak RSS of the sending process, time to the first message,
    and how many distinct variants (articles and locale) were compiled;
(c) the variant cache for the same audience (demo-like: the demo lists, one to five
    categories, none to two of several regions, one reader in ten in English and one in
    ten in a language without texts): distinct variants against the readers' distinct
    choices, and the seconds it takes to cut and compile them for every recipient;
``--million``: the same path for 1,000,000 recipients, stopped after ``--seconds``:
    peak RSS and time to the first message (planning and streaming the ledger).

    .venv/bin/python benchmarks/send_throughput.py --subscribers 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy import text

from digest.config import load_settings
from digest.delivery.capture import LocalSmtpServer
from digest.delivery.relays import open_transport
from digest.delivery.senders import sender_processes
from digest.ops import jobs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_seconds, free_port  # noqa: E402
from _schema import new_schema  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
WEEK = "2025-W05"
LISTS = ["allgemein", "bayern", "it-leitungen"]
REGIONS = ["Bayern", "Hessen", "Sachsen", "Hamburg"]
#: Readers' own locales: English for one in ten, a language without texts (falls back
#: to the newsletter's) for one in ten, none of their own for the rest.
LOCALES = {0: "en_GB", 5: "fr_FR"}


# --- the sink ----------------------------------------------------------------------------


def _smtp_sink() -> tuple[list[str], dict[str, str]] | None:
    """The smtp-sink command and its environment, or None."""
    found = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
    )
    if found:
        return [found], {}
    unpacked = ROOT / ".venv" / "postfix"
    binary = unpacked / "usr/sbin/smtp-sink"
    if not binary.exists() and shutil.which("apt-get") and shutil.which("dpkg"):
        with tempfile.TemporaryDirectory() as tmp:
            fetched = subprocess.run(
                ["apt-get", "download", "postfix"], cwd=tmp, capture_output=True, timeout=120
            )
            debs = list(Path(tmp).glob("postfix_*.deb"))
            if fetched.returncode == 0 and debs:
                subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True)
    if binary.exists():
        return [str(binary)], {"LD_LIBRARY_PATH": str(unpacked / "usr/lib/postfix")}
    return None


class _Discard:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 2.0.0 Ok: discarded"


def _aiosmtpd_sink(port: int) -> None:
    async def main() -> None:
        async with LocalSmtpServer(_Discard(), port=port):
            await asyncio.Event().wait()

    asyncio.run(main())


class Sink:
    """A discarding SMTP server in another process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.kind = "aiosmtpd (smtp-sink not available)"
        self._process: subprocess.Popen[bytes] | None = None
        self._child: multiprocessing.Process | None = None
        sink = _smtp_sink()
        if sink is not None:
            command, env = sink
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            self._process = subprocess.Popen(
                [*command, *user, f"127.0.0.1:{self.port}", "1024"],
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.kind = f"Postfix smtp-sink ({command[0]})"
        else:
            self._child = multiprocessing.Process(
                target=_aiosmtpd_sink, args=(self.port,), daemon=True
            )
            self._child.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time the sink has used so far (user and system; 0 where /proc is missing)."""
        pid = self._process.pid if self._process is not None else self._child and self._child.pid
        return cpu_seconds(pid) if pid else 0.0

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()
        if self._child is not None:
            self._child.terminate()


# --- the world ---------------------------------------------------------------------------


def _settings(store_url: str, port: int, pool_size: int, key_file: str | None) -> Any:
    settings = load_settings(ROOT / "config.toml", environ={"DIGEST_STORE_URL": store_url})
    settings = replace(settings, smtp=replace(settings.smtp, port=port, pool_size=pool_size))
    if key_file and hasattr(settings, "dkim"):
        settings = replace(settings, dkim=replace(settings.dkim, key_file=key_file))
    return settings


def seed(store_url: str, subscribers: int) -> float:
    """N subscribers over the demo lists with varied interests; the seconds it took."""
    from digest.store import schema as t

    settings = _settings(store_url, 25, 1, None)
    store = jobs.open_store(settings)
    started = time.perf_counter()
    newsletter = settings.newsletters[0]
    categories = [c.key for c in newsletter.categories]
    now = datetime.now(UTC)
    chunk = 5000
    with store.engine.begin() as conn:
        for start in range(0, subscribers, chunk):
            rows = [
                {
                    "email": f"leser{n}@example.org",
                    "email_key": f"leser{n}@example.org",
                    "name": f"Leserin {n}",
                    # Categories, regions, lists (below) and locale vary independently.
                    "locale": LOCALES.get((n // 45) % 10),
                    "categories": categories[: 1 + n % len(categories)],
                    "regions": REGIONS[: (n // 5) % 3],
                    "status": "active",
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(start, min(start + chunk, subscribers))
            ]
            conn.execute(t.subscribers.insert(), rows)
        ids = conn.execute(text("SELECT id FROM subscribers ORDER BY id")).scalars().all()
        for start in range(0, len(ids), chunk):
            conn.execute(
                t.memberships.insert(),
                [
                    {"subscriber_id": sid, "list_name": LISTS[i // 15 % 3], "created_at": now}
                    for i, sid in enumerate(ids[start : start + chunk], start)
                ],
            )
    asyncio.run(jobs.collect(settings, store, newsletter.id, now=NOW))
    store.close()
    return time.perf_counter() - started


def _peak_rss_mb(pid: str = "self") -> float:
    """A process's own peak resident set in MB (0 when it is gone).

    Not ``ru_maxrss`` where /proc exists: a "spawn" child begins there with its parent's
    peak (the kernel carries the replaced address space's high-water mark across exec), so
    the sending child would report this driver's own peak, e.g. seeding 1,000,000
    subscribers. VmHWM belongs to the child's address space alone.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        if pid != "self":
            return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _HelperPeak(threading.Thread):
    """The largest peak RSS among this process's children (the sender's helpers),
    read from /proc every 0.2 s while they live (VmHWM only grows)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            for task in Path("/proc/self/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    for pid in task.read_text().split():
                        self.peak = max(self.peak, _peak_rss_mb(pid))


def _send_child(store_url: str, port: int, pool_size: int, key_file: str | None,
                seconds: float | None, processes: int, out: Any) -> None:  # fmt: skip
    """Run in a fresh process: ``digest send``'s path, figures to ``out``."""

    async def main() -> dict[str, float]:
        settings = _settings(store_url, port, pool_size, key_file)
        store = jobs.open_store(settings)
        pool = open_transport(settings.smtp)
        first: list[float] = []

        def progress(done: int, total: int) -> None:
            # Called when a message of this process has its answer: the first one is
            # the first of the send (helpers start a second later).
            if not first:
                first.append(time.perf_counter())

        helpers = _HelperPeak()
        helpers.start()
        started = time.perf_counter()
        cpu_before = sum(
            r.ru_utime + r.ru_stime
            for r in (
                resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN),
            )
        )
        sent = variants = 0
        try:
            send = jobs.send(
                settings, store, settings.newsletters[0], WEEK, pool, now=NOW,
                progress=progress, processes=processes,
            )  # fmt: skip
            if seconds is None:
                report = await send
                assert report is not None and not report.stopped, report
                sent, variants = report.sent, report.variants
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(send, seconds)
                record = store.get_issue(settings.newsletters[0].id, WEEK)
                assert record is not None
                sent = store.delivery_counts(record.id).get("sent", 0)
        finally:
            await pool.close()
            store.close()
        elapsed = time.perf_counter() - started
        helpers.done.set()
        helpers.join()
        # Helpers are waited for inside the send, so their CPU time is in RUSAGE_CHILDREN.
        cpu = sum(
            r.ru_utime + r.ru_stime
            for r in (
                resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN),
            )
        )
        return {
            "cpu_ms": 1000 * (cpu - cpu_before) / max(1, sent),
            "sent": sent,
            "seconds": elapsed,
            "first": (first[0] - started) if first else float("nan"),
            "rss_mb": _peak_rss_mb(),
            "helper_rss_mb": helpers.peak,
            "variants": variants,
        }

    out.put(asyncio.run(main()))


def measure_send(store_url: str, port: int, pool_size: int, key_file: str | None,
                 processes: int, seconds: float | None = None) -> dict[str, float]:  # fmt: skip
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(
        target=_send_child, args=(store_url, port, pool_size, key_file, seconds, processes, out)
    )
    child.start()
    figures: dict[str, float] = out.get(timeout=3600)
    child.join()
    return figures


# --- (c) the variant cache --------------------------------------------------------------


def measure_variants(store_url: str) -> dict[str, float]:
    """Every recipient's variant as the send finds it: how many distinct ones, for how
    many recipients and distinct choices, and the seconds to cut and compile them."""
    from digest.audience.segments import recipients_for, segment_lists
    from digest.issue.prepare import prepare_issue
    from digest.message.personalize import Personalizer

    settings = _settings(store_url, 25, 1, None)
    store = jobs.open_store(settings)
    newsletter = settings.newsletters[0]
    prepared = prepare_issue(store, newsletter, WEEK, NOW, save=False)
    assert prepared is not None
    subscribers = store.active_subscribers(segment_lists(newsletter))
    store.close()
    recipients = recipients_for(newsletter, subscribers)
    personalizer = Personalizer(settings, newsletter, prepared.issue, NOW)
    started = time.perf_counter()
    found = [personalizer.variant_for(r) for r in recipients]
    seconds = time.perf_counter() - started
    variants = {v.content_key: v for v in found if v is not None}
    choices = {(r.rules, r.subscriber.locale) for r in recipients}
    return {
        "recipients": len(recipients),
        "empty": found.count(None),
        "choices": len(choices),
        "variants": personalizer.variants,
        "article_sets": len({tuple(a.uid for a in v.issue.articles) for v in variants.values()}),
        "seconds": seconds,
    }


def print_variants(store_url: str) -> None:
    v = measure_variants(store_url)
    print(
        f"(c) variants: {v['variants']:.0f} distinct (articles, locale), "
        f"{v['article_sets']:.0f} distinct article sets, for "
        f"{v['recipients']:.0f} recipients ({v['empty']:.0f} with nothing for their "
        f"interests) over {v['choices']:.0f} distinct choices (rules, stored locale); cut "
        f"and compiled in {v['seconds']:.2f} s, "
        f"{v['recipients'] / max(1, v['variants']):.0f} recipients per variant"
    )


# --- (a) the client ceiling --------------------------------------------------------------


def sample_message(store_url: str, key_file: str | None) -> tuple[str, str, bytes]:
    """One recipient's message as the send path makes it (signed when it signs)."""
    from digest.audience.segments import recipients_for, segment_lists
    from digest.issue.prepare import prepare_issue
    from digest.message.personalize import Personalizer

    settings = _settings(store_url, 25, 1, key_file)
    store = jobs.open_store(settings)
    newsletter = settings.newsletters[0]
    prepared = prepare_issue(store, newsletter, WEEK, NOW, save=False)
    assert prepared is not None
    first = store.active_subscribers(segment_lists(newsletter))[:100]
    store.close()
    personalizer = Personalizer(settings, newsletter, prepared.issue, NOW)
    recipient, variant = next(
        (r, v) for r in recipients_for(newsletter, first) if (v := personalizer.variant_for(r))
    )
    if hasattr(personalizer, "fast_message_for"):
        from digest.message.dkim import signer_for

        message = personalizer.fast_message_for(
            recipient, variant, "<bench@example.org>",
            envelope_from=parseaddr(newsletter.sender)[1],
            signer=signer_for(settings, newsletter.sender_domain),
        )  # fmt: skip
    else:
        message = personalizer.message_for(recipient, variant, "<bench@example.org>")
    return message.sender, message.recipient, message.data


async def client_ceiling(port: int, connections: int, total: int, sample: tuple[str, str, bytes]
                         ) -> float:  # fmt: skip
    sender, recipient, data = sample
    left = total

    async def one() -> None:
        nonlocal left
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await smtp.connect()
        while left > 0:
            left -= 1
            await smtp.sendmail(sender, [recipient], data)
        await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return total / (time.perf_counter() - started)


# --- the run ----------------------------------------------------------------------------


def _key(tmp: Path, algorithm: str) -> str | None:
    try:
        from digest.message.dkim import generate_key, private_pem
    except ImportError:
        return None  # code without DKIM: unsigned
    path = tmp / f"{algorithm}.key"
    path.write_bytes(private_pem(generate_key(algorithm)))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20000)
    parser.add_argument("--pool-size", type=int, default=2)
    parser.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 recipients")
    parser.add_argument(
        "--seconds", type=float, default=20, help="how long the --million run sends"
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--variants-only", action="store_true", help="only (c), no sending")
    parser.add_argument(
        "--processes", type=int, default=0, help="sender processes (smtp.processes; 0: per core)"
    )
    args = parser.parse_args()
    if args.variants_only:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/bench.db"
            seeded = seed(url, args.subscribers)
            print(f"seeded:       {args.subscribers} subscribers in {seeded:.1f} s")
            print_variants(url)
        return
    sink = Sink()
    try:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            key_file = _key(tmp, args.algorithm)
            signed = f"DKIM {args.algorithm}" if key_file else "unsigned (no DKIM in this code)"
            print(f"sink:         {sink.kind} on 127.0.0.1:{sink.port}")
            probe = _settings("sqlite://", sink.port, args.pool_size, None).smtp
            senders = sender_processes(probe, args.processes)
            print(
                f"connections:  {args.pool_size} in all; sender processes: {senders}; "
                f"signing: {signed}; cores: {os.cpu_count()}"
            )
            url = f"sqlite:///{tmp}/bench.db"
            seeded = seed(url, args.subscribers)
            print(f"seeded:       {args.subscribers} subscribers in {seeded:.1f} s")
            sample = sample_message(url, key_file)
            total = max(2000, min(args.subscribers, 20000))
            # The best of three: the ceiling is what the client reaches at its best (a
            # single try swung by half with whatever else the machine did that second).
            tries = [
                asyncio.run(client_ceiling(sink.port, args.pool_size, total, sample))
                for _ in range(3)
            ]
            ceiling = max(tries)
            print(f"(a) ceiling:  {ceiling:.0f} messages/s (bare aiosmtplib, same bytes, "
                  f"{len(sample[2]) / 1024:.0f} KB; best of "
                  f"{', '.join(f'{t:.0f}' for t in tries)})")  # fmt: skip
            stores = [("sqlite", url)]
            drops = []
            base = os.environ.get("DIGEST_TEST_POSTGRES_URL")
            if base and not args.no_postgres:
                pg_url, drop = new_schema(base)
                drops.append(drop)
                seed(pg_url, args.subscribers)
                stores.append(("postgresql", pg_url))
            rates = {}
            for name, store_url in stores:
                sink_cpu = sink.cpu_seconds()
                f = measure_send(store_url, sink.port, args.pool_size, key_file, args.processes)
                sink_cpu = sink.cpu_seconds() - sink_cpu
                rates[name] = f["sent"] / f["seconds"]
                print(
                    f"(b) {name + ':':11} {rates[name]:.0f} messages/s ({f['sent']:.0f} in "
                    f"{f['seconds']:.1f} s), b/a {rates[name] / ceiling:.2f}, peak RSS "
                    f"{f['rss_mb']:.0f} MB (largest helper {f['helper_rss_mb']:.0f} MB), "
                    f"first message after {f['first']:.2f} s, CPU {f['cpu_ms']:.2f} ms "
                    f"per message (all sender processes; the sink "
                    f"{1000 * sink_cpu / max(1, f['sent']):.2f} ms), "
                    f"{f['variants']:.0f} distinct variants"
                )
            print_variants(url)
            if "postgresql" in rates:
                print(f"PostgreSQL/SQLite: {rates['postgresql'] / rates['sqlite']:.2f}")
            if args.million:
                million = f"sqlite:///{tmp}/million.db"
                seeded = seed(million, 1_000_000)
                print(f"seeded:       1000000 subscribers in {seeded:.1f} s")
                f = measure_send(
                    million, sink.port, args.pool_size, key_file, args.processes, args.seconds
                )
                print(
                    f"1,000,000:    first message after {f['first']:.2f} s, peak RSS "
                    f"{f['rss_mb']:.0f} MB (largest helper {f['helper_rss_mb']:.0f} MB), "
                    f"{f['sent']:.0f} sent in {f['seconds']:.0f} s "
                    f"({f['sent'] / f['seconds']:.0f}/s)"
                )
            for drop in drops:
                drop()
    finally:
        sink.stop()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
