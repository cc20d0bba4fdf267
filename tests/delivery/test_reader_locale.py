"""Each reader's own language, through a real send into the aiosmtpd server.

The demo newsletter is German (de_DE); readers are added with en_GB, with a language we
have no texts for (fr), and with a stored value that is no locale at all. Every text of
ours in their message (greeting, labels, links, week, dates) follows the reader; the
content stays as written. The pages their links open speak it too.
"""

from __future__ import annotations

import email
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

import httpx
import pytest

from digest.audience.segments import segment_lists
from digest.audience.tokens import UNSUBSCRIBE, make_token
from digest.config import NewsletterSettings, Settings, StoreSettings
from digest.core.i18n import reader_locale
from digest.core.models import Subscriber
from digest.delivery.report import DeliveryReport
from digest.delivery.transport import SmtpPool
from digest.ops import jobs
from digest.ops.demo import import_demo_lists
from digest.store import Store
from digest.web.app import create_app
from tests.smtp_server import RecordingServer

WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
#: Neither a locale nor anything Babel reads as one: unique, so it is logged in this test.
NOT_A_LOCALE = "kein-locale-19"

#: What each language's message says, in both parts (the date is the München article's).
GERMAN = (
    "Guten Tag",
    "KW 5/2025",
    "27.01.2025 – 02.02.2025",
    "31.01.2025",
    "Einstellungen ändern",
    "Abmelden",
    "Im Browser ansehen",
    "Impressum",
)
ENGLISH = (
    "Hello",
    "Week 5/2025",
    "27 Jan 2025 – 2 Feb 2025",
    "31 Jan 2025",
    "Change preferences",
    "Unsubscribe",
    "View in browser",
    "Legal notice",
)


@dataclass
class World:
    settings: Settings
    store: Store
    newsletter: NewsletterSettings

    async def send(self, server: RecordingServer) -> DeliveryReport:
        settings = replace(self.settings, smtp=server.settings())
        pool = SmtpPool(settings.smtp)
        try:
            report = await jobs.send(settings, self.store, self.newsletter, WEEK, pool, now=NOW)
        finally:
            await pool.close()
        assert report is not None and report.failed == 0
        return report


@pytest.fixture
async def world(demo_settings: Settings, store_url: str) -> AsyncIterator[World]:
    """The demo lists and feeds in a fresh store, and four readers of other locales."""
    settings = replace(demo_settings, store=StoreSettings(store_url))
    store = jobs.open_store(settings)
    newsletter = settings.newsletters[0]
    reports = import_demo_lists(settings, store, newsletter)
    assert not any(r.errors for r in reports)
    readers = {
        "alice@example.co.uk": ("Alice Smith", "en_GB", frozenset()),
        "bob@example.co.uk": ("Bob Jones", "en_GB", frozenset({"Hessen"})),
        "claire@example.fr": ("Claire Martin", "fr_FR", frozenset()),
        "dora@example.org": ("Dora Kaputt", NOT_A_LOCALE, frozenset()),
        "emil@example.org": ("Emil Kaputt", NOT_A_LOCALE, frozenset({"Hessen"})),
    }
    for address, (name, locale, regions) in readers.items():
        reader = Subscriber(address, name, regions=regions, locale=locale)
        store.save_subscriber(reader, ["allgemein"])
    [collected] = await jobs.collect(settings, store, newsletter.id, now=NOW)
    assert not collected.failed
    yield World(settings, store, newsletter)
    store.close()


def _parts(data: bytes) -> tuple[EmailMessage, str, str]:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage) and message.defects == []
    text, html = (message.get_body(preferencelist=(kind,)) for kind in ("plain", "html"))
    assert text is not None and html is not None
    return message, *(p.get_content().replace("\r\n", "\n") for p in (text, html))


def _received(server: RecordingServer) -> dict[str, tuple[EmailMessage, str, str]]:
    return {rcpts[0]: _parts(data) for _, rcpts, data in server.messages}


def _articles(text: str) -> frozenset[str]:
    """The articles a text part links to ("mehr…: URL" or "more…: URL")."""
    return frozenset(re.findall(r"^(?:mehr|more)…: (\S+)$", text, re.MULTILINE))


