"""The public archive: its pages and feed through the ASGI app in-process, after real sends
of the demo issues to a real SMTP server, on SQLite (and PostgreSQL when configured)."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from html import escape, unescape

import feedparser
import httpx
import pytest

from digest.audience.segments import cut_for
from digest.audience.tokens import preferences_url, unsubscribe_mailto, unsubscribe_url
from digest.config import NewsletterSettings, Settings, StoreSettings
from digest.core.models import DeliveryState, Subscriber
from digest.delivery.transport import SmtpPool
from digest.issue.editing import apply_edit
from digest.issue.prepare import prepare_issue
from digest.message.archive import EVERY_CATEGORY, sanitised_body
from digest.ops import jobs
from digest.ops.demo import import_demo_lists
from digest.store import Store
from digest.store.ledger import Outcome, PlannedRow
from digest.web.app import create_app
from digest.web.security import ARCHIVE_CONTENT_SECURITY_POLICY
from tests.smtp_server import RecordingServer

NL = "wochenueberblick"
#: The demo feeds reach into 2025-W04; both weeks are sent, each on its Monday after.
SENDS = (("2025-W04", datetime(2025, 1, 27, 6, 0, tzinfo=UTC)),
         ("2025-W05", datetime(2025, 2, 3, 6, 0, tzinfo=UTC)))  # fmt: skip
NOT_FOUND = "Seite nicht gefunden"
READER = Subscriber("petra.privat@example.org", "Petra Privatmann", categories=frozenset())


@dataclass
class Archive:
    settings: Settings
    store: Store
    newsletter: NewsletterSettings
    smtp: RecordingServer

    async def send(self, week: str, now: datetime) -> None:
        settings = replace(self.settings, smtp=self.smtp.settings())
        pool = SmtpPool(settings.smtp)
        try:
            report = await jobs.send(settings, self.store, self.newsletter, week, pool, now=now)
        finally:
            await pool.close()
        assert report is not None and report.sent > 0 and not report.failed

    def client(self, settings: Settings | None = None) -> httpx.AsyncClient:
        settings = settings or self.settings
        transport = httpx.ASGITransport(app=create_app(settings, self.store))
        return httpx.AsyncClient(transport=transport, base_url=settings.public_url)

    def with_archive(self, on: bool) -> Settings:
        return replace(self.settings, newsletters=(replace(self.newsletter, archive=on),))


@pytest.fixture
async def archive(demo_settings: Settings, store_url: str) -> AsyncIterator[Archive]:
    """The demo lists (and one more reader with a name) and feeds, nothing sent yet."""
    settings = replace(demo_settings, store=StoreSettings(store_url))
    store = jobs.open_store(settings)
    newsletter = settings.newsletters[0]
    assert newsletter.id == NL and newsletter.archive  # the demo has its archive on
    reports = import_demo_lists(settings, store, newsletter)
    assert not any(r.errors for r in reports)
    store.save_subscriber(READER, ["allgemein"])
    await jobs.collect(settings, store, NL, now=SENDS[1][1])
    async with RecordingServer() as smtp:
        yield Archive(settings, store, newsletter, smtp)
    store.close()


@pytest.fixture
async def sent(archive: Archive) -> Archive:
    for week, now in SENDS:
        await archive.send(week, now)
    return archive


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.strict)
    assert isinstance(message, EmailMessage)
    return message


def _personal_values(archive: Archive) -> list[str]:
    """Everything about the readers that a page must not show: addresses, names, tokens."""
    values = []
    for subscriber in archive.store.active_subscribers(newsletter=NL):
        assert subscriber.id is not None
        values += [subscriber.email, subscriber.email.replace("@", "&#64;")]
        if subscriber.name:
            values.append(subscriber.name)
        for url in (
            unsubscribe_url(archive.settings, NL, subscriber.id),
            preferences_url(archive.settings, NL, subscriber.id),
            unsubscribe_mailto(archive.settings, NL, subscriber.id),
        ):
            values.append(url.rstrip("/").rsplit("/", 1)[-1].split("?")[0])
    return values


async def test_index_lists_the_newsletters_with_an_archive(archive: Archive) -> None:
    async with archive.client() as client:
        page = await client.get("/archive/")
    assert page.status_code == 200
    assert f'<a href="{NL}/">{archive.newsletter.name}</a>' in page.text
    assert page.headers["content-security-policy"] == ARCHIVE_CONTENT_SECURITY_POLICY
    async with archive.client(archive.with_archive(False)) as client:
        page = await client.get("/archive/")
    assert page.status_code == 200
    assert f'href="{NL}/"' not in page.text
    assert "Hier gibt es kein öffentliches Newsletter-Archiv." in page.text


async def test_only_sent_issues_are_listed_newest_first(archive: Archive) -> None:
    await archive.send(*SENDS[0])
    # W05 composed and stored, not sent: not in the archive.
    prepared = prepare_issue(archive.store, archive.newsletter, "2025-W05", SENDS[1][1])
    assert prepared is not None and prepared.record is not None
    async with archive.client() as client:
        page = await client.get(f"/archive/{NL}/")
        assert page.status_code == 200
        assert re.findall(r'<li><a href="(2025-W\d\d)">', page.text) == ["2025-W04"]
        assert (await client.get(f"/archive/{NL}/2025-W05")).status_code == 404
        await archive.send(*SENDS[1])
        page = await client.get(f"/archive/{NL}/")
    assert re.findall(r'<li><a href="(2025-W\d\d)">', page.text) == ["2025-W05", "2025-W04"]
    w05 = archive.store.get_issue(NL, "2025-W05")
    assert w05 is not None and f">{w05.subject}</a>" in page.text
    assert "Versandt am" in page.text
    assert 'href="feed.atom"' in page.text and f'href="../../subscribe/{NL}"' in page.text


async def test_issue_page_shows_every_category_and_nothing_personal(sent: Archive) -> None:
    async with sent.client() as client:
        page = await client.get(f"/archive/{NL}/2025-W05")
    assert page.status_code == 200
    html = page.text
    prepared = prepare_issue(sent.store, sent.newsletter, "2025-W05", SENDS[1][1], save=False)
    assert prepared is not None
    # Every article of the issue: a reader of every category and region gets them all.
    assert cut_for(prepared.issue, EVERY_CATEGORY).articles == prepared.issue.articles
    for article in prepared.issue.articles:
        assert escape(article.title, quote=False) in html, article.title
    for section in prepared.issue.sections:
        assert escape(section.title, quote=False) in html, section.title
    for value in _personal_values(sent):
        assert value not in html, value
    assert "/unsubscribe/" not in html and "/preferences/" not in html
    assert "%%DIGEST" not in html and "<script" not in html.lower()
    assert "Im Browser ansehen" not in html  # the page is the browser view
    assert "Sie erhalten diese E-Mail" not in html
    assert "Impressum" in html and "Kommune Digital Verlag GmbH (Demo)" in html
    assert f'href="{sent.settings.public_url}/subscribe/{NL}"' in html
    assert page.headers["content-security-policy"] == ARCHIVE_CONTENT_SECURITY_POLICY
    assert page.headers["cache-control"] == "no-store"


async def test_every_digest_links_to_its_archive_page(sent: Archive) -> None:
    assert sent.smtp.messages
    async with sent.client() as client:
        for _sender, _recipients, data in sent.smtp.messages:
            message = _parse(data)
            week = "2025-W05" if "KW 5/2025" in str(message["Subject"]) else "2025-W04"
            url = f"{sent.settings.public_url}/archive/{NL}/{week}"
            html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
            text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert f'<a href="{url}" style="color:#1d3557;">Im Browser ansehen</a>' in html
            assert text.startswith(f"Im Browser ansehen: {url}\r\n")
            assert (await client.get(url)).status_code == 200


async def test_no_link_to_an_archive_that_is_off(archive: Archive) -> None:
    archive.settings = archive.with_archive(False)
    archive.newsletter = archive.settings.newsletters[0]
    await archive.send(*SENDS[1])
    for _sender, _recipients, data in archive.smtp.messages:
        raw = data.decode("ascii")
        assert "/archive/" not in raw and "Browser" not in raw


async def test_unknown_off_unsent_and_malformed_are_the_404_page(sent: Archive) -> None:
    paths = [
        "/archive/unbekannt/",
        "/archive/unbekannt/2025-W05",
        "/archive/unbekannt/feed.atom",
        f"/archive/{NL}/2025-W06",  # no such issue
        f"/archive/{NL}/2025-W03",
        f"/archive/{NL}/kw5",
        f"/archive/{NL}/2025-W99",
    ]
    async with sent.client() as client:
        for path in paths:
            page = await client.get(path)
            assert page.status_code == 404, path
            assert NOT_FOUND in page.text, path
    async with sent.client(sent.with_archive(False)) as client:
        for path in (f"/archive/{NL}/", f"/archive/{NL}/2025-W05", f"/archive/{NL}/feed.atom"):
            page = await client.get(path)
            assert page.status_code == 404, path
            assert NOT_FOUND in page.text, path


async def test_archive_pages_only_show(sent: Archive) -> None:
    async with sent.client() as client:
        for path in ("/archive/", f"/archive/{NL}/", f"/archive/{NL}/2025-W05"):
            assert (await client.head(path)).status_code == 200
            response = await client.post(path)
            assert response.status_code == 405, path
            assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}


async def test_feed_is_atom_with_the_sent_issues_newest_first(sent: Archive) -> None:
    async with sent.client() as client:
        response = await client.get(f"/archive/{NL}/feed.atom")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    feed = feedparser.parse(response.content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10"
    assert feed.feed.title == sent.newsletter.name
    base = f"{sent.settings.public_url}/archive/{NL}/"
    assert feed.feed.id == base
    assert {link.rel: link.href for link in feed.feed.links} == {
        "alternate": base,
        "self": f"{base}feed.atom",
    }
    weeks = ["2025-W05", "2025-W04"]
    assert [entry.link for entry in feed.entries] == [base + week for week in weeks]
    assert [entry.id for entry in feed.entries] == [base + week for week in weeks]
    subjects = []
    for week in weeks:
        record = sent.store.get_issue(NL, week)
        assert record is not None
        subjects.append(record.subject)
    assert [entry.title for entry in feed.entries] == subjects
    assert feed.entries[0].updated_parsed >= feed.entries[1].updated_parsed
    assert feed.entries[0].summary.startswith("KW 5/2025")
    for value in _personal_values(sent):
        assert value.encode() not in response.content


async def _subjects(archive: Archive, week: str) -> tuple[str, str, str]:
    """The subject of ``week`` as the list, the feed and the issue page show it."""
    async with archive.client() as client:
        listed = (await client.get(f"/archive/{NL}/")).text
        feed = feedparser.parse((await client.get(f"/archive/{NL}/feed.atom")).content)
        page = (await client.get(f"/archive/{NL}/{week}")).text
    [in_list] = re.findall(rf'<li><a href="{week}">([^<]*)</a>', listed)
    [in_feed] = [entry.title for entry in feed.entries if entry.link.endswith(week)]
    [on_page] = re.findall(r"<h1>([^<]*)</h1>", page)
    return unescape(in_list), in_feed, unescape(on_page)


async def test_one_subject_in_list_feed_and_page_after_edits(archive: Archive) -> None:
    week, now = SENDS[1]
    store, newsletter = archive.store, archive.newsletter
    # A first run that was stopped after one message, before its whole audience was
    # planned: the issue went out to one reader and is still 'composed', so editable.
    prepared = prepare_issue(store, newsletter, week, now)
    assert prepared is not None and prepared.record is not None
    record, first_subject = prepared.record, prepared.record.subject
    readers = sorted(store.active_subscribers(), key=lambda r: r.id or 0)[:3]
    store.plan_rows(record.id, [PlannedRow(r.id or 0, r.email, ["allgemein"]) for r in readers])
    [claimed] = store.claim_deliveries(
        record.id, after_id=0, limit=1, stale_before=now, new_message_id=lambda: "<a@b>", now=now
    )
    store.record_outcomes([Outcome(claimed.id, DeliveryState.SENT, 250, "OK")], now=now)
    assert await _subjects(archive, week) == (first_subject,) * 3

    # An editor leaves out the top article: the composition's subject changes.
    top = prepared.issue.sections[0].items[0].article
    apply_edit(
        store, newsletter, week, action="exclude", uid=top.uid, text=None, editor="erika", now=now
    )
    edited = prepare_issue(store, newsletter, week, now, save=False)
    assert edited is not None and edited.issue.subject != first_subject
    assert await _subjects(archive, week) == (first_subject,) * 3

    # The retry pass goes on with the edited issue; from then on it is its subject.
    settings = replace(archive.settings, smtp=archive.smtp.settings())
    pool = SmtpPool(settings.smtp)
    try:
        [report] = await jobs.send_due(settings, store, pool, now=now)
    finally:
        await pool.close()
    assert report.finished
    assert await _subjects(archive, week) == (edited.issue.subject,) * 3
    subjects = {_parse(data)["Subject"] for _sender, _rcpt, data in archive.smtp.messages}
    assert top.title not in " ".join(subjects)


async def test_empty_archive_has_an_empty_feed_and_list(archive: Archive) -> None:
    async with archive.client() as client:
        page = await client.get(f"/archive/{NL}/")
        response = await client.get(f"/archive/{NL}/feed.atom")
    assert page.status_code == 200 and "Es wurde noch keine Ausgabe versandt." in page.text
    feed = feedparser.parse(response.content)
    assert not feed.bozo and feed.entries == []


def test_sanitising_keeps_the_layout_and_removes_anything_active() -> None:
    html = (
        "<!doctype html><html><head><title>T</title><style>a{}</style></head>"
        '<body style="margin:0"><div style="max-width:600px;position:fixed">'
        '<table role="presentation" width="100%"><tr><td align="left">'
        '<a href="javascript:alert(1)">x</a><a href="https://example.org/a" onclick="y()">a</a>'
        '<img src="https://example.org/i.png" alt="Bild" width="552" onerror="z()">'
        "<script>alert(2)</script><!--[if mso]><b>o</b><![endif]-->"
        '<p style="color:#123456;background-image:url(https://tracker.example/p)">t</p>'
        '<iframe src="https://example.org"></iframe><form action="/x"></form>'
        "</td></tr></table></div></body></html>"
    )
    clean = sanitised_body(html)
    for gone in ("script", "alert", "javascript:", "onclick", "onerror", "iframe", "form",
                 "position", "tracker", "<title", "<style", "mso", "<html", "<body"):  # fmt: skip
        assert gone not in clean, gone
    for kept in ('role="presentation"', 'style="max-width:600px"', 'align="left"',
                 'href="https://example.org/a"', 'alt="Bild"', 'width="552"',
                 'style="color:#123456"'):  # fmt: skip
        assert kept in clean, kept
