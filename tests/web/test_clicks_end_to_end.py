"""Clicks end to end: a real send into aiosmtpd, the links of the received messages
followed over HTTP against the app served by uvicorn, the counts in the store.

Readers' clicks count per article; a gateway fetching every link of a message at once,
a HEAD and an altered token do not; the archive page's links count as web. The click
table holds counts only (its schema and its rows are read), and following links writes
nothing anywhere else.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import inspect, select

from digest.audience.tokens import MAIL, WEB, article_ref, read_click_token
from digest.config import Settings
from digest.core.models import Subscriber
from digest.delivery.transport import SmtpPool
from digest.ops import jobs
from digest.store import Store
from digest.store import schema as t
from tests.smtp_server import RecordingServer

NL = "wochenueberblick"
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, tzinfo=UTC)
COUNTED = re.compile(r"http://127\.0\.0\.1:\d+/r/[A-Za-z0-9_.-]+")
GATEWAY = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


def browser(n: int) -> dict[str, str]:
    """A reader's browser: its own user agent, so each reader is a client of their own."""
    return {"User-Agent": f"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/{n}"}


def parts(data: bytes) -> tuple[str, str]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    html = message.get_body(preferencelist=("html",))
    text = message.get_body(preferencelist=("plain",))
    assert html is not None and text is not None
    return html.get_content(), text.get_content()


def snapshot(store: Store, leave_out: str) -> dict[str, list[tuple[Any, ...]]]:
    with store.engine.connect() as conn:
        return {
            name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
            for name, table in t.metadata.tables.items()
            if name != leave_out
        }


@asynccontextmanager
async def served(settings: Settings, store: Store) -> AsyncIterator[None]:
    import uvicorn

    from digest.web.app import create_app

    port = int(settings.public_url.rsplit(":", 1)[1])
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, store), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        await serving  # the lifespan's end writes the counts


async def test_links_of_received_messages_are_counted_per_article(
    demo_settings: Settings, store: Store
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    newsletter = demo_settings.newsletter(NL)
    assert newsletter.click_counts and newsletter.archive  # the demo's settings
    await jobs.collect(demo_settings, store, NL, now=NOW)
    readers = [f"leser{n}@example.org" for n in range(3)]
    for address in readers:
        store.save_subscriber(Subscriber(address, "Leser"), ["allgemein"])
    async with RecordingServer() as smtp:
        settings = replace(
            demo_settings, public_url=f"http://127.0.0.1:{port}", smtp=smtp.settings()
        )
        pool = SmtpPool(settings.smtp)
        try:
            report = await jobs.send(settings, store, newsletter, WEEK, pool, now=NOW)
        finally:
            await pool.close()
        assert report is not None and report.sent == 3
        received = {rcpt[0]: parts(data) for _from, rcpt, data in smtp.messages}
    assert set(received) == set(readers)
    record = store.get_issue(NL, WEEK)
    assert record is not None

    # Every reader got the same counted links, and nothing else points at an article.
    def ref(url: str) -> str:
        return read_click_token(settings.secret_key, url.rsplit("/", 1)[1]).article

    links = {address: COUNTED.findall(html + text) for address, (html, text) in received.items()}
    assert len({tuple(sorted(set(found))) for found in links.values()}) == 1
    unique = list(dict.fromkeys(links[readers[0]]))
    named = [read_click_token(settings.secret_key, url.rsplit("/", 1)[1]) for url in unique]
    assert {(n.newsletter, n.issue, n.channel) for n in named} == {(NL, WEEK, MAIL)}
    assert len(unique) == len({n.article for n in named}) >= 4
    html0, text0 = received[readers[0]]
    assert "utm_campaign" not in html0 + text0  # the article links live behind /r/
    targets = store.click_targets(NL, WEEK)
    assert targets is not None
    ref_of_uid = {target.uid: article_ref(target.uid) for target in targets[1]}
    assert {ref(url) for url in unique} <= set(ref_of_uid.values())

    before = snapshot(store, leave_out="click_counts")
    first, second, third = unique[:3]
    async with served(settings, store), httpx.AsyncClient() as http:
        # Three readers: two open the first article (one from the text part), one the
        # second, twice in a row (a double click).
        text_link = COUNTED.findall(received[readers[1]][1])[0]
        assert text_link == first
        for n, url in ((0, first), (1, text_link), (2, second), (2, second)):
            answer = await http.get(url, headers=browser(n))
            assert answer.status_code == 302
            location = answer.headers["location"]
            assert location.startswith("https://") and "utm_campaign" in location
        # A mail gateway fetches every link of a message at once, and one more sends HEAD.
        answers = await asyncio.gather(
            *(http.get(url, headers={"User-Agent": GATEWAY}) for url in links[readers[2]])
        )
        assert {a.status_code for a in answers} == {302}
        assert (await http.head(third, headers=browser(9))).status_code == 302
        # An altered token is the 404 page, not a redirect.
        altered = first[:-2] + ("A" if first[-2] != "A" else "B") + first[-1]
        answer = await http.get(altered, headers=browser(0))
        assert answer.status_code == 404 and "location" not in answer.headers
        # The archive page's links count as web.
        page = await http.get(f"{settings.public_url}/archive/{NL}/{WEEK}", headers=browser(5))
        assert page.status_code == 200
        on_page = list(dict.fromkeys(COUNTED.findall(page.text)))
        channels = {
            read_click_token(settings.secret_key, u.rsplit("/", 1)[1]).channel for u in on_page
        }
        assert channels == {WEB}
        web = next(u for u in on_page if ref(u) == ref(third))
        assert (await http.get(web, headers=browser(5))).status_code == 302

    c, a = t.click_counts.c, t.articles.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(a.uid, c.channel, c.kind, c.count, c.day).join(t.articles, a.id == c.article_id)
        ).all()
    counted: dict[tuple[str, str, str], int] = {}
    for row in rows:
        key = (ref_of_uid[row.uid], row.channel, row.kind)
        counted[key] = counted.get(key, 0) + row.count
    assert {key: n for key, n in counted.items() if key[2] == "read"} == {
        (ref(first), MAIL, "read"): 2,
        (ref(second), MAIL, "read"): 1,
        (ref(third), WEB, "read"): 1,
    }
    scanned = sum(n for key, n in counted.items() if key[2] == "scanner")
    assert scanned == len(links[readers[2]]) + 1
    today = datetime.now(newsletter.zone).date()
    assert {row.day for row in rows} == {today}

    # Nothing personal in the click table: its columns, its keys, its rows.
    schema = inspect(store.engine)
    assert {col["name"] for col in schema.get_columns("click_counts")} == {
        "issue_id", "article_id", "day", "channel", "kind", "count",
    }  # fmt: skip
    assert {
        (fk["referred_table"], tuple(fk["constrained_columns"]))
        for fk in schema.get_foreign_keys("click_counts")
    } == {("issues", ("issue_id",)), ("articles", ("article_id",))}
    with store.engine.connect() as conn:
        stored = conn.execute(select(t.click_counts)).all()
    subscriber_ids = {s.id for s in store.active_subscribers(newsletter=NL)}
    for row in stored:
        assert row.issue_id == record.id and row.channel in (MAIL, WEB)
        assert row.kind in ("read", "scanner") and isinstance(row.count, int)
        assert not any(isinstance(v, str) and ("@" in v or "127.0.0.1" in v) for v in row)
    assert {row.article_id for row in stored} <= {target.article_id for target in targets[1]}
    assert subscriber_ids  # the readers exist, and no column could name one
    # Following links wrote nothing else: every other table as it was.
    assert snapshot(store, leave_out="click_counts") == before
