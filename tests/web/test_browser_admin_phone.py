"""The editors' area on a phone, in German, in headless Chromium against uvicorn.

Three weeks of the demo's articles: the coming issue, a past week that was never sent
and one that was. An editor logs in on a 375 px screen and edits the coming issue
through the real forms; every page of the area (login, overview, the issue with its
history, the preview, the test send, the past weeks) fits the screen and axe-core
finds nothing on it. The overview and the history say everything in German: the
schedule in words, states and changes from the catalogues, dates as Babel writes them.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from babel.dates import format_skeleton

from digest.config import NewsletterSettings, Settings
from digest.config.cron_words import schedule_words
from digest.core.i18n import format_week
from digest.core.models import Subscriber
from digest.delivery.transport import SmtpPool
from digest.issue.compose import iso_week_window
from digest.issue.editing import coming_week
from digest.issue.editors import add_editor
from digest.ops import jobs
from digest.store import Store
from tests.smtp_server import RecordingServer
from tests.web.test_browser import (  # noqa: F401  (the fixture and the skip)
    _offline_page,
    _served,
    browser,
    pytestmark,
)

NL = "wochenueberblick"
DEMO_WEEK = "2025-W05"
COLLECTED = datetime(2025, 2, 3, 6, tzinfo=UTC)
PASSWORD = "correct horse battery"
PHONE = 375
SCREENSHOTS = Path(__file__).parent / "screenshots"
#: Words the German pages once showed untranslated, from the store's codes.
ENGLISH = re.compile(
    r"\b(exclude|include|unpin|pin|teaser|intro|move|up|down|composed|sending|sent|"
    r"approve|schedule|window|state)\b",
    re.IGNORECASE,
)
#: A date as the area wrote it before Babel did (dd.mm.yyyy).
FIXED_DATE = re.compile(r"\b\d{2}\.\d{2}\.\d{4}\b")


@dataclass(frozen=True)
class Site:
    base: str
    newsletter: NewsletterSettings
    coming: str
    unsent: str
    sent: str


def _week_of(day: datetime, newsletter: NewsletterSettings) -> str:
    year, number, _ = day.astimezone(newsletter.zone).isocalendar()
    return f"{year}-W{number:02d}"


async def _three_weeks(settings: Settings, store: Store) -> tuple[str, str, str]:
    """The demo's articles copied into the coming week and the two weeks before it."""
    newsletter = settings.newsletter(NL)
    await jobs.collect(settings, store, NL, now=COLLECTED)
    _key, demo_start, demo_end = iso_week_window(DEMO_WEEK, newsletter.zone, COLLECTED)
    demo = store.window_articles(NL, demo_start, demo_end)
    assert demo
    at = datetime.now(UTC)
    coming = coming_week(newsletter, at)
    _key, coming_start, _end = iso_week_window(coming, newsletter.zone, at)
    weeks = []
    for back in (0, 1, 2):
        start = coming_start - timedelta(weeks=back)
        week = _week_of(start + timedelta(hours=12), newsletter)
        copies = [
            replace(a, uid=f"{a.uid}#{week}", published=start + (a.published - demo_start))
            for a in demo
        ]
        store.upsert_articles(NL, copies, now=at)
        weeks.append(week)
    return weeks[0], weeks[1], weeks[2]


@asynccontextmanager
async def admin_site(demo_settings: Settings, store: Store) -> AsyncIterator[Site]:
    """The app under uvicorn with three weeks of articles, the oldest of them sent."""
    from digest.web.app import create_app

    coming, unsent, sent = await _three_weeks(demo_settings, store)
    add_editor(store, "erika", "erika@example.org", PASSWORD)
    for n, lists in enumerate((["allgemein"], ["bayern"], ["allgemein"])):
        store.save_subscriber(Subscriber(f"leser{n}@example.org", f"Leser {n}"), lists)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with RecordingServer() as smtp:
        settings = replace(
            demo_settings, public_url=f"http://127.0.0.1:{port}", smtp=smtp.settings()
        )
        pool = SmtpPool(settings.smtp)
        try:
            report = await jobs.send(settings, store, settings.newsletter(NL), sent, pool)
        finally:
            await pool.close()
        assert report is not None and report.sent == 3
        newsletter = replace(settings.newsletter(NL), review="required")
        settings = replace(settings, newsletters=(newsletter,))
        async with _served(port) as serve:
            await serve(create_app(settings, store, login_delay=0))
            yield Site(settings.public_url, newsletter, coming, unsent, sent)


async def fits_a_phone_and_passes_axe(page, name: str) -> None:  # type: ignore[no-untyped-def]
    """Nothing wider than the screen, and no axe-core finding of any impact; a
    screenshot of the whole page goes to tests/web/screenshots/admin-phone-NAME.png."""
    from axe_playwright_python.async_playwright import Axe

    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"admin-phone-{name}.png"), full_page=True)

    width = await page.evaluate("document.documentElement.scrollWidth")
    if width > PHONE:
        wide = await page.evaluate(
            """[...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > innerWidth + 0.5)
                .slice(0, 5).map(e => e.tagName + '.' + e.className + ' '
                    + Math.round(e.getBoundingClientRect().right))"""
        )
        raise AssertionError(f"{page.url} is {width} px wide: {wide}")
    results = await Axe().run(page)
    findings = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
    ]
    assert not findings, (page.url, findings)


