"""Readers' requests in the editors' area on a phone, in German, in headless Chromium.

An admin logs in on a 375 px screen, finds a reader by address, downloads the export,
unsubscribes them from a newsletter, erases them after the confirmation page, searches
again, and reads the audit log. Every page (search, reader, erase confirmation, search
results, audit log) fits the screen and axe-core finds nothing on it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from digest.config import Settings
from digest.store import Store
from digest.store.privacy import Consent
from tests.web.test_browser import (  # noqa: F401  (the fixture and the skip)
    _offline_page,
    browser,
    pytestmark,
)
from tests.web.test_browser_admin_phone import (
    NL,
    PASSWORD,
    PHONE,
    admin_site,
    fits_a_phone_and_passes_axe,
)

READER = "leser0@example.org"
#: A browser as a consent proof keeps it: long, and with no place to break.
AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) " + "x" * 120


def _with_consent(store: Store) -> int:
    found = store.subscriber_by_email(READER)
    assert found is not None and found.id is not None
    store.record_consent(
        found.id,
        Consent(
            "Ja, ich möchte den Wochenüberblick per E-Mail erhalten.",
            newsletter=NL,
            created_at=datetime(2025, 1, 20, 9, tzinfo=UTC),
            ip="2001:db8::1",
            user_agent=AGENT,
            page_url="https://www.example.org/newsletter/anmelden?quelle=startseite-und-mehr",
            confirmed_at=datetime(2025, 1, 20, 9, 5, tzinfo=UTC),
            confirm_ip="2001:db8::2",
        ),
    )
    return found.id


async def test_an_admin_handles_a_request_on_a_phone(
    browser: object,  # noqa: F811
    demo_settings: Settings,
    store: Store,
    tmp_path: Path,
) -> None:
    async with admin_site(demo_settings, store) as site:
        sid = _with_consent(store)
        store.set_editor_role("erika", "admin")
        page = await _offline_page(browser, PHONE)
        await page.goto(f"{site.base}/admin/")
        await page.get_by_label("Name").fill("erika")
        await page.get_by_label("Passwort").fill(PASSWORD)
        await page.get_by_role("button", name="Einloggen").click()
        await page.get_by_role("link", name="Leserdaten").click()
        await page.wait_for_selector("h1:text('Leserdaten')")
        await fits_a_phone_and_passes_axe(page, "readers-search")

        await page.get_by_label("E-Mail-Adresse des Abonnenten").fill(READER.upper())
        await page.get_by_role("button", name="Suchen").click()
        await page.wait_for_url(f"**/admin/readers/{sid}")
        main = await page.inner_text("main")
        for shown in ("Abonnent Nr.", "Einwilligungsnachweise", "Anmeldeformular", "2001:db8::2",
                      "Zustellungen", "verschickt", "Protokoll zu diesem Abonnenten"):  # fmt: skip
            assert shown in main, shown
        await fits_a_phone_and_passes_axe(page, "reader")

        async with page.expect_download() as downloading:
            await page.get_by_role("button", name="Export herunterladen (JSON)").click()
        download = await downloading.value
        assert download.suggested_filename == f"abonnent-{sid}.json"
        await download.save_as(tmp_path / "export.json")
        exported = json.loads((tmp_path / "export.json").read_text(encoding="utf-8"))
        assert exported["consents"][0]["user_agent"] == AGENT
        assert [e["action"] for e in exported["audit"]] == ["search", "view", "export"]

        newsletter = site.newsletter.name
        await page.get_by_role("button", name=f"Von {newsletter} abmelden").click()
        await page.wait_for_selector(f"text=Abgemeldet von {newsletter}.")
        assert store.unsubscribed(sid, NL)

        await page.get_by_role("link", name="Daten löschen …").click()
        await page.wait_for_url(f"**/admin/readers/{sid}/erase")
        assert READER in await page.inner_text("main")
        await fits_a_phone_and_passes_axe(page, "reader-erase")
        assert store.subscriber_by_email(READER) is not None
        await page.get_by_role("button", name="Endgültig löschen").click()
        await page.wait_for_selector("text=Die Daten sind gelöscht.")
        assert store.subscriber_by_email(READER) is None and store.is_suppressed(READER)
        await fits_a_phone_and_passes_axe(page, "readers-erased")

        await page.get_by_label("E-Mail-Adresse des Abonnenten").fill(READER)
        await page.get_by_role("button", name="Suchen").click()
        await page.wait_for_selector("text=Kein Abonnent hat diese Adresse")
        assert "alle Newsletter · gelöscht" in await page.inner_text("main")
        await fits_a_phone_and_passes_axe(page, "readers-not-found")

        await page.get_by_role("link", name="Protokoll", exact=True).first.click()
        await page.wait_for_selector("h1:text('Protokoll')")
        log = await page.inner_text("main")
        assert "erika · hat die Daten gelöscht" in log
        assert f"hat von {newsletter} abgemeldet · Abonnent Nr. {sid}" in log
        assert READER not in log
        await fits_a_phone_and_passes_axe(page, "audit")
