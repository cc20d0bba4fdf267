"""Counted article links ``/r/<token>`` through the ASGI app in-process, and the tally."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, date, datetime

import httpx
import pytest
from sqlalchemy import select

from digest.audience.tokens import (
    MAIL,
    UNSUBSCRIBE,
    WEB,
    click_url,
    make_click_token,
    make_token,
)
from digest.config import Settings
from digest.core.models import Issue
from digest.issue.prepare import prepare_issue
from digest.ops import jobs
from digest.store import Store
from digest.store import schema as t
from digest.store.clicks import READ, SCANNER, ClickKey
from digest.web.app import create_app
from digest.web.clicks import ClickTally
from digest.web.logs import redact_tokens

NL = "wochenueberblick"
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, tzinfo=UTC)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
DAY = date(2025, 2, 3)


# --- the tally: times are given, nothing waits ----------------------------------------------


def test_a_click_is_a_read_and_a_double_click_counts_once() -> None:
    tally = ClickTally(gap=1.0)
    tally.note(b"a", 1, 10, MAIL, DAY, scanner=False, at=100.0)
    tally.note(b"a", 1, 10, MAIL, DAY, scanner=False, at=100.3)  # the same link again
    tally.note(b"b", 1, 11, MAIL, DAY, scanner=False, at=100.2)  # another reader
    assert tally.take(100.5) == {}  # both bursts may still grow
    assert tally.take(101.5) == {
        ClickKey(1, 10, DAY, MAIL, READ): 1,
        ClickKey(1, 11, DAY, MAIL, READ): 1,
    }
    assert tally.take(200.0) == {}


def test_links_to_several_articles_at_once_are_a_scanner() -> None:
    tally = ClickTally(gap=1.0)
    for n, article in enumerate((10, 11, 12, 10)):
        tally.note(b"gateway", 1, article, MAIL, DAY, scanner=False, at=100.0 + 0.2 * n)
    # Later, one link at a time from the same client: reads.
    tally.note(b"gateway", 1, 12, MAIL, DAY, scanner=False, at=105.0)
    tally.note(b"gateway", 1, 11, MAIL, DAY, scanner=False, at=107.0)
    tally.note(b"x", 1, 10, WEB, DAY, scanner=True, at=107.0)  # a HEAD, say
    assert tally.take(110.0) == {
        ClickKey(1, 10, DAY, MAIL, SCANNER): 2,
        ClickKey(1, 11, DAY, MAIL, SCANNER): 1,
        ClickKey(1, 12, DAY, MAIL, SCANNER): 1,
        ClickKey(1, 12, DAY, MAIL, READ): 1,
        ClickKey(1, 11, DAY, MAIL, READ): 1,
        ClickKey(1, 10, DAY, WEB, SCANNER): 1,
    }


def test_a_burst_ends_after_the_longest_and_everything_settles_at_the_end() -> None:
    tally = ClickTally(gap=1.0, longest=3.0)
    for n in range(10):  # the same link every half second
        tally.note(b"a", 1, 10, MAIL, DAY, scanner=False, at=100.0 + 0.5 * n)
    tally.note(b"b", 2, 20, MAIL, DAY, scanner=False, at=104.5)
    assert tally.take(104.6) == {ClickKey(1, 10, DAY, MAIL, READ): 1}
    assert tally.take(104.6, everything=True) == {
        ClickKey(1, 10, DAY, MAIL, READ): 1,
        ClickKey(2, 20, DAY, MAIL, READ): 1,
    }


def test_counts_that_could_not_be_stored_are_taken_again() -> None:
    tally = ClickTally()
    tally.note(b"a", 1, 10, MAIL, DAY, scanner=True, at=1.0)
    counts = tally.take(2.0)
    tally.give_back(counts)
    tally.note(b"a", 1, 10, MAIL, DAY, scanner=True, at=3.0)
    assert tally.take(4.0) == {ClickKey(1, 10, DAY, MAIL, SCANNER): 2}


# --- the endpoint ------------------------------------------------------------------------------


@pytest.fixture
async def sent(demo_settings: Settings, store: Store) -> Issue:
    """The demo week composed and saved, as the send leaves it."""
    await jobs.collect(demo_settings, store, NL, now=NOW)
    prepared = prepare_issue(store, demo_settings.newsletter(NL), WEEK, NOW)
    assert prepared is not None and prepared.record is not None
    return prepared.issue


@asynccontextmanager
async def serving(settings: Settings, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (the counts are written when it ends)."""
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 4711))
        async with httpx.AsyncClient(transport=transport, base_url=settings.public_url) as client:
            yield client


def _stored(store: Store) -> dict[tuple[str, str, str], int]:
    """(article uid, channel, kind) → count."""
    c, a = t.click_counts.c, t.articles.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(a.uid, c.channel, c.kind, c.count).join(t.articles, a.id == c.article_id)
        ).all()
    return {(r.uid, r.channel, r.kind): r.count for r in rows}


