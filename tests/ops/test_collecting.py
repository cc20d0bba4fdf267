"""Collecting through the week: a feed that keeps only its last items loses none of them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from digest.config import load_settings
from digest.issue.prepare import prepare_issue
from digest.ops import jobs
from tests.sources.test_sources_feed import FeedServer

NL = "wochenueberblick"
SOURCE = "Stadt (RSS)"
BERLIN = ZoneInfo("Europe/Berlin")
# Monday of ISO week 2026-W45, 01:00 in Berlin; an article every 8 hours, 20 in the week.
WEEK_START = datetime(2026, 11, 2, 1, 0, tzinfo=BERLIN).astimezone(UTC)
PUBLISHED = [WEEK_START + timedelta(hours=8 * i) for i in range(20)]
KEEPS = 5  # the feed shows its newest 5 items, as a small WordPress feed does


class ForgetfulFeed:
    """An RSS feed at ``/feed.rss`` showing the newest items published by ``self.now``."""

    def __init__(self, server: FeedServer) -> None:
        self.now = WEEK_START
        self.answers: list[int] = []
        server.routes["/feed.rss"] = self.respond

    def visible(self) -> list[int]:
        published = [i for i, moment in enumerate(PUBLISHED) if moment <= self.now]
        return published[-KEEPS:]

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        shown = self.visible()
        etag = f'"{shown[-1] if shown else "none"}"'
        if handler.headers.get("If-None-Match") == etag:
            self.answers.append(304)
            handler.send_response(304)
            handler.send_header("ETag", etag)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        items = "".join(
            f"<item><title>Meldung {i}</title><link>https://stadt.example/m/{i}</link>"
            f"<guid>https://stadt.example/m/{i}</guid>"
            f"<pubDate>{format_datetime(PUBLISHED[i])}</pubDate>"
            f"<description>Worum es in Meldung {i} geht.</description></item>"
            for i in reversed(shown)
        )
        body = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Stadt</title><link>https://stadt.example/</link>{items}</channel></rss>"
        ).encode()
        self.answers.append(200)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/rss+xml")
        handler.send_header("ETag", etag)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def write_config(tmp_path: Path, store_url: str, feed_url: str, every: int = 60) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""secret_key = "test-secret-of-16-chars"
host_delay = 0

[store]
url = "{store_url}"

[[newsletters]]
id = "{NL}"
name = "Kommune Digital"
sender = "Kommune Digital <news@example.org>"
max_per_category = 50
collect_every_minutes = {every}

[newsletters.impressum]
publisher = "Verlag"
address = "Straße 1, 10115 Berlin"
contact = "redaktion@example.org"
responsible = "E. Mustermann"

[[newsletters.categories]]
key = "politik"
title = "Politik"

[[newsletters.sources]]
name = "{SOURCE}"
url = "{feed_url}"
default_category = "politik"
allow_private = true
"""
    )
    return config


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DIGEST_STORE_URL", "DIGEST_SECRET_KEY", "DIGEST_SMTP_HOST", "DIGEST_SMTP_PORT"):
        monkeypatch.delenv(var, raising=False)


def issue_titles(config: Path, now: datetime) -> list[str]:
    settings = load_settings(config)
    store = jobs.open_store(settings)
    try:
        prepared = prepare_issue(store, settings.newsletter(NL), None, now)
    finally:
        store.close()
    assert prepared is not None
    return sorted(a.title for a in prepared.issue.articles)


@pytest.mark.usefixtures("clean_env")
async def test_collecting_through_the_week_keeps_every_article_a_short_feed_showed(
    tmp_path: Path,
    store_url: str,
    server: FeedServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="digest")
    feed = ForgetfulFeed(server)
    config = write_config(tmp_path, store_url, f"{server.url}/feed.rss", every=360)
    # The collect job as the scheduler runs it, every 6 hours of a week on a fast clock.
    for step in range(7 * 4 + 1):
        feed.now = WEEK_START + timedelta(hours=6 * step)
        await jobs.collect_sources(str(config), NL, now=feed.now)
    # The weekly run on the next Monday composes the week that ended.
    monday = WEEK_START + timedelta(days=7, hours=6)
    assert issue_titles(config, monday) == sorted(f"Meldung {i}" for i in range(20))
    # Unchanged feeds were answered 304 to the conditional GET; nothing looked dropped.
    assert 304 in feed.answers and feed.answers.count(200) < len(feed.answers)
    assert not [r for r in caplog.records if "may have dropped" in r.getMessage()]
    assert any("collected 1 sources" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("clean_env")
async def test_a_feed_that_moved_past_what_was_stored_is_warned_about(
    tmp_path: Path,
    store_url: str,
    server: FeedServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="digest")
    feed = ForgetfulFeed(server)
    config = write_config(tmp_path, store_url, f"{server.url}/feed.rss", every=0)
    feed.now = PUBLISHED[4]  # items 0-4 shown and stored
    [report] = await jobs.collect_sources(str(config), NL, now=feed.now)
    assert report.new == 5 and report.sources[0].warnings == ()
    feed.now = PUBLISHED[14]  # items 10-14 shown: 5 to 9 left the feed unseen
    [report] = await jobs.collect_sources(str(config), NL, now=feed.now)
    [warning] = report.sources[0].warnings
    assert "may have dropped items" in warning
    # Its 5 items span 32 hours: collecting twice within that span is every 16 hours.
    assert "span 32 hours: collect at least every 960 minutes" in warning
    assert f"collect_every_minutes of '{NL}' is 0" in warning
    logged = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in logged] == [f"{NL}: source {SOURCE!r}: {warning}"]
    # One line for the event: the collect itself leaves saying it to its caller.
    assert len([r for r in caplog.records if "may have dropped" in r.getMessage()]) == 1
    # The next collect overlaps what is stored again: no warning.
    feed.now = PUBLISHED[16]
    [report] = await jobs.collect_sources(str(config), NL, now=feed.now)
    assert report.new == 2 and report.sources[0].warnings == ()
