"""The editors' area in its locale, past weeks never sent, and previews built once.

Through the ASGI app in-process, edits made with the real forms. The same pages in
German (the demo's locale) and in British English: states, changes, the schedule and
the dates all come from the catalogues and from Babel, never from the store's codes.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from babel.dates import format_skeleton

from digest.config import NewsletterSettings, Settings
from digest.core.i18n import format_week
from digest.delivery.transport import SmtpPool
from digest.issue.compose import iso_week_window
from digest.issue.editing import coming_week
from digest.ops import jobs
from digest.store import Store
from tests.smtp_server import RecordingServer
from tests.web.test_web_admin import (  # noqa: F401  (the fixture)
    ISSUE,
    NL,
    NOW,
    WEEK,
    client,
    collected,
    csrf_of,
    edit,
    first_uids,
    log_in,
)

FRAME = re.compile(r'<iframe[^>]* src="([^"]+)"')


def copy_demo_week(store: Store, newsletter: NewsletterSettings, weeks_back: int) -> str:
    """The demo's articles of WEEK again (new uids), published ``weeks_back`` weeks
    before the coming issue's week; that week's key."""
    _key, demo_start, demo_end = iso_week_window(WEEK, newsletter.zone, NOW)
    demo = store.window_articles(newsletter.id, demo_start, demo_end)
    assert demo
    at = datetime.now(UTC)
    _key, coming_start, _end = iso_week_window(coming_week(newsletter, at), newsletter.zone, at)
    start = coming_start - timedelta(weeks=weeks_back)
    year, number, _ = (start + timedelta(hours=12)).astimezone(newsletter.zone).isocalendar()
    week = f"{year}-W{number:02d}"
    copies = [
        replace(a, uid=f"{a.uid}#{week}", published=start + (a.published - demo_start))
        for a in demo
    ]
    store.upsert_articles(newsletter.id, copies, now=at)
    return week


def said_week(week: str, locale: str = "de_DE") -> str:
    year, number = (int(part) for part in week.split("-W"))
    return format_week(year, number, locale)


async def test_the_login_form_says_log_in_not_subscribe(
    demo_settings: Settings,
    collected: Store,  # noqa: F811
) -> None:
    async with client(demo_settings, collected) as http:
        form = await http.get("/admin/login")
        await log_in(http)
        overview = await http.get("/admin/")
    assert "<title>Einloggen in den Redaktionsbereich</title>" in form.text
    assert '<button type="submit">Einloggen</button>' in form.text
    assert "Anmeld" not in form.text  # a reader's word: subscribing
    assert ">Ausloggen</button>" in overview.text and "Abmelden" not in overview.text


async def test_the_overview_lists_past_weeks_never_sent(
    demo_settings: Settings,
    collected: Store,  # noqa: F811
) -> None:
    newsletter = demo_settings.newsletter(NL)
    unsent = copy_demo_week(collected, newsletter, 1)
    failed = copy_demo_week(collected, newsletter, 2)
    sent = copy_demo_week(collected, newsletter, 3)
    # A run that composed its issue and failed before sending it.
    assert jobs.prepare_issue(collected, newsletter, failed, datetime.now(UTC)) is not None
    async with RecordingServer() as smtp:
        settings = replace(demo_settings, smtp=smtp.settings())
        pool = SmtpPool(settings.smtp)
        try:
            report = await jobs.send(settings, collected, newsletter, sent, pool)
        finally:
            await pool.close()
    assert report is not None and report.sent == 3
    async with client(demo_settings, collected) as http:
        await log_in(http)
        overview = await http.get("/admin/")
        opened = await http.get(f"/admin/{NL}/{unsent}")
    rows = {
        cells[0]: cells[1:]
        for row in re.findall(r"<tr><td><a .*?</tr>", overview.text, re.DOTALL)
        for cells in [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in row.split("</td>")[:3]]]
    }
    assert rows[said_week(unsent)] == ["Nicht verschickt", "keine"], rows
    assert rows[said_week(failed)] == ["Zusammengestellt, nicht verschickt", "keine"], rows
    assert rows[said_week(sent)] == ["Verschickt", "3 verschickt"], rows
    assert f'href="/admin/{NL}/{unsent}"' in overview.text
    # Weeks longer ago than the overview looks (the demo's own) are not listed.
    assert said_week(WEEK) not in overview.text
    assert opened.status_code == 200
    title = collected.window_articles(NL, *iso_week_window(unsent, newsletter.zone, NOW)[1:])[0]
    assert html.escape(title.title, quote=False) in opened.text


async def test_an_english_area_says_everything_in_english(
    demo_settings: Settings,
    collected: Store,  # noqa: F811
) -> None:
    settings = replace(demo_settings, locale="en_GB")
    first, second, third, *_ = first_uids(collected, settings)
    async with client(settings, collected) as http:
        await log_in(http)
        for action, uid in (("exclude", first), ("pin", third), ("down", second)):
            assert (await edit(http, action=action, uid=uid)).status_code == 303
        assert (await edit(http, action="intro", text="Dear readers")).status_code == 303
        issue = await http.get(ISSUE)
        overview = await http.get("/admin/")
    history = issue.text.split('id="history"', 1)[1]
    for change in ("Left out: ", "Pinned to the top: ", "Moved down: ", "Intro text: Dear"):
        assert change in history, history
    today = format_skeleton("yMMMd", datetime.now(UTC), tzinfo=settings.newsletter(NL).zone,
                            locale="en_GB")  # fmt: skip
    assert today in history
    assert "<title>Issue Week 5/2025</title>" in issue.text
    assert "Schedule: Mondays at 07:00 (Europe/Berlin)" in overview.text
    for german in ("Weggelassen", "montags", "Verschickt", "Zeitraum", "Einloggen", "KW "):
        assert german not in issue.text + overview.text, german


async def test_the_frames_show_the_message_their_page_built(
    demo_settings: Settings,
    collected: Store,  # noqa: F811
) -> None:
    async with client(demo_settings, collected) as http:
        await log_in(http)
        page = await http.get(f"{ISSUE}/preview?segment=bayern")
        sources = {html.unescape(src) for src in FRAME.findall(page.text)}
        assert len(sources) == 1 and len(FRAME.findall(page.text)) == 2  # one build, two frames
        [source] = sources
        assert (await edit(http, action="intro", text="Nach der Vorschau")).status_code == 303
        framed = await http.get(source)
        built_now = await http.get(source.split("&built=")[0])
    # The frame shows the message whose headers and links the page lists: built once,
    # before the edit; asked for without the page's number it is built anew.
    assert framed.status_code == built_now.status_code == 200
    assert "Nach der Vorschau" not in framed.text and "<html" in framed.text
    assert "Nach der Vorschau" in built_now.text
    # Another login's frame with this number is built for it, not taken from this one.
    async with client(demo_settings, collected) as other:
        await log_in(other)
        elsewhere = await other.get(source)
    assert "Nach der Vorschau" in elsewhere.text


async def test_what_goes_wrong_is_said_in_german(
    demo_settings: Settings,
    collected: Store,  # noqa: F811
) -> None:
    async with client(demo_settings, collected) as http:
        await log_in(http)
        nobody = await http.get(f"{ISSUE}/preview?subscriber=niemand@example.org")
        empty = await http.get(f"/admin/{NL}/2024-W05/preview")
        too_long = await edit(http, action="intro", text="x" * 2001)
        gone = await edit(http, action="pin", uid="no-such-article")
    assert nobody.status_code == 400 and "Es gibt keinen Abonnenten" in nobody.text
    assert empty.status_code == 400 and "Für diese Woche gibt es keine Artikel." in empty.text
    assert too_long.status_code == 400 and "Die Einleitung hat mehr als 2000" in too_long.text
    assert gone.status_code == 400 and "gehört nicht (mehr) zur Ausgabe" in gone.text
    for english in ("no subscriber", "no articles", "has more than", "not part of"):
        assert english not in nobody.text + empty.text + too_long.text + gone.text
    assert csrf_of(nobody)  # the page is whole: its forms are there
