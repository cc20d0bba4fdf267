"""The markup of the digest as readers' mail clients receive it, from a real send.

The demo's issue goes out to its subscribers through a recording aiosmtpd server, and
each received HTML part is read element by element (tests/html_tree.py): a hidden
preheader that no spam filter takes for low-contrast text, headline links that keep
their look where a client drops <style>, and the dark-mode declaration. A test send
(`digest test-send`, the editors' "send a test") carries no link to an archive page
that does not exist yet.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage

import httpx
import pytest

from digest.config import NewsletterSettings, Settings, StoreSettings
from digest.delivery.transport import SmtpPool
from digest.ops import jobs
from digest.ops.demo import import_demo_lists
from digest.store import Store
from digest.web.app import create_app
from tests.html_tree import Node, background_colour, contrast, parse, text_colour
from tests.smtp_server import RecordingServer

WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
TESTER = "pruefung@example.org"


@dataclass
class Demo:
    settings: Settings
    store: Store
    newsletter: NewsletterSettings


@pytest.fixture
async def demo(demo_settings: Settings, store_url: str) -> AsyncIterator[Demo]:
    """The demo lists and feeds in a fresh store: SQLite, and PostgreSQL when configured."""
    settings = replace(demo_settings, store=StoreSettings(store_url))
    store = jobs.open_store(settings)
    newsletter = settings.newsletters[0]
    assert newsletter.archive  # the demo links every digest to its archive page
    assert not any(r.errors for r in import_demo_lists(settings, store, newsletter))
    [collected] = await jobs.collect(settings, store, newsletter.id, now=NOW)
    assert not collected.failed
    yield Demo(settings, store, newsletter)
    store.close()


async def _send(demo: Demo, server: RecordingServer) -> list[EmailMessage]:
    settings = replace(demo.settings, smtp=server.settings())
    before = len(server.messages)
    pool = SmtpPool(settings.smtp)
    try:
        report = await jobs.send(settings, demo.store, demo.newsletter, WEEK, pool, now=NOW)
    finally:
        await pool.close()
    assert report is not None and report.sent > 0
    return [_parsed(data) for _, _, data in server.messages[before:]]


async def _test_send(demo: Demo, server: RecordingServer) -> EmailMessage:
    settings = replace(demo.settings, smtp=server.settings())
    before = len(server.messages)
    pool = SmtpPool(settings.smtp)
    try:
        [result] = await jobs.test_send(
            settings, demo.store, demo.newsletter, WEEK, [TESTER], pool, segment="alle", now=NOW
        )
    finally:
        await pool.close()
    assert result.ok
    [(_sender, recipients, data)] = server.messages[before:]
    assert recipients == [TESTER]
    return _parsed(data)


def _parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _part(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    content: str = part.get_content()
    return content


def _hidden(node: Node) -> bool:
    return any(e.style.get("display") == "none" for e in (node, *node.ancestors()))


async def test_the_preheader_is_hidden_without_low_contrast_text(
    demo: Demo, smtp_server: RecordingServer
) -> None:
    messages = await _send(demo, smtp_server)
    for message in messages:
        body = parse(_part(message, "html")).find_all("body")[0]
        # The first text of the body is the preheader, hidden by layout, not by colour.
        first = next(node for node in body.iter() if node.own_text.strip())
        preheader = next(e for e in (first, *first.ancestors()) if e.style.get("display"))
        assert preheader.text.startswith(message["Subject"].split(": ", 1)[1][:20])
        style = preheader.style
        assert style["display"] == "none" and style["mso-hide"] == "all"
        assert style["max-height"] in ("0", "0px") and style["overflow"] == "hidden"
        for trick in ("color", "font-size", "opacity", "line-height"):
            assert trick not in style, trick
        # No text anywhere, hidden or not, is coloured close to its background: what
        # SpamAssassin's HTML_FONT_LOW_CONTRAST looks for.
        for node in body.iter():
            if node.own_text.strip() and node.tag not in ("style", "title"):
                ratio = contrast(text_colour(node), background_colour(node))
                assert ratio >= 4.5, (node.tag, node.attrs, node.own_text[:40], ratio)
        assert [n for n in body.iter() if _hidden(n) and n.own_text.strip()] == [preheader]


async def test_headline_links_carry_their_style_inline_and_dark_mode_is_declared(
    demo: Demo, smtp_server: RecordingServer
) -> None:
    messages = await _send(demo, smtp_server)
    headlines = 0
    for message in messages:
        tree = parse(_part(message, "html"))
        links = [a for h3 in tree.find_all("h3") for a in h3.find_all("a")]
        assert links
        for link in links:
            assert link.style.get("text-decoration") == "none", link.attrs
            assert link.style.get("color") == "#1d3557", link.attrs
        headlines += len(links)
        metas = {m.attrs.get("name"): m.attrs.get("content") for m in tree.find_all("meta")}
        for name in ("color-scheme", "supported-color-schemes"):
            assert set((metas.get(name) or "").split()) == {"light", "dark"}, name
        [head] = tree.find_all("head")
        styles = " ".join(s.text for s in head.find_all("style"))
        assert "@media (prefers-color-scheme: dark)" in styles
    assert headlines > 27


async def test_a_test_send_links_to_no_archive_page_that_is_not_there(
    demo: Demo, smtp_server: RecordingServer
) -> None:
    """Before the issue goes out its archive page is a 404: a test leaves the link out.
    Once it has gone out, a test shows the link readers got, and it works."""
    archive_path = f"/archive/{demo.newsletter.id}/{WEEK}"
    app = create_app(demo.settings, demo.store)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=demo.settings.public_url) as web:
        assert (await web.get(archive_path)).status_code == 404
        test = await _test_send(demo, smtp_server)
        assert test["Subject"].startswith("[TEST] ")
        for subtype in ("html", "plain"):
            content = _part(test, subtype)
            assert "Im Browser ansehen" not in content and "/archive/" not in content, subtype
            assert "Einstellungen ändern" in content  # the rest of the mail is there

        sent = await _send(demo, smtp_server)
        link = f"{demo.settings.public_url}{archive_path}"
        for message in sent:
            assert f'href="{link}"' in _part(message, "html")
            assert f"Im Browser ansehen: {link}" in _part(message, "plain")
        assert (await web.get(archive_path)).status_code == 200

        again = await _test_send(demo, smtp_server)
        assert f'href="{link}"' in _part(again, "html")
        assert f"Im Browser ansehen: {link}" in _part(again, "plain")
