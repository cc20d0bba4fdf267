"""What a person sees, in headless Chromium (Debian's /usr/bin/chromium via Playwright).

The digest on a phone and on a desktop, the unsubscribe page, and a reader's whole
life on the list (sign-up to unsubscribe, with digests in between), clicked through
against the app served by uvicorn on a local port.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import html
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from digest.audience.tokens import unsubscribe_url
from digest.config import Settings
from digest.core.models import Article, Subscriber
from digest.ops import jobs
from digest.store import Store

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_digest_text_is_legible_in_light_and_dark_mode(
    browser: object, demo_html: str, scheme: str
) -> None:
    """The mail declares both colour schemes; a client in dark mode that honours its
    styles (Apple Mail) shows it dark, and axe-core finds no text of too little contrast
    either way (the page-level rules, landmarks and an <h1>, are not a mail's)."""
    from axe_playwright_python.async_playwright import Axe

    page = await browser.new_page(  # type: ignore[attr-defined]
        viewport={"width": 375, "height": 900}, color_scheme=scheme
    )
    await page.route("**/*", lambda route: route.fulfill(status=404))
    await page.set_content(demo_html)
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    headline = await page.evaluate("getComputedStyle(document.querySelector('h3 a')).color")
    if scheme == "dark":
        assert (background, headline) == ("rgb(16, 21, 27)", "rgb(168, 200, 240)")
    else:
        assert (background, headline) == ("rgb(238, 241, 245)", "rgb(29, 53, 87)")
    results = await Axe().run(page, options={"runOnly": ["wcag2a", "wcag2aa"]})
    assert results.violations_count == 0, results.generate_report()


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
        # The page names the newsletter being left (from the token), never the address.
        name = demo_settings.newsletter("wochenueberblick").name
        assert f"Möchten Sie den Newsletter „{name}“ abbestellen?" in await page.inner_text("body")
        assert len(store.active_subscribers(newsletter="wochenueberblick")) == 1  # GET: nothing
        await _assert_readable_on_a_phone(page)
        await page.get_by_role("button", name="Abmelden").click()
        await page.wait_for_selector(f"text=erhalten den Newsletter „{name}“ nicht mehr")
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

    # After a form's POST the awaited text can be in the DOM before the stylesheet has
    # loaded; measure the page as the reader sees it, once everything is in.
    await page.wait_for_load_state("load")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    styled = await page.evaluate("getComputedStyle(document.querySelector('main')).maxWidth")
    assert styled == "576px"  # 36rem from static/site.css: the stylesheet was applied
    results = await Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


async def test_sign_up_confirm_change_preferences_and_unsubscribe(
    browser: object, demo_settings: Settings, store: Store, store_url: str, tmp_path: Path
) -> None:
    """A reader's whole life on the list, clicked in Chromium, every mail from real SMTP.

    Sign up, confirm from the confirmation mail, receive a digest, change the choice
    through that digest's footer link, receive the next digest cut to it, unsubscribe
    through the link in that mail. The store and `digest subscribers export` follow each
    step.
    """
    from digest.delivery.transport import SmtpPool
    from digest.web.app import create_app
    from tests.conftest import TEST_SECRET_KEY
    from tests.smtp_server import RecordingServer

    address = "browser@example.org"
    newsletter = demo_settings.newsletter("wochenueberblick")
    now = datetime.now(UTC)
    first_week, next_week = _iso_week(now - timedelta(days=14)), _iso_week(now - timedelta(days=7))
    store.upsert_articles(
        newsletter.id,
        [
            _article(week, category, title)
            for week in (first_week, next_week)
            for category, title in (("politik", "Landtag"), ("verwaltung", "Onlinezugang"))
        ],
    )

    async def export() -> dict[str, Any]:
        """What `digest subscribers export ADDRESS` prints, run as the operator runs it."""
        code, out, err = await _digest_cli(
            "subscribers", "export", address, cwd=tmp_path,
            DIGEST_STORE_URL=store_url, DIGEST_SECRET_KEY=TEST_SECRET_KEY,
        )  # fmt: skip
        assert code == 0, err
        document: dict[str, Any] = json.loads(out)
        return document

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with RecordingServer() as smtp, _served(port) as serve:
        settings = replace(
            demo_settings,
            public_url=f"http://127.0.0.1:{port}",
            secret_key=TEST_SECRET_KEY,
            smtp=smtp.settings(),
        )
        await serve(create_app(settings, store, send_mail=True, mail_interval=0.1))
        page = await _offline_page(browser, 375)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))

        async def send(week: str) -> EmailMessage:
            """The week's issue sent as `digest send` sends it; the one message it sent."""
            before = len(smtp.messages)
            transport = SmtpPool(settings.smtp)
            try:
                report = await jobs.send(settings, store, newsletter, week, transport)
            finally:
                await transport.close()
            assert report is not None and report.sent == 1, report
            [(_sender, recipients, data)] = smtp.messages[before:]
            assert recipients == [address]
            return _parsed(data)

        # Sign up: nothing is active yet, the proof waits in the sign-up row.
        await page.goto(f"{settings.public_url}/subscribe/wochenueberblick")
        await _assert_readable_on_a_phone(page)
        await page.get_by_label("E-Mail-Adresse").fill(address)
        await page.get_by_label("Name (freiwillig)").fill("Bruno Browser")
        await page.get_by_label("Ja, ich möchte").check()
        await page.get_by_role("button", name="Anmelden").click()
        await page.wait_for_selector("text=Bestätigungslink")
        await _assert_readable_on_a_phone(page)
        assert store.active_subscribers(newsletter="wochenueberblick") == []

        # Confirm through the link in the confirmation mail (a GET alone does nothing).
        confirmation = _parsed((await _received(smtp, 1))[0][2])
        [link] = _links(confirmation, f"{settings.public_url}/confirm/")
        await page.goto(link)
        await _assert_readable_on_a_phone(page)
        assert store.active_subscribers(newsletter="wochenueberblick") == []
        await page.get_by_role("button", name="Anmeldung bestätigen").click()
        await page.wait_for_selector("text=ist bestätigt")
        await _assert_readable_on_a_phone(page)
        [reader] = store.active_subscribers(newsletter="wochenueberblick")
        assert reader.name == "Bruno Browser" and reader.lists == {"allgemein"}
        held = await export()
        assert held["subscriber"]["status"] == "active"
        assert held["subscriber"]["categories"] == []  # all ticked: everything
        assert [m["list"] for m in held["memberships"]] == ["allgemein"]
        [consent] = held["consents"]
        assert consent["source"] == "signup" and consent["newsletter"] == "wochenueberblick"
        assert consent["statement"] == newsletter.consent_statement
        assert consent["ip"] == consent["confirm_ip"] == "127.0.0.1"
        assert "HeadlessChrome" in consent["user_agent"]
        assert consent["page_url"].endswith("/subscribe/wochenueberblick")
        assert consent["signed_up_at"] <= consent["confirmed_at"]
        assert held["deliveries"] == [] and held["unsubscribed"] == []

        # The first digest has both categories.
        first = await send(first_week)
        first_text = _text(first)
        assert f"Landtag {first_week}" in first_text and f"Onlinezugang {first_week}" in first_text
        held = await export()
        [delivery] = held["deliveries"]
        assert (delivery["issue"], delivery["state"]) == (first_week, "sent")
        assert delivery["smtp_code"] == 250 and delivery["message_id"] == first["Message-ID"]

        # Its footer's "Einstellungen ändern" opens the preference centre: drop Politik.
        [link] = _links(first, f"{settings.public_url}/preferences/")
        await page.goto(link)
        await page.wait_for_selector("text=Ihre Newsletter-Einstellungen")
        await _assert_readable_on_a_phone(page)
        await page.get_by_label("Politik", exact=True).uncheck()
        await page.get_by_role("button", name="Einstellungen speichern").click()
        await page.wait_for_selector("text=Ihre Einstellungen sind gespeichert")
        await _assert_readable_on_a_phone(page)
        [reader] = store.active_subscribers(newsletter="wochenueberblick")
        assert "politik" not in reader.categories and "verwaltung" in reader.categories
        held = await export()
        assert "politik" not in held["subscriber"]["categories"]
        assert "verwaltung" in held["subscriber"]["categories"]
        assert held["subscriber"]["status"] == "active" and len(held["consents"]) == 1

        # The next digest is cut to the new choice.
        following = await send(next_week)
        following_text = _text(following)
        assert f"Onlinezugang {next_week}" in following_text
        assert "Landtag" not in following_text
        assert "Landtag" not in following.get_body(("html",)).get_content()  # type: ignore[union-attr]
        held = await export()
        assert [(d["issue"], d["state"]) for d in held["deliveries"]] == [
            (first_week, "sent"),
            (next_week, "sent"),
        ]

        # Unsubscribe through that mail's own link: the page asks, the button does it.
        [link] = _links(following, f"{settings.public_url}/unsubscribe/")
        await page.goto(link)
        await _assert_readable_on_a_phone(page)
        assert len(store.active_subscribers(newsletter="wochenueberblick")) == 1  # GET asks
        await page.get_by_role("button", name="Abmelden").click()
        await page.wait_for_selector(f"text=erhalten den Newsletter „{newsletter.name}“ nicht mehr")
        await _assert_readable_on_a_phone(page)
        assert store.active_subscribers(newsletter="wochenueberblick") == []
        assert store.is_suppressed(address, "wochenueberblick")
        assert address not in await page.content()
        held = await export()
        assert [u["newsletter"] for u in held["unsubscribed"]] == ["wochenueberblick"]
        assert [s["reason"] for s in held["suppressions"]] == ["unsubscribed"]
        assert len(held["consents"]) == 1 and len(held["deliveries"]) == 2  # proof kept

        assert not [text for text in console if "Content Security Policy" in text], console
        assert len(smtp.messages) == 3  # the confirmation and two digests, nothing else


