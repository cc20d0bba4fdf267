"""Signing up in headless Chromium at 375 px, with JavaScript off: the region question.

The demo newsletter has regional content: "Alle Regionen" is chosen at first and the
single regions show only once "Nur ausgewählte Regionen" is (by the stylesheet alone).
A town's newsletter asks nothing about regions. Each reader confirms through the link
of the mail received over real SMTP, and the store holds what they chose. Every page
state is checked with axe-core (in a second page with JavaScript, which axe needs).
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from digest.audience.tokens import preferences_url
from digest.config import Settings, parse_settings
from digest.store import Store
from tests.smtp_server import RecordingServer
from tests.web.test_browser import (
    CHROMIUM,
    _assert_readable_on_a_phone,
    _links,
    _offline_page,
    _parsed,
    _received,
    _served,
    browser,  # noqa: F401
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)"
)

ROOT = Path(__file__).resolve().parents[2]
NL = "wochenueberblick"
TOWN = "stadtblatt"


def _with_town(demo_settings: Settings, port: int, smtp: RecordingServer) -> Settings:
    """The demo and a town's newsletter whose config names no regions."""
    data = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))
    [demo] = data["newsletters"]
    town = {
        **demo,
        "id": TOWN,
        "name": "Stadtblatt Musterstadt",
        "list_id": "stadtblatt.kommune-digital.example",
        "segments": [{"name": "alle", "lists": ["stadtblatt"]}],
    }
    del town["regions"]
    data["newsletters"] = [demo, town]
    settings = parse_settings(data, environ={"DIGEST_STORE_URL": demo_settings.store.url})
    return replace(
        settings,
        outbox=demo_settings.outbox,
        public_url=f"http://127.0.0.1:{port}",
        smtp=smtp.settings(),
    )


class Reader:
    """One person's phone without JavaScript, and a twin page for axe-core, which needs
    JavaScript (the pages' own policy allows no script either way)."""

    def __init__(self, page: Any, twin: Any) -> None:
        self.page = page
        self.twin = twin

    async def check(self, *ticked: str) -> None:
        """The reader's page fits 375 px; the twin opens it, ticks what the reader
        ticked (by label), and axe-core finds nothing there."""
        assert await self.page.evaluate("document.documentElement.scrollWidth") <= 375
        await self.twin.goto(self.page.url)
        for label in ticked:
            await self.twin.get_by_label(label, exact=True).check()
        await _assert_readable_on_a_phone(self.twin)


@pytest.fixture
async def reader(browser: object) -> AsyncIterator[Reader]:  # noqa: F811
    context = await browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 375, "height": 900}, java_script_enabled=False
    )
    try:
        yield Reader(await context.new_page(), await _offline_page(browser, 375))
    finally:
        await context.close()


async def _sign_up_and_confirm(
    reader: Reader, smtp: RecordingServer, settings: Settings, address: str, count: int
) -> None:
    page = reader.page
    await page.get_by_label("E-Mail-Adresse").fill(address)
    await page.get_by_label("Ja, ich möchte").check()
    await page.get_by_role("button", name="Anmelden").click()
    await page.wait_for_selector("text=Bestätigungslink")
    mail = _parsed((await _received(smtp, count))[count - 1][2])
    [link] = _links(mail, f"{settings.public_url}/confirm/")
    await page.goto(link)
    await page.get_by_role("button", name="Anmeldung bestätigen").click()
    await page.wait_for_selector("text=ist bestätigt")


async def test_all_regions_or_one_region_then_confirm(
    reader: Reader, demo_settings: Settings, store: Store
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with RecordingServer() as smtp, _served(port) as serve:
        from digest.web.app import create_app

        settings = _with_town(demo_settings, port, smtp)
        await serve(create_app(settings, store, send_mail=True, mail_interval=0.1))
        page = reader.page
        signup = f"{settings.public_url}/subscribe/{NL}"

        # First reader: every region, as the page offers it.
        await page.goto(signup)
        assert await page.get_by_label("Alle Regionen").is_checked()
        assert not await page.get_by_label("Bayern").is_visible()  # nothing to untick
        await reader.check()
        await _sign_up_and_confirm(reader, smtp, settings, "alle@example.org", 1)
        first = store.subscriber_by_email("alle@example.org")
        assert first is not None and first.regions == frozenset()  # everything

        # Second reader: only Bayern, one click on the choice and one tick.
        await page.goto(signup)
        await page.get_by_label("Nur ausgewählte Regionen").check()
        bayern = page.get_by_label("Bayern", exact=True)
        assert await bayern.is_visible() and not await bayern.is_checked()
        await bayern.check()
        await reader.check("Nur ausgewählte Regionen", "Bayern")
        await _sign_up_and_confirm(reader, smtp, settings, "bayern@example.org", 2)
        second = store.subscriber_by_email("bayern@example.org")
        assert second is not None and second.regions == {"Bayern"}

        # Their preference page asks the same question, answered as they did.
        assert second.id is not None
        await page.goto(preferences_url(settings, NL, second.id))
        assert await page.get_by_label("Nur ausgewählte Regionen").is_checked()
        assert await page.get_by_label("Bayern", exact=True).is_checked()
        await reader.check()

        # A town's newsletter: no question about regions, and no complaint about them.
        await page.goto(f"{settings.public_url}/subscribe/{TOWN}")
        body = await page.inner_text("body")
        assert "Stadtblatt Musterstadt" in body and "Region" not in body
        await reader.check()
        await _sign_up_and_confirm(reader, smtp, settings, "stadt@example.org", 3)
        town = store.subscriber_by_email("stadt@example.org")
        assert town is not None and "stadtblatt" in town.lists
        assert len(smtp.messages) == 3  # one confirmation each