async def _edit_coming_issue(page, site: Site) -> None:  # type: ignore[no-untyped-def]
    """Leave out, pin, move, rewrite and introduce, as an editor clicks it."""
    await page.goto(f"{site.base}/admin/{NL}/{site.coming}")
    articles = page.locator("li.article")
    titles = [await articles.nth(n).locator("h3").inner_text() for n in range(4)]
    await page.get_by_role("button", name=f"Weglassen: {titles[0]}").click()
    await page.wait_for_selector("text=Weggelassen:")
    await page.get_by_role("button", name=f"Oben anheften: {titles[3]}").click()
    await page.wait_for_selector("text=Oben angeheftet:")
    await page.get_by_role("button", name=f"Nach unten: {titles[1]}").click()
    await page.wait_for_selector("text=Nach unten verschoben:")
    item = page.locator("li.article", has_text=titles[2])
    await item.locator("textarea").fill("Von der Redaktion neu geschrieben.")
    await item.get_by_role("button", name="Anreißer speichern").click()
    await page.wait_for_selector("text=Anreißer umgeschrieben:")
    await page.get_by_label("Text vor der ersten Rubrik").fill("Liebe Leserinnen und Leser!")
    await page.get_by_role("button", name="Einleitung speichern").click()
    await page.wait_for_selector("text=Einleitung: Liebe")


async def test_every_page_of_the_area_fits_a_phone_and_speaks_german(
    browser: object,  # noqa: F811
    demo_settings: Settings,
    store: Store,
) -> None:
    async with admin_site(demo_settings, store) as site:
        page = await _offline_page(browser, PHONE)
        await page.goto(f"{site.base}/admin/")
        assert "/admin/login" in page.url
        await page.wait_for_selector("h1")
        assert await page.inner_text("h1") == "Einloggen in den Redaktionsbereich"
        assert "Anmelden" not in await page.inner_text("body")
        await fits_a_phone_and_passes_axe(page, "login")
        await page.get_by_label("Name").fill("erika")
        await page.get_by_label("Passwort").fill(PASSWORD)
        await page.get_by_role("button", name="Einloggen").click()
        await page.wait_for_selector("text=Leser je Segment")
        assert await page.get_by_role("button", name="Ausloggen").count() == 1

        await _edit_coming_issue(page, site)
        await fits_a_phone_and_passes_axe(page, "issue")
        history = await page.inner_text("section:has(#history)")
        zone, today = site.newsletter.zone, datetime.now(UTC)
        assert format_skeleton("yMMMd", today, tzinfo=zone, locale="de_DE") in history
        for change in ("Weggelassen:", "Oben angeheftet:", "Nach unten verschoben:",
                       "Anreißer umgeschrieben:", "Einleitung: Liebe Leserinnen"):  # fmt: skip
            assert change in history, history
        assert not ENGLISH.findall(history.replace(site.newsletter.name, "")), history
        assert not FIXED_DATE.findall(await page.inner_text("main"))

        await page.goto(f"{site.base}/admin/")
        await fits_a_phone_and_passes_axe(page, "overview")
        overview = await page.inner_text("main")
        assert schedule_words("0 7 * * mon", "de_DE") == "montags um 07:00"
        assert "Zeitplan: montags um 07:00" in overview and "0 7 * * mon" not in overview
        assert "Verschickt" in overview and "Nicht verschickt" in overview
        assert not ENGLISH.findall(overview.replace(site.newsletter.name, "")), overview
        assert not FIXED_DATE.findall(overview), overview

        # The week never sent is listed, and opens.
        year, number = (int(part) for part in site.unsent.split("-W"))
        row = page.locator("tr", has_text=format_week(year, number, "de_DE"))
        assert "Nicht verschickt" in await row.inner_text()
        await row.get_by_role("link").click()
        await page.wait_for_url(f"**/admin/{NL}/{site.unsent}")
        assert await page.locator("li.article").count() > 0
        await fits_a_phone_and_passes_axe(page, "unsent-week")

        await page.goto(f"{site.base}/admin/{NL}/{site.sent}")
        assert "nicht mehr geändert" in await page.inner_text("main")
        await fits_a_phone_and_passes_axe(page, "sent-issue")

        await page.goto(f"{site.base}/admin/{NL}/{site.coming}/preview?segment=bayern")
        phone_frame = await (await page.wait_for_selector("iframe.phone")).content_frame()
        assert phone_frame is not None
        await phone_frame.wait_for_selector("text=Liebe Leserinnen und Leser!")
        await fits_a_phone_and_passes_axe(page, "preview")

        await page.goto(f"{site.base}/admin/{NL}/{site.coming}/test")
        await fits_a_phone_and_passes_axe(page, "test")