def _iso_week(when: datetime) -> str:
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def _article(week: str, category: str, title: str) -> Article:
    """An article on the Wednesday of ``week``, its title ending in the week."""
    year, number = (int(part) for part in week.split("-W"))
    published = datetime.combine(date.fromisocalendar(year, number, 3), time(12), tzinfo=UTC)
    return Article(
        uid=f"{category}-{week}",
        source="Test",
        title=f"{title} {week}",
        link=f"https://kommune-digital.example/{category}/{week}",
        published=published,
        category=category,
        summary=f"<p>Was in {title} in der Woche {week} geschah.</p>",
    )


@asynccontextmanager
async def _served(port: int) -> AsyncIterator[Callable[[Any], Awaitable[None]]]:
    """``await serve(app)`` runs the app under uvicorn on ``port`` until the block ends."""
    import uvicorn

    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def serve(app: Any) -> None:
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        servers.append((server, asyncio.create_task(server.serve())))
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)

    try:
        yield serve
    finally:
        for server, serving in servers:
            server.should_exit = True
            await serving


async def _received(smtp: Any, count: int) -> list[tuple[str, list[str], bytes]]:
    """The server's messages once it has ``count`` of them."""
    async with asyncio.timeout(10):
        while len(smtp.messages) < count:
            await asyncio.sleep(0.05)
    messages: list[tuple[str, list[str], bytes]] = smtp.messages
    return messages


