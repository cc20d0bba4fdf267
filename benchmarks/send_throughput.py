"""Send the demo issue to N synthetic subscribers over real SMTP and print the figures.

The SMTP sink runs in a separate process (aiosmtpd, discards each message), so the
sender has a core of its own, as against a real relay.

    .venv/bin/python benchmarks/send_throughput.py --subscribers 2000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from digest import jobs
from digest.config import load_settings
from digest.models import Subscriber
from digest.transport import LocalSmtpServer, SmtpPool

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)


class _Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 2.0.0 Ok: discarded"


def _serve(port_queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        async with LocalSmtpServer(_Sink()) as server:
            port_queue.put(server.port)
            await asyncio.Event().wait()

    asyncio.run(main())


async def run(subscribers: int, pool_size: int, store_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = store_url or f"sqlite:///{tmp}/bench.db"
        settings = load_settings(ROOT / "config.toml", environ={"DIGEST_STORE_URL": url})
        newsletter = settings.newsletters[0]
        store = jobs.open_store(settings)
        categories = [c.key for c in newsletter.categories]
        regions = ["Bayern", "Hessen", "Sachsen", "Hamburg"]
        started = time.perf_counter()
        lists = ["allgemein", "bayern", "it-leitungen"]
        for n in range(subscribers):
            store.save_subscriber(
                Subscriber(
                    f"leser{n}@example.org",
                    f"Leserin {n}",
                    categories=frozenset(categories[: 1 + n % len(categories)]),
                    regions=frozenset(regions[: n % 3]),
                ),
                [lists[n % len(lists)]],
            )
        seeded = time.perf_counter() - started
        await jobs.collect(settings, store, newsletter.id, now=NOW)

        queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        sink = multiprocessing.Process(target=_serve, args=(queue,), daemon=True)
        sink.start()
        port = queue.get(timeout=30)
        smtp = replace(settings.smtp, port=port, pool_size=pool_size)
        settings = replace(settings, smtp=smtp)
        pool = SmtpPool(smtp)
        started = time.perf_counter()
        try:
            report = await jobs.send(settings, store, newsletter, "2025-W05", pool, now=NOW)
        finally:
            await pool.close()
            sink.terminate()
        elapsed = time.perf_counter() - started
        store.close()
    assert report is not None
    print(f"store:        {url.split('://')[0]}")
    print(f"subscribers:  {subscribers} (seeded in {seeded:.1f} s)")
    print(f"pool size:    {pool_size}")
    print(f"sent:         {report.sent}, skipped {report.skipped}, variants {report.variants}")
    print(f"send time:    {elapsed:.2f} s")
    print(f"throughput:   {report.sent / elapsed:.0f} messages/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--store-url", help="database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    asyncio.run(run(args.subscribers, args.pool_size, args.store_url))


if __name__ == "__main__":
    main()
