"""What a person sees, in headless Chromium (Debian's /usr/bin/chromium via Playwright).

The digest on a phone and on a desktop, and the unsubscribe page clicked through
against the app served by uvicorn on a local port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest import jobs
from digest.config import Settings
from digest.models import Subscriber
from digest.store import Store
from digest.tokens import unsubscribe_url

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)"
)


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def _offline_page(browser: object, width: int):  # type: ignore[no-untyped-def]
    page = await browser.new_page(viewport={"width": width, "height": 900})  # type: ignore[attr-defined]
    # Nothing leaves the machine: image URLs of the demo site are answered with 404.
    await page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(("http://127.0.0.1", "about:", "data:"))
            else route.fulfill(status=404)
        ),
    )
    return page


@pytest.fixture
async def demo_html(demo_settings: Settings) -> str:
    store = jobs.open_store(demo_settings)
    try:
        await jobs.collect(demo_settings, store, now=datetime(2025, 2, 3, tzinfo=UTC))
        return jobs.preview(
            demo_settings, store, demo_settings.newsletters[0], "2025-W05", segment="alle"
        ).decode()
    finally:
        store.close()


async def test_digest_is_one_column_on_a_phone_and_600px_on_a_desktop(
    browser: object, demo_html: str
) -> None:
    phone = await _offline_page(browser, 375)
    await phone.set_content(demo_html)
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 375
    images = await phone.evaluate(
        "[...document.images].map(i => [i.alt, i.getBoundingClientRect().width])"
    )
    assert images and all(alt for alt, _ in images)
    assert all(width <= 375 for _, width in images)

    desktop = await _offline_page(browser, 1200)
    await desktop.set_content(demo_html)
    widths = await desktop.evaluate(
        "[...document.querySelectorAll('body > div > div')].map("
        "d => Math.round(d.getBoundingClientRect().width))"
    )
    assert widths and max(widths) == 600
    text = await desktop.inner_text("body")
    assert "Abmelden" in text and "Impressum" in text and "mehr…" in text


async def test_unsubscribe_is_a_click_on_the_page_the_link_opens(
    browser: object, demo_settings: Settings, store: Store
) -> None:
    import uvicorn

    from digest.web.app import create_app

    sid = store.save_subscriber(Subscriber("klick@example.org", "Klara Klick"), ["allgemein"])
    config = uvicorn.Config(
        create_app(demo_settings, store), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        link = unsubscribe_url(demo_settings, "wochenueberblick", sid)
        local = link.replace(demo_settings.public_url, f"http://127.0.0.1:{port}")
        page = await _offline_page(browser, 375)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        await page.goto(local)
        assert "abbestellen" in await page.inner_text("body")
        assert len(store.active_subscribers(newsletter="wochenueberblick")) == 1  # GET: nothing
        await _assert_readable_on_a_phone(page)
        await page.get_by_role("button", name="Abmelden").click()
        await page.wait_for_selector("text=erhalten diesen Newsletter nicht mehr")
        assert page.url == local  # answered in place, no redirect
        assert store.active_subscribers(newsletter="wochenueberblick") == []
        await _assert_readable_on_a_phone(page)
        assert "klick@example.org" not in await page.content()
        # The stylesheet loaded under the CSP, and the CSP refused nothing the page needs.
        assert not [text for text in console if "Content Security Policy" in text], console
    finally:
        server.should_exit = True
        await serving


async def _assert_readable_on_a_phone(page) -> None:  # type: ignore[no-untyped-def]
    """Fits 375 px, styled by the site's own stylesheet, and no axe-core violations."""
    from axe_playwright_python.async_playwright import Axe

    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    styled = await page.evaluate("getComputedStyle(document.querySelector('main')).maxWidth")
    assert styled == "576px"  # 36rem from static/site.css: the stylesheet was applied
    results = await Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


async def test_sign_up_confirm_change_preferences_and_unsubscribe(
    browser: object, demo_settings: Settings, store: Store
) -> None:
    """The whole double opt-in as a reader clicks it, the mail read from a real SMTP server."""
    import email
    import email.policy
    import re
    import socket
    from dataclasses import replace

    import uvicorn

    from digest.web.app import create_app
    from tests.smtp_server import RecordingServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with RecordingServer() as smtp:
        settings = replace(
            demo_settings, public_url=f"http://127.0.0.1:{port}", smtp=smtp.settings()
        )
        app = create_app(settings, store, send_mail=True, mail_interval=0.1)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.02)
            page = await _offline_page(browser, 375)
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))

            await page.goto(f"{settings.public_url}/subscribe/wochenueberblick")
            await _assert_readable_on_a_phone(page)
            await page.get_by_label("E-Mail-Adresse").fill("browser@example.org")
            await page.get_by_label("Name (freiwillig)").fill("Bruno Browser")
            await page.get_by_label("Ja, ich möchte").check()
            await page.get_by_role("button", name="Anmelden").click()
            await page.wait_for_selector("text=Bestätigungslink")
            await _assert_readable_on_a_phone(page)
            assert store.active_subscribers(newsletter="wochenueberblick") == []

            async with asyncio.timeout(10):
                while not smtp.messages:
                    await asyncio.sleep(0.05)
            [(_sender, recipients, data)] = smtp.messages
            assert recipients == ["browser@example.org"]
            mail = email.message_from_bytes(data, policy=email.policy.strict)
            text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            link = re.search(rf"{re.escape(settings.public_url)}/confirm/\S+", text)
            assert link

            await page.goto(link[0])
            await _assert_readable_on_a_phone(page)
            assert store.active_subscribers(newsletter="wochenueberblick") == []  # GET only
            await page.get_by_role("button", name="Anmeldung bestätigen").click()
            await page.wait_for_selector("text=ist bestätigt")
            await _assert_readable_on_a_phone(page)
            [reader] = store.active_subscribers(newsletter="wochenueberblick")
            assert reader.name == "Bruno Browser"

            await page.get_by_role("link", name="Einstellungen ändern").click()
            await page.wait_for_selector("text=Ihre Newsletter-Einstellungen")
            await _assert_readable_on_a_phone(page)
            await page.get_by_label("Politik", exact=True).uncheck()
            await page.get_by_role("button", name="Einstellungen speichern").click()
            await page.wait_for_selector("text=Ihre Einstellungen sind gespeichert")
            await _assert_readable_on_a_phone(page)
            [reader] = store.active_subscribers(newsletter="wochenueberblick")
            assert "politik" not in reader.categories and "verwaltung" in reader.categories

            await page.get_by_role("button", name="Von diesem Newsletter abmelden").click()
            await page.wait_for_selector("text=erhalten diesen Newsletter nicht mehr")
            await _assert_readable_on_a_phone(page)
            assert store.active_subscribers(newsletter="wochenueberblick") == []
            assert "browser@example.org" not in await page.content()
            assert not [text for text in console if "Content Security Policy" in text], console
            assert len(smtp.messages) == 1
        finally:
            server.should_exit = True
            await serving