async def test_a_valid_link_redirects_to_the_article_as_the_digest_had_it(
    demo_settings: Settings, store: Store, sent: Issue
) -> None:
    [first, second] = [s.items[0] for s in sent.sections[:2]]
    async with serving(demo_settings, store) as client:
        for item, channel in ((first, MAIL), (second, WEB)):
            url = click_url(demo_settings, NL, WEEK, item.article.uid, channel)
            answer = await client.get(url, headers={"User-Agent": BROWSER})
            assert answer.status_code == 302
            assert answer.headers["location"] == item.url  # with the UTM parameters
            assert "utm_campaign=wochenueberblick-2025-W05" in item.url
            assert answer.headers["cache-control"] == "no-store"
            assert "set-cookie" not in answer.headers
    assert _stored(store) == {
        (first.article.uid, MAIL, READ): 1,
        (second.article.uid, WEB, READ): 1,
    }


async def test_forged_altered_and_foreign_tokens_are_a_404_page(
    demo_settings: Settings, store: Store, sent: Issue
) -> None:
    item = sent.sections[0].items[0]
    good = make_click_token(demo_settings.secret_key, NL, WEEK, item.article.uid, MAIL)
    altered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    payload, signature = good.split(".")
    other = make_click_token(demo_settings.secret_key, NL, "2025-W06", item.article.uid, MAIL)
    bad = [
        altered,
        other.split(".")[0] + "." + signature,  # another payload under this signature
        make_click_token("another-secret-key-0123456789", NL, WEEK, item.article.uid, MAIL),
        # Validly signed, but for an article the issue did not carry, or no such issue.
        make_click_token(demo_settings.secret_key, NL, WEEK, "https://evil.example/", MAIL),
        other,
        make_click_token(demo_settings.secret_key, "gibt-es-nicht", WEEK, item.article.uid, MAIL),
        make_token(demo_settings.secret_key, UNSUBSCRIBE, 1, NL),  # another purpose
        "x",
    ]
    async with serving(demo_settings, store) as client:
        for token in bad:
            answer = await client.get(f"/r/{token}", headers={"User-Agent": BROWSER})
            assert answer.status_code == 404, token
            assert "location" not in answer.headers
            assert "Seite nicht gefunden" in answer.text
        # The link written otherwise than it is made: the 404 page too.
        for path in (f"/r//{good}", f"/%72/{good}", f"/r/{payload}%2E{signature}"):
            answer = await client.get(path, headers={"User-Agent": BROWSER})
            assert answer.status_code == 404, path
        answer = await client.post(f"/r/{good}", headers={"User-Agent": BROWSER})
        assert answer.status_code == 405
    assert _stored(store) == {}


async def test_scanner_shaped_requests_redirect_but_are_not_reads(
    demo_settings: Settings, store: Store, sent: Issue
) -> None:
    items = [item for section in sent.sections for item in section.items]
    assert len(items) >= 4
    links = [click_url(demo_settings, NL, WEEK, i.article.uid, MAIL) for i in items]
    async with serving(demo_settings, store) as client:
        assert (await client.head(links[0], headers={"User-Agent": BROWSER})).status_code == 302
        for agent in ("", "Mozilla/5.0 (compatible; Barracuda Sentinel)", "python-httpx/0.28"):
            answer = await client.get(links[1], headers={"User-Agent": agent})
            assert answer.status_code == 302
        prefetch = {"User-Agent": BROWSER, "Sec-Purpose": "prefetch"}
        assert (await client.get(links[2], headers=prefetch)).status_code == 302
        # A gateway with a browser's user agent fetching every link of the message at once.
        for link in links:
            answer = await client.get(link, headers={"User-Agent": BROWSER + " Gateway"})
            assert answer.status_code == 302
    counted = _stored(store)
    assert not [key for key in counted if key[2] == READ], counted
    assert sum(counted.values()) == 1 + 3 + 1 + len(links)


async def test_without_click_counts_links_still_redirect_and_nothing_is_counted(
    demo_settings: Settings, store: Store, sent: Issue
) -> None:
    newsletter = replace(demo_settings.newsletter(NL), click_counts=False)
    settings = replace(demo_settings, newsletters=(newsletter,))
    item = sent.sections[0].items[0]
    async with serving(settings, store) as client:
        url = click_url(settings, NL, WEEK, item.article.uid, MAIL)
        answer = await client.get(url, headers={"User-Agent": BROWSER})
        assert answer.status_code == 302 and answer.headers["location"] == item.url
    assert _stored(store) == {}


def test_a_click_token_never_reaches_a_log_line() -> None:
    line = '198.51.100.7:4711 - "GET /r/WyJ3b2NoZW4iXQ.abc HTTP/1.1" 302'
    assert redact_tokens(line) == '198.51.100.7:4711 - "GET /r/[token] HTTP/1.1" 302'
