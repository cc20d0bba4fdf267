"""Time the pages of the editors' area on the demo newsletter and print figures.

The shipped config.toml with its store in a temporary SQLite file, the demo feeds
collected, an editor logged in, and each page asked for --repeat times through the app
in this process (no network, no browser). The preview counts as a browser loads it: the
page and both of its frames.

    .venv/bin/python benchmarks/admin_pages.py --repeat 10
    .venv/bin/python benchmarks/admin_pages.py --profile preview
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from digest.config import load_settings
from digest.core.models import Subscriber
from digest.issue.editors import add_editor
from digest.ops import jobs
from digest.web import routing
from digest.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
NL = "wochenueberblick"
WEEK = "2025-W05"
COLLECTED = datetime(2025, 2, 3, 6, tzinfo=UTC)
PASSWORD = "benchmark password"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
FRAME = re.compile(r'<iframe[^>]* src="([^"]+)"')


async def fetch_page(http: httpx.AsyncClient, path: str) -> None:
    """One page and, as a browser would, every frame it shows."""
    page = await http.get(path)
    assert page.status_code == 200, (path, page.status_code)
    for src in FRAME.findall(page.text):
        frame = await http.get(src.replace("&amp;", "&"))
        assert frame.status_code == 200, (src, frame.status_code)


async def profiled(http: httpx.AsyncClient, path: str) -> None:
    """Print where one load of ``path`` spends its time, in the threads pages run in."""
    profiles: list[cProfile.Profile] = []
    original = routing.run_in_threadpool

    async def run_profiled(func: Callable[..., Any], *args: Any) -> Any:
        profiler = cProfile.Profile()
        profiles.append(profiler)
        return await original(profiler.runcall, func, *args)

    routing.run_in_threadpool = run_profiled
    try:
        await fetch_page(http, path)
    finally:
        routing.run_in_threadpool = original
    stats = pstats.Stats(profiles[0])
    for more in profiles[1:]:
        stats.add(more)
    stats.sort_stats("cumulative").print_stats(30)


async def run(repeat: int, readers: int, profile: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            ROOT / "config.toml", environ={"DIGEST_STORE_URL": f"sqlite:///{tmp}/bench.db"}
        )
        settings = replace(settings, outbox=Path(tmp) / "outbox")
        store = jobs.open_store(settings)
        try:
            await jobs.collect(settings, store, NL, now=COLLECTED)
            add_editor(store, "bench", "bench@example.org", PASSWORD)
            for n in range(readers):
                lists = ["allgemein"] if n % 2 else ["bayern"]
                store.save_subscriber(Subscriber(f"leser{n}@example.org", f"Leser {n}"), lists)
            app = create_app(settings, store, login_delay=0)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=settings.public_url) as http:
                form = await http.get("/admin/login")
                done = await http.post(
                    "/admin/login",
                    data={
                        "csrf": CSRF.findall(form.text)[0],
                        "name": "bench",
                        "password": PASSWORD,
                        "next": "/admin/",
                    },
                )
                assert done.status_code == 303, done.text
                pages = {
                    "login": "/admin/login",
                    "overview": "/admin/",
                    "issue": f"/admin/{NL}/{WEEK}",
                    "preview": f"/admin/{NL}/{WEEK}/preview?segment=bayern",
                    "test": f"/admin/{NL}/{WEEK}/test",
                }
                for name, path in pages.items():
                    await fetch_page(http, path)  # warm: templates compiled, caches filled
                    if profile == name:
                        await profiled(http, path)
                    times, cpu = [], []
                    for _ in range(repeat):
                        started, used = time.perf_counter(), time.process_time()
                        await fetch_page(http, path)
                        times.append(time.perf_counter() - started)
                        cpu.append(time.process_time() - used)
                    print(
                        f"{name:9} median {statistics.median(times) * 1000:7.1f} ms   "
                        f"max {max(times) * 1000:7.1f} ms   "
                        f"CPU median {statistics.median(cpu) * 1000:7.1f} ms   ({repeat} times)"
                    )
        finally:
            store.close()
    print(f"readers: {readers}, store: sqlite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--profile", help="print a cProfile of one load of this page")
    args = parser.parse_args()
    asyncio.run(run(args.repeat, args.readers, args.profile))


if __name__ == "__main__":
    main()