def _parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.strict)
    assert isinstance(message, EmailMessage)
    return message


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    text: str = body.get_content()
    return text


def _links(message: EmailMessage, prefix: str) -> list[str]:
    """The distinct links of the message's HTML part that start with ``prefix``."""
    body = message.get_body(("html",))
    assert body is not None
    hrefs = re.findall(r'href="([^"]*)"', body.get_content())
    return sorted({html.unescape(href) for href in hrefs if html.unescape(href).startswith(prefix)})


async def _digest_cli(*args: str, cwd: Path, **env: str) -> tuple[int, str, str]:
    """``digest ARGS`` with the shipped config.toml, as a process of its own."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "--config", str(ROOT / "config.toml"), *args,
        cwd=cwd, env={**environment, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_complained_reader_s_preferences_say_why_and_where_to_sign_up(
    browser: object, demo_settings: Settings, store: Store
) -> None:
    """The blocked newsletter is shown, cannot be ticked, and the page stays accessible."""
    from digest.audience.tokens import preferences_url
    from digest.web.app import create_app
    from tests.conftest import TEST_SECRET_KEY

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = replace(
        demo_settings, public_url=f"http://127.0.0.1:{port}", secret_key=TEST_SECRET_KEY
    )
    sid = store.save_subscriber(Subscriber("beschwerde@example.org", "B"), ["allgemein"])
    store.suppress("beschwerde@example.org", "complaint")
    async with _served(port) as serve:
        await serve(create_app(settings, store))
        page = await _offline_page(browser, 375)
        await page.goto(preferences_url(settings, "wochenueberblick", sid))
        box = page.locator('input[name="newsletters"][value="wochenueberblick"]')
        assert await box.is_disabled()
        await page.get_by_role("button", name="Einstellungen speichern").click()
        await page.wait_for_selector("text=gespeichert")
        await _assert_readable_on_a_phone(page)
        await page.get_by_role("link", name="melden Sie sich bitte neu an").click()
        assert page.url == f"{settings.public_url}/subscribe/wochenueberblick"
    assert store.is_suppressed("beschwerde@example.org", "wochenueberblick")