async def test_each_reader_reads_our_texts_in_their_own_language(
    world: World, smtp_server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    # "Once per value" is once per process: forget what an earlier test (the other
    # store's run of this one) had it say.
    reader_locale.cache_clear()
    with caplog.at_level(logging.WARNING, logger="digest"):
        report = await world.send(smtp_server)
    received = _received(smtp_server)
    assert report.sent == len(received) == 14 + 5
    expected = {
        "juergen.boehm@example.org": ("de", GERMAN, ENGLISH),  # imported with de_DE
        "alice@example.co.uk": ("en", ENGLISH, GERMAN),
        "bob@example.co.uk": ("en", ENGLISH, GERMAN),
        # No texts in French: the newsletter's language, never a mix of two.
        "claire@example.fr": ("de", GERMAN, ENGLISH),
        # A stored value that is no locale: the newsletter's, and the send goes on.
        "dora@example.org": ("de", GERMAN, ENGLISH),
    }
    for address, (lang, said, never) in expected.items():
        message, text, html = received[address]
        assert f'<html lang="{lang}"' in html, address
        subject = message["Subject"]
        assert said[1] in subject and never[1] not in subject, (address, subject)
        for part in (text, html):
            for phrase in said:
                assert phrase in part, (address, phrase)
            for phrase in never[1:]:  # "Hello" is in neither German part
                assert phrase not in part, (address, phrase)
        # The content stays as written: German headlines and teasers for everyone.
        assert "Deutscher Städtetag: Digitalisierung braucht verlässliche Finanzierung" in text
        assert "Der Deutsche Städtetag verlangt von Bund und Ländern" in html
    assert "Hello Alice Smith," in received["alice@example.co.uk"][1]
    assert "Guten Tag Claire Martin," in received["claire@example.fr"][1]
    # The value that is no locale is named once, however many readers have it.
    named = [r for r in caplog.records if NOT_A_LOCALE in r.getMessage()]
    assert len(named) == 1 and named[0].levelno == logging.WARNING


async def test_variants_are_compiled_once_per_distinct_articles_and_locale(
    world: World, smtp_server: RecordingServer
) -> None:
    # Choices that differ but lead to the same articles: a region no article of the
    # week names adds nothing to Bob's Hessen; every category named is no category named.
    every = frozenset(c.key for c in world.newsletter.categories)
    for reader in (
        Subscriber("f@example.org", "", regions=frozenset({"Hessen", "Atlantis"}), locale="en_GB"),
        Subscriber("g@example.org", "", categories=every, locale="en_GB"),
    ):
        world.store.save_subscriber(reader, ["allgemein"])
    report = await world.send(smtp_server)
    received = _received(smtp_server)
    readers = {s.email: s for s in world.store.active_subscribers(segment_lists(world.newsletter))}
    assert set(received) == set(readers)
    # What each reader was shown: the articles linked and the language of the HTML.
    shown = {
        address: (_articles(text), re.findall(r'<html lang="(\w+)"', html), message["Subject"])
        for address, (message, text, html) in received.items()
    }
    assert shown["f@example.org"] == shown["bob@example.co.uk"] != shown["alice@example.co.uk"]
    assert shown["g@example.org"] == shown["alice@example.co.uk"]
    expected_locale = {
        address: "en_GB" if reader.locale == "en_GB" else "de_DE"
        for address, reader in readers.items()
    }
    pairs = {(_articles(text), expected_locale[a]) for a, (_m, text, _h) in received.items()}
    assert all(articles for articles, _locale in pairs)
    assert report.variants == len(pairs)
    # Fewer than the readers' distinct choices: the cache is keyed by what they see.
    choices = {(r.lists, r.categories, r.regions, expected_locale[a]) for a, r in readers.items()}
    assert len(pairs) < len(choices)


async def test_the_pages_a_readers_links_open_speak_their_language(
    world: World, smtp_server: RecordingServer
) -> None:
    await world.send(smtp_server)
    received = _received(smtp_server)
    settings = world.settings
    app = create_app(settings, world.store)
    transport = httpx.ASGITransport(app=app)
    pages = {}
    async with httpx.AsyncClient(transport=transport, base_url=settings.public_url) as client:
        for address, labels in (
            ("alice@example.co.uk", ("Change preferences", "Unsubscribe")),
            ("juergen.boehm@example.org", ("Einstellungen ändern", "Abmelden")),
        ):
            text = received[address][1]
            links = [re.search(rf"^{label}: (\S+)$", text, re.M) for label in labels]
            assert links[0] and links[1], text
            preferences = await client.get(links[0][1])
            ask = await client.get(links[1][1])
            onward = await client.get(links[1][1] + "?einstellungen", follow_redirects=True)
            done = await client.post(links[1][1])
            pages[address] = (preferences, ask, onward, done)
        # The page of an unsubscribe token is the same, byte for byte, whether its
        # subscriber exists or not: the language comes from the token, not the store.
        nobody = make_token(settings.secret_key, UNSUBSCRIBE, 999_999, world.newsletter.id, "en_GB")
        ghost = await client.get(f"/unsubscribe/{nobody}")
    for page in pages["alice@example.co.uk"]:
        assert page.status_code == 200 and '<html lang="en">' in page.text
    preferences, ask, onward, done = pages["alice@example.co.uk"]
    assert "Your newsletter preferences" in preferences.text and "Alice Smith" in preferences.text
    assert "Your newsletter preferences" in onward.text
    assert "Unsubscribe from this newsletter" in ask.text
    assert "You have been unsubscribed and will no longer receive the newsletter" in done.text
    assert ghost.text == ask.text
    for page in pages["juergen.boehm@example.org"]:
        assert page.status_code == 200 and '<html lang="de">' in page.text
