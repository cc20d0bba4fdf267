"""The editors' area as an editor clicks through it, in headless Chromium against uvicorn.

Log in, leave one article out, pin another, rewrite a teaser, preview as a segment on a
375 px phone frame (no horizontal scrolling), send a test and read it from a real SMTP
server, approve, let the send run and find the edits in what readers received and on the
archive page. axe-core checks every page of the area and the archive. Screenshots of
both preview frames go to tests/web/screenshots/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from digest.config import Settings
from digest.core.models import Subscriber
from digest.issue.editors import add_editor
from digest.ops import jobs
from digest.store import Store
from tests.smtp_server import RecordingServer
from tests.web.test_browser import (  # noqa: F401  (the fixture and the skip)
    _offline_page,
    browser,
    pytestmark,
)

NL = "wochenueberblick"
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, tzinfo=UTC)
PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).parent / "screenshots"


async def assert_accessible(page) -> None:  # type: ignore[no-untyped-def]
    """No serious or critical axe-core violation on the page."""
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page)
    grave = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]
    assert not grave, grave


def body_text(data: bytes) -> str:
    mail = email.message_from_bytes(data, policy=email.policy.default)
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    return " ".join(part.get_content().split())  # words, not the text part's line breaks


async def test_edit_preview_test_approve_and_send(
    browser: object,  # noqa: F811
    demo_settings: Settings,
    store: Store,
) -> None:
    import uvicorn

    from digest.web.app import create_app

    newsletter = replace(demo_settings.newsletter(NL), review="required", archive=True)
    await jobs.collect(demo_settings, store, NL, now=NOW)
    add_editor(store, "erika", "erika@example.org", PASSWORD)
    for n, lists in enumerate((["allgemein"], ["bayern"], ["allgemein"])):
        store.save_subscriber(Subscriber(f"leser{n}@example.org", f"Leser {n}"), lists)
    prepared = jobs.prepare_issue(store, newsletter, WEEK, NOW, save=False)
    assert prepared is not None
    left_out, rewritten, pinned = (i.article for i in prepared.issue.sections[0].items[:3])
    SCREENSHOTS.mkdir(exist_ok=True)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with RecordingServer() as smtp:
        settings = replace(
            demo_settings,
            public_url=f"http://127.0.0.1:{port}",
            smtp=smtp.settings(),
            newsletters=(newsletter,),
        )
        app = create_app(settings, store, login_delay=0)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.02)
            base = settings.public_url
            page = await _offline_page(browser, 1280)
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))

            await page.goto(f"{base}/admin/{NL}/{WEEK}")
            assert "/admin/login" in page.url  # no session: the login form
            await assert_accessible(page)
            await page.get_by_label("Name").fill("erika")
            await page.get_by_label("Passwort").fill(PASSWORD)
            await page.get_by_role("button", name="Einloggen").click()
            await page.wait_for_selector("text=Einleitung")
            await assert_accessible(page)

            await page.get_by_role("button", name=f"Weglassen: {left_out.title}").click()
            await page.wait_for_selector("text=Weggelassen")
            await page.get_by_role("button", name=f"Oben anheften: {pinned.title}").click()
            await page.wait_for_selector("text=Angeheftet")
            item = page.locator("li.article", has_text=rewritten.title)
            await item.locator("textarea").fill("Von der Redaktion neu geschrieben.")
            await item.get_by_role("button", name="Anreißer speichern").click()
            await page.wait_for_selector("text=umgeschrieben")
            await page.get_by_label("Text vor der ersten Rubrik").fill(
                "Liebe Leserinnen und Leser!"
            )
            await page.get_by_role("button", name="Einleitung speichern").click()
            await page.wait_for_selector("text=Verlauf")
            await assert_accessible(page)

            await page.goto(f"{base}/")
            await page.goto(f"{base}/admin/")
            await page.wait_for_selector("text=Leser je Segment")
            await assert_accessible(page)

            await page.goto(f"{base}/admin/{NL}/{WEEK}/preview?segment=bayern")
            await page.wait_for_selector("iframe.phone")
            await assert_accessible(page)
            widths = {}
            for kind in ("desktop", "phone"):
                handle = await page.query_selector(f"iframe.{kind}")
                assert handle is not None
                frame = await handle.content_frame()
                assert frame is not None
                await frame.wait_for_selector("text=Liebe Leserinnen und Leser!")
                widths[kind] = await frame.evaluate(
                    "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
                )
                await handle.screenshot(path=str(SCREENSHOTS / f"admin-preview-{kind}.png"))
            scroll, client = widths["phone"]
            assert client <= 375 and scroll <= client, widths  # no horizontal scrolling
            assert widths["desktop"][1] >= 600

            await page.goto(f"{base}/admin/{NL}/{WEEK}/test")
            await assert_accessible(page)
            await page.get_by_label("Senden an").fill("probe@example.org")
            await page.get_by_label("Als Segment").select_option("alle")
            await page.get_by_role("button", name="Test senden").click()
            await page.wait_for_selector("text=Antwort des Mailservers")
            assert "250" in await page.inner_text("main")
            await assert_accessible(page)
            [(_from, rcpt, test_mail)] = smtp.messages
            assert rcpt == ["probe@example.org"]
            parsed = email.message_from_bytes(test_mail, policy=email.policy.default)
            assert str(parsed["subject"]).startswith("[TEST] ")
            assert "Von der Redaktion neu geschrieben." in body_text(test_mail)
            assert store.get_issue(NL, WEEK) is None  # a test is no delivery

            await page.goto(f"{base}/admin/{NL}/{WEEK}")
            await page.get_by_role("button", name="Ausgabe freigeben").click()
            await page.wait_for_selector("text=Die Ausgabe ist freigegeben")
            await assert_accessible(page)
            async with asyncio.timeout(20):
                while len(smtp.messages) < 1 + 3 or not store.sent_issues(NL):
                    await asyncio.sleep(0.1)

            # The public archive shows the issue as sent: with the editors' changes.
            await page.goto(f"{base}/archive/{NL}/{WEEK}")
            archived = await page.inner_text("main")
            assert "Liebe Leserinnen und Leser!" in archived
            assert "Von der Redaktion neu geschrieben." in archived
            assert left_out.title not in archived and pinned.title in archived
            await assert_accessible(page)
            assert not [t for t in console if "Content Security Policy" in t], console
        finally:
            server.should_exit = True
            await serving

    record = store.get_issue(NL, WEEK)
    assert record is not None and record.status == "sent"
    readers = {tuple(rcpt): data for _f, rcpt, data in smtp.messages[1:]}
    assert set(readers) == {(f"leser{n}@example.org",) for n in range(3)}
    text = body_text(readers[("leser0@example.org",)])
    assert "Liebe Leserinnen und Leser!" in text
    assert "Von der Redaktion neu geschrieben." in text
    assert " ".join(left_out.title.split()[:5]) not in text
    section = text.split(prepared.issue.sections[0].title.upper(), 1)[1]
    first_words = " ".join(pinned.title.split()[:3]), " ".join(rewritten.title.split()[:3])
    assert section.index(first_words[0]) < section.index(first_words[1])
