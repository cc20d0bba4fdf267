"""The public archive in headless Chromium against the app served by uvicorn: from the
"Im Browser ansehen" link of a mail received over real SMTP to the issue, the list and
the index, each on a 375 px phone, checked with axe-core."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from digest.config import Settings
from digest.delivery.transport import SmtpPool
from digest.ops import jobs
from digest.ops.demo import import_demo_lists
from tests.smtp_server import RecordingServer
from tests.web.test_browser import CHROMIUM, _offline_page, browser  # noqa: F401

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)"
)

NL = "wochenueberblick"
SENDS = (("2025-W04", datetime(2025, 1, 27, 6, 0, tzinfo=UTC)),
         ("2025-W05", datetime(2025, 2, 3, 6, 0, tzinfo=UTC)))  # fmt: skip


async def _assert_readable_on_a_phone(page) -> None:  # type: ignore[no-untyped-def]
    """Fits 375 px without scrolling sideways, styled, and no axe-core violation at all."""
    from axe_playwright_python.async_playwright import Axe

    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    assert await page.evaluate("document.body.scrollWidth") <= 375
    styled = await page.evaluate("getComputedStyle(document.body).marginTop")
    assert styled == "0px"  # static/site.css was applied
    results = await Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


async def test_archive_from_the_mail_link_on_a_phone(
    browser: object,  # noqa: F811
    demo_settings: Settings,
) -> None:
    import uvicorn

    from digest.web.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with RecordingServer() as smtp:
        settings = replace(
            demo_settings, public_url=f"http://127.0.0.1:{port}", smtp=smtp.settings()
        )
        store = jobs.open_store(settings)
        newsletter = settings.newsletters[0]
        import_demo_lists(settings, store, newsletter)
        await jobs.collect(settings, store, NL, now=SENDS[1][1])
        pool = SmtpPool(settings.smtp)
        try:
            for week, now in SENDS:
                await jobs.send(settings, store, newsletter, week, pool, now=now)
        finally:
            await pool.close()
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
            mail = email.message_from_bytes(smtp.messages[-1][2], policy=email.policy.strict)
            text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            link = re.match(r"Im Browser ansehen: (\S+)", text)
            assert link and link[1] == f"{settings.public_url}/archive/{NL}/2025-W05"

            page = await _offline_page(browser, 375)
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            await page.goto(link[1])
            await _assert_readable_on_a_phone(page)
            body = await page.inner_text("main")
            assert "E-Government" in body and "mehr…" in body and "Impressum" in body
            assert "Abmelden" not in body and "Im Browser ansehen" not in body
            # The digest's inline styles are in force (the archive's CSP allows them).
            header = await page.evaluate(
                "getComputedStyle(document.querySelector('.mail h2')).textTransform"
            )
            assert header == "uppercase"
            images = await page.evaluate(
                "[...document.querySelectorAll('.mail img')]"
                ".map(i => i.getBoundingClientRect().right)"
            )
            assert images and max(images) <= 375

            await page.get_by_role("link", name="Alle Ausgaben von").click()
            await page.wait_for_url(f"{settings.public_url}/archive/{NL}/")
            await _assert_readable_on_a_phone(page)
            issues = await page.eval_on_selector_all(
                ".issues a", "links => links.map(a => a.getAttribute('href'))"
            )
            assert issues == ["2025-W05", "2025-W04"]

            await page.get_by_role("link", name="Alle Newsletter").click()
            await page.wait_for_url(f"{settings.public_url}/archive/")
            await _assert_readable_on_a_phone(page)
            await page.get_by_role("link", name=newsletter.name).click()
            await page.get_by_role("link", name="KW 4/2025").click()
            await page.wait_for_url(f"{settings.public_url}/archive/{NL}/2025-W04")
            await _assert_readable_on_a_phone(page)
            assert not [t for t in console if "Content Security Policy" in t], console

            desktop = await _offline_page(browser, 1200)
            await desktop.goto(link[1])
            width = await desktop.evaluate(
                "Math.round(document.querySelector('.mail > div').getBoundingClientRect().width)"
            )
            assert width == 600
        finally:
            server.should_exit = True
            await serving
            store.close()
