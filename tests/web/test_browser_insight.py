"""The figures pages in headless Chromium at 375 px: axe-core finds nothing serious, the
page is no wider than the phone (tables scroll in their own box), the charts show, and
the CSV links are there. Also the page a forged click link opens. Screenshots go to
tests/web/screenshots/ (git-ignored)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from datetime import date

from digest.audience.tokens import MAIL, make_click_token
from digest.config import Settings
from digest.store import Store
from digest.store.clicks import READ, SCANNER, ClickKey
from tests.web.test_browser import (  # noqa: F401  (the fixture and the skip)
    _offline_page,
    browser,
    pytestmark,
)
from tests.web.test_browser_admin import PASSWORD, SCREENSHOTS, assert_accessible
from tests.web.test_insight import sent  # noqa: F401  (the fixture)
from tests.web.test_web_admin import NL, WEEK, collected  # noqa: F401  (the fixture)


async def no_wider_than_the_phone(page) -> None:  # type: ignore[no-untyped-def]
    scroll, client = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert client <= 375 and scroll <= client, (scroll, client)


async def test_figures_pages_on_a_phone(
    browser: object,  # noqa: F811
    demo_settings: Settings,
    sent: Store,  # noqa: F811
) -> None:
    import uvicorn

    from digest.web.app import create_app

    store = sent
    record = store.get_issue(NL, WEEK)
    targets = store.click_targets(NL, WEEK)
    assert record is not None and targets is not None
    # Many clicks on an article with a long title: the widest a row gets.
    longest = max(targets[1], key=lambda a: len(a.uid))
    store.add_clicks(
        {
            ClickKey(record.id, longest.article_id, date(2025, 2, 4), "web", READ): 12345,
            ClickKey(record.id, longest.article_id, date(2025, 2, 4), "mail", SCANNER): 67890,
        }
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = replace(demo_settings, public_url=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, store, login_delay=0),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    serving = asyncio.create_task(server.serve())
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        base = settings.public_url
        page = await _offline_page(browser, 375)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        await page.goto(f"{base}/admin/login")
        await page.get_by_label("Name").fill("erika")
        await page.get_by_label("Passwort").fill(PASSWORD)
        await page.get_by_role("button", name="Einloggen").click()
        await page.wait_for_selector("text=Leser je Segment")

        await page.get_by_role(
            "link", name="Zahlen: Klicks je Ausgabe, Leserschaft je Woche"
        ).click()
        await page.wait_for_selector("text=Leserschaft je Woche, die neueste zuerst")
        await assert_accessible(page)
        await no_wider_than_the_phone(page)
        chart = page.get_by_role("img", name="Leserschaft je Woche")
        box = await chart.bounding_box()
        assert box is not None and 200 < box["width"] <= 375
        assert await page.get_by_role(
            "link", name="Leserschaft je Woche herunterladen (CSV)"
        ).count()
        await page.screenshot(
            path=str(SCREENSHOTS / "admin-figures-newsletter.png"), full_page=True
        )
        await chart.screenshot(path=str(SCREENSHOTS / "admin-figures-readers-chart.png"))

        await page.get_by_role("link", name=WEEK).click()
        await page.wait_for_selector("text=Nachrichten dieser Ausgabe")
        await assert_accessible(page)
        await no_wider_than_the_phone(page)
        await page.screenshot(path=str(SCREENSHOTS / "admin-figures-issue-top.png"))
        for n, name in enumerate(("Klicks je Artikel", "Klicks je Rubrik")):
            drawn = page.get_by_role("img", name=name, exact=True)
            box = await drawn.bounding_box()
            assert box is not None and 200 < box["width"] <= 375, name
            await drawn.screenshot(path=str(SCREENSHOTS / f"admin-figures-chart-{n}.png"))
        assert "12.345" in await page.inner_text("main")  # German digits
        download = page.get_by_role("link", name="Zahlen herunterladen (CSV)")
        assert await download.get_attribute("href") == f"/admin/{NL}/{WEEK}/figures.csv"
        await page.screenshot(path=str(SCREENSHOTS / "admin-figures-issue.png"), full_page=True)

        # A forged click link: the 404 page, on a phone too.
        token = make_click_token("another-secret-key-0123456789", NL, WEEK, longest.uid, MAIL)
        answer = await page.goto(f"{base}/r/{token}")
        assert answer is not None and answer.status == 404
        await page.wait_for_selector("text=Seite nicht gefunden")
        await assert_accessible(page)
        await no_wider_than_the_phone(page)
        assert not [t for t in console if "Content Security Policy" in t], console
    finally:
        server.should_exit = True
        await serving
