"""The editors' area under /admin, through the ASGI app in-process, with a real SMTP server."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from digest.config import Settings
from digest.core.errors import NotApproved
from digest.core.models import Subscriber
from digest.delivery.transport import SmtpPool
from digest.issue.editors import add_editor
from digest.ops import jobs
from digest.store import Store
from digest.web.admin import SESSION_COOKIE, _session_hash
from digest.web.app import create_app
from tests.smtp_server import RecordingServer

NL = "wochenueberblick"
WEEK = "2025-W05"
ISSUE = f"/admin/{NL}/{WEEK}"
NOW = datetime(2025, 2, 3, 6, tzinfo=UTC)
PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def client(settings: Settings, store: Store) -> httpx.AsyncClient:
    app = create_app(settings, store, login_delay=0)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_url)


def csrf_of(page: httpx.Response, index: int = 0) -> str:
    return CSRF.findall(page.text)[index]


@pytest.fixture
async def collected(demo_settings: Settings, store: Store) -> Store:
    await jobs.collect(demo_settings, store, NL, now=NOW)
    add_editor(store, "erika", "erika@example.org", PASSWORD)
    for n, lists in enumerate((["allgemein"], ["bayern"], ["allgemein"])):
        store.save_subscriber(Subscriber(f"leser{n}@example.org", f"Leser {n}"), lists)
    return store


async def log_in(
    http: httpx.AsyncClient, name: str = "erika", password: str = PASSWORD
) -> httpx.Response:
    form = await http.get("/admin/login")
    return await http.post(
        "/admin/login",
        data={"csrf": csrf_of(form), "name": name, "password": password, "next": "/admin/"},
    )


def first_uids(store: Store, settings: Settings) -> list[str]:
    prepared = jobs.prepare_issue(store, settings.newsletter(NL), WEEK, NOW, save=False)
    assert prepared is not None
    return [item.article.uid for item in prepared.issue.sections[0].items]


async def edit(http: httpx.AsyncClient, **data: str) -> httpx.Response:
    page = await http.get(ISSUE)
    return await http.post(ISSUE, data={"csrf": csrf_of(page, -1), **data})


# --- permissions ---------------------------------------------------------------------------


async def test_nothing_answers_without_a_session(demo_settings: Settings, collected: Store) -> None:
    async with client(demo_settings, collected) as http:
        for path in (
            "/admin/",
            ISSUE,
            f"{ISSUE}/preview",
            f"/admin/frame/{NL}/{WEEK}",
            f"{ISSUE}/test",
        ):
            page = await http.get(path)
            assert page.status_code == 303, path
            assert page.headers["location"].startswith("/admin/login?next=")
            assert "Leser" not in page.text
        for path in (ISSUE, f"{ISSUE}/approve", f"{ISSUE}/test", "/admin/logout"):
            refused = await http.post(path, data={"action": "exclude", "uid": "x"})
            assert refused.status_code == 403, path
    assert collected.issue_edits(NL, WEEK).excluded == frozenset()


async def test_login_sets_a_safe_cookie_and_logout_ends_the_session(
    demo_settings: Settings, collected: Store
) -> None:
    async with client(demo_settings, collected) as http:
        wrong = await log_in(http, password="not the password")
        assert wrong.status_code == 401 and "nicht korrekt" in wrong.text
        done = await log_in(http)
        assert done.status_code == 303 and done.headers["location"] == "/admin/"
        cookie = done.headers["set-cookie"]
        assert f"{SESSION_COOKIE}=" in cookie
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/admin" in cookie
        assert "Secure" not in cookie  # public_url is http on loopback
        overview = await http.get("/admin/")
        assert overview.status_code == 200 and "erika" in overview.text
        await http.post("/admin/logout", data={"csrf": csrf_of(overview)})
        http.cookies.clear()
        http.cookies.set(SESSION_COOKIE, cookie.split("=", 1)[1].split(";")[0], path="/admin")
        assert (await http.get("/admin/")).status_code == 303  # the session is gone


async def test_cookie_is_secure_behind_https(demo_settings: Settings, collected: Store) -> None:
    settings = replace(demo_settings, public_url="https://news.example.org")
    async with client(settings, collected) as http:
        form = await http.get("/admin/login")
        done = await http.post(
            "/admin/login",
            data={"csrf": csrf_of(form), "name": "erika", "password": PASSWORD},
            headers={"origin": "https://news.example.org"},
        )
    assert done.status_code == 303 and "Secure" in done.headers["set-cookie"]


async def test_an_expired_session_is_no_session(demo_settings: Settings, collected: Store) -> None:
    editor = collected.editor_by_name("erika")
    assert editor is not None
    past = datetime.now(UTC) - timedelta(hours=10)
    collected.start_session(editor.id, _session_hash("old-token"), past, past + timedelta(hours=8))
    async with client(demo_settings, collected) as http:
        http.cookies.set(SESSION_COOKIE, "old-token", path="/admin")
        assert (await http.get("/admin/")).status_code == 303
        refused = await http.post(ISSUE, data={"action": "intro", "text": "Hallo"})
        assert refused.status_code == 403
    assert collected.issue_edits(NL, WEEK).intro == ""


async def test_forms_need_their_own_csrf_token(demo_settings: Settings, collected: Store) -> None:
    uid = first_uids(collected, demo_settings)[0]
    async with client(demo_settings, collected) as http:
        await log_in(http)
        missing = await http.post(ISSUE, data={"action": "exclude", "uid": uid})
        wrong = await http.post(ISSUE, data={"action": "exclude", "uid": uid, "csrf": "forged"})
        page = await http.get(ISSUE)
        token = csrf_of(page, -1)
    assert missing.status_code == wrong.status_code == 400
    # A token shown to another login is no use to this one.
    async with client(demo_settings, collected) as other:
        await log_in(other)
        foreign = await other.post(ISSUE, data={"action": "exclude", "uid": uid, "csrf": token})
    assert foreign.status_code == 400
    assert collected.issue_edits(NL, WEEK).excluded == frozenset()


async def test_failed_logins_are_throttled_per_account(
    demo_settings: Settings, collected: Store
) -> None:
    settings = replace(demo_settings, admin=replace(demo_settings.admin, login_attempts=3))
    async with client(settings, collected) as http:
        answers = [(await log_in(http, password=f"wrong {n}")).status_code for n in range(3)]
        blocked = await log_in(http)  # the right password, but too late
    assert answers == [401, 401, 401]
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert SESSION_COOKIE not in blocked.headers.get("set-cookie", "")


async def test_a_week_that_does_not_exist_is_a_404_page(
    demo_settings: Settings, collected: Store
) -> None:
    # No week in the calendar, a window past the last date, keys written otherwise.
    weeks = ("2025-W99", "9999-W52", "2025-W00", "0001-W01", "0002-W01", "2025-w05")
    async with client(demo_settings, collected) as http:
        await log_in(http)
        token = csrf_of(await http.get(ISSUE), -1)
        for week in weeks:
            issue = f"/admin/{NL}/{week}"
            for path in (issue, f"{issue}/approve", f"{issue}/preview", f"{issue}/test",
                         f"/admin/frame/{NL}/{week}", f"/archive/{NL}/{week}"):  # fmt: skip
                shown = await http.get(path)
                assert shown.status_code == 404, path
                assert "nicht gefunden" in shown.text, path
            for path in (issue, f"{issue}/approve", f"{issue}/test"):
                posted = await http.post(path, data={"csrf": token, "action": "intro"})
                assert posted.status_code == 404, path
        # The connection is fine afterwards.
        assert (await http.get(ISSUE)).status_code == 200
    assert collected.approval(NL, "9999-W52") is None


async def test_a_burst_of_logins_checks_no_more_passwords_than_the_limit(
    demo_settings: Settings, collected: Store
) -> None:
    settings = replace(demo_settings, admin=replace(demo_settings.admin, login_attempts=5))
    async with client(settings, collected) as http:
        token = csrf_of(await http.get("/admin/login"))
        # The right password last among 40 sent at once: its turn comes after the limit.
        passwords = [f"wrong {n}" for n in range(39)] + [PASSWORD]
        answers = await asyncio.gather(
            *(
                http.post("/admin/login", data={"csrf": token, "name": "erika", "password": p})
                for p in passwords
            )
        )
        late = await log_in(http)
    statuses = [answer.status_code for answer in answers]
    checked = [status for status in statuses if status != 429]
    assert len(checked) <= 5, statuses
    assert statuses.count(429) >= 35 and 303 not in statuses, statuses
    assert not any(SESSION_COOKIE in a.headers.get("set-cookie", "") for a in answers)
    assert late.status_code == 429 and SESSION_COOKIE not in late.headers.get("set-cookie", "")


async def test_a_successful_login_clears_the_count_of_its_name(
    demo_settings: Settings, collected: Store
) -> None:
    settings = replace(demo_settings, admin=replace(demo_settings.admin, login_attempts=3))
    async with client(settings, collected) as http:
        answers = [(await log_in(http, password=f"wrong {n}")).status_code for n in range(2)]
        answers.append((await log_in(http)).status_code)
        http.cookies.clear()
        answers += [(await log_in(http, password=f"wrong {n}")).status_code for n in range(2)]
        answers.append((await log_in(http)).status_code)
    assert answers == [401, 401, 303, 401, 401, 303]


async def test_nul_characters_in_forms_and_queries_are_no_error(
    demo_settings: Settings, collected: Store
) -> None:
    """PostgreSQL stores and compares no NUL character: one must not become a 500."""
    async with client(demo_settings, collected) as http:
        token = csrf_of(await http.get("/admin/login"))
        login = await http.post(
            "/admin/login", data={"csrf": token, "name": "eri\x00ka", "password": "x\x00"}
        )
        await log_in(http)
        search = await http.get(f"{ISSUE}/preview?q=leser%00&subscriber=%00")
        frame = await http.get(f"/admin/frame/{NL}/{WEEK}?subscriber=leser1%00@example.org")
        intro = await edit(http, action="intro", text="Hallo\x00 Welt")
    assert login.status_code == 401
    assert search.status_code in (200, 400) and frame.status_code == 200
    assert intro.status_code == 303
    assert collected.issue_edits(NL, WEEK).intro == "Hallo Welt"


# --- edits ---------------------------------------------------------------------------------


async def test_edits_are_stored_with_history_and_used_by_compose(
    demo_settings: Settings, collected: Store
) -> None:
    first, second, *_ = first_uids(collected, demo_settings)
    async with client(demo_settings, collected) as http:
        await log_in(http)
        assert (await edit(http, action="exclude", uid=first)).status_code == 303
        assert (
            await edit(http, action="teaser", uid=second, text="Neu geschrieben.")
        ).status_code == 303
        assert (
            await edit(http, action="intro", text="Liebe Leserinnen und Leser!")
        ).status_code == 303
        page = await http.get(ISSUE)
    assert page.status_code == 200
    assert "Neu geschrieben." in page.text and "Liebe Leserinnen" in page.text
    history = collected.edit_history(NL, WEEK)
    assert [h.action for h in history] == ["intro", "teaser", "exclude"]
    assert {h.editor for h in history} == {"erika"}
    newsletter = demo_settings.newsletter(NL)
    prepared = jobs.prepare_issue(collected, newsletter, WEEK, NOW, save=False)
    assert prepared is not None
    issue = prepared.issue
    assert first not in {a.uid for a in issue.articles}
    assert issue.sections[0].items[0].article.uid == second
    assert issue.sections[0].items[0].teaser == "Neu geschrieben."
    assert issue.intro == "Liebe Leserinnen und Leser!"
    # The CLI preview shows the same.
    text = jobs.preview(demo_settings, collected, newsletter, WEEK, fmt="text", now=NOW).decode()
    assert "Liebe Leserinnen und Leser!" in text and "Neu geschrieben." in text


async def test_pin_and_move(demo_settings: Settings, collected: Store) -> None:
    uids = first_uids(collected, demo_settings)
    assert len(uids) >= 3
    async with client(demo_settings, collected) as http:
        await log_in(http)
        await edit(http, action="pin", uid=uids[2])
        assert first_uids(collected, demo_settings)[:3] == [uids[2], uids[0], uids[1]]
        await edit(http, action="down", uid=uids[0])
        assert first_uids(collected, demo_settings)[:3] == [uids[2], uids[1], uids[0]]
        await edit(http, action="up", uid=uids[0])
        assert first_uids(collected, demo_settings)[:3] == [uids[2], uids[0], uids[1]]
        refused = await edit(http, action="up", uid=uids[0])  # it would pass the pinned one
    assert refused.status_code == 400
    assert "Angeheftete Artikel bleiben vor den anderen" in refused.text
    assert "unpin it first" not in refused.text


async def test_a_sent_issue_is_read_only(demo_settings: Settings, collected: Store) -> None:
    uid = first_uids(collected, demo_settings)[0]
    async with RecordingServer() as smtp:
        settings = replace(demo_settings, smtp=smtp.settings())
        pool = SmtpPool(settings.smtp)
        try:
            report = await jobs.send(
                settings, collected, settings.newsletter(NL), WEEK, pool, now=NOW
            )
        finally:
            await pool.close()
    assert report is not None and report.sent == 3
    async with client(demo_settings, collected) as http:
        await log_in(http)
        page = await http.get(ISSUE)
        assert "nicht mehr geändert" in page.text and 'value="exclude"' not in page.text
        refused = await http.post(
            ISSUE, data={"csrf": csrf_of(page, 1), "action": "exclude", "uid": uid}
        )
    assert refused.status_code == 409 and "nicht mehr geändert" in refused.text
    assert collected.issue_edits(NL, WEEK).excluded == frozenset()


# --- overview, preview, test send ----------------------------------------------------------


async def test_overview_lists_newsletters_segments_and_last_issues(
    demo_settings: Settings, collected: Store
) -> None:
    async with client(demo_settings, collected) as http:
        await log_in(http)
        page = await http.get("/admin/")
    assert page.status_code == 200
    newsletter = demo_settings.newsletter(NL)
    assert newsletter.name in page.text
    # The schedule in words, not as the crontab line of the configuration.
    assert "Zeitplan: montags um 07:00 (Europe/Berlin)" in page.text
    assert newsletter.schedule not in page.text
    for segment in newsletter.segments:
        assert f"<td>{segment.name}</td>" in page.text


async def test_preview_shows_frames_text_headers_size_and_links(
    demo_settings: Settings, collected: Store
) -> None:
    async with client(demo_settings, collected) as http:
        await log_in(http)
        page = await http.get(f"{ISSUE}/preview?segment=bayern")
        frame = await http.get(f"/admin/frame/{NL}/{WEEK}?segment=bayern")
        found = await http.get(f"{ISSUE}/preview?q=leser1")
        as_reader = await http.get(f"{ISSUE}/preview?subscriber=leser1@example.org")
    assert page.status_code == 200
    assert page.text.count("<iframe") == 2 and 'class="phone"' in page.text
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    assert "Subject" in page.text and "List-Unsubscribe" in page.text
    assert "KB" in page.text and "utm_source=newsletter" in page.text
    assert frame.status_code == 200 and "<html" in frame.text
    csp = frame.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in csp and "sandbox" in csp and "script" not in csp
    assert "leser1@example.org" in found.text
    assert as_reader.status_code == 200 and "Leser 1" in as_reader.text


async def test_a_preview_as_a_reader_holds_no_link_that_opens_their_data(
    demo_settings: Settings, collected: Store
) -> None:
    reader = collected.subscriber_by_email("leser1@example.org")
    assert reader is not None
    query = "subscriber=leser1@example.org"
    async with client(demo_settings, collected) as http:
        await log_in(http)
        shown = [
            await http.get(f"{ISSUE}/preview?{query}"),
            await http.get(f"/admin/frame/{NL}/{WEEK}?{query}"),
        ]
        assert [page.status_code for page in shown] == [200, 200]
        assert "Leser 1" in shown[0].text  # the preview is the reader's
        paths = {
            match[1]
            for page in shown
            for match in re.finditer(r"https?://[^/\s]+(/(?:preferences|unsubscribe)/[^\s\"<&?]+)",
                                     page.text)
        }  # fmt: skip
        assert {p.split("/")[1] for p in paths} == {"preferences", "unsubscribe"}, paths
        # Every such link works for no one: no page of this reader's, no withdrawal.
        for path in paths:
            if path.startswith("/preferences/"):
                opened = await http.get(path)
                assert opened.status_code == 400, path
                export = await http.post(path, data={"action": "export"})
                assert export.status_code == 400 and "leser1" not in export.text, path
            else:
                await http.post(path)
    assert "leser1@example.org" in {s.email for s in collected.active_subscribers(newsletter=NL)}


async def test_test_send_goes_through_smtp_and_is_not_a_delivery(
    demo_settings: Settings, collected: Store
) -> None:
    async with RecordingServer() as smtp:
        settings = replace(demo_settings, smtp=smtp.settings())
        async with client(settings, collected) as http:
            await log_in(http)
            form = await http.get(f"{ISSUE}/test")
            done = await http.post(
                f"{ISSUE}/test",
                data={
                    "csrf": csrf_of(form, 1),
                    "addresses": "probe@example.org, zweite@example.org",
                    "segment": "bayern",
                },
            )
            bad = await http.post(
                f"{ISSUE}/test",
                data={"csrf": csrf_of(form, 1), "addresses": "kein-adresse", "segment": "bayern"},
            )
    assert done.status_code == 200 and "250" in done.text
    assert bad.status_code == 400
    assert [rcpt for _f, rcpt, _d in smtp.messages] == [
        ["probe@example.org"],
        ["zweite@example.org"],
    ]
    mail = email.message_from_bytes(smtp.messages[0][2], policy=email.policy.default)
    assert str(mail["subject"]).startswith("[TEST] ")
    assert collected.get_issue(NL, WEEK) is None  # nothing recorded, not even the issue


async def test_a_test_send_as_a_reader_carries_no_text_the_reader_typed(
    demo_settings: Settings, collected: Store
) -> None:
    """A name is typed by whoever signed up: a test mail shows the reader's cut, not it."""
    phishing = "Konto gesperrt! Sofort bestaetigen: https://evil.example/login"
    collected.save_subscriber(Subscriber("typed@example.org", phishing), ["allgemein"])
    async with RecordingServer() as smtp:
        settings = replace(demo_settings, smtp=smtp.settings())
        async with client(settings, collected) as http:
            await log_in(http)
            form = await http.get(f"{ISSUE}/test")
            done = await http.post(
                f"{ISSUE}/test",
                data={
                    "csrf": csrf_of(form, 1),
                    "addresses": "probe@example.org",
                    "subscriber": "typed@example.org",
                },
            )
    assert done.status_code == 200 and "250" in done.text
    [(_sender, _rcpt, data)] = smtp.messages
    mail = email.message_from_bytes(data, policy=email.policy.strict)
    parts = [p.get_content() for p in mail.walk() if p.get_content_maintype() == "text"]
    assert parts and not any("evil.example" in part or "Konto gesperrt" in part for part in parts)
    assert "evil.example" not in str(mail["to"])


# --- review --------------------------------------------------------------------------------


async def test_review_required_blocks_the_send_until_approved(
    demo_settings: Settings, collected: Store
) -> None:
    newsletter = replace(demo_settings.newsletter(NL), review="required")
    settings = replace(demo_settings, newsletters=(newsletter,))
    async with RecordingServer() as smtp:
        settings = replace(settings, smtp=smtp.settings())
        pool = SmtpPool(settings.smtp)
        try:
            with pytest.raises(NotApproved):
                await jobs.send(settings, collected, newsletter, WEEK, pool, now=NOW)
            assert smtp.messages == []
            prepared = jobs.prepare_issue(collected, newsletter, WEEK, NOW)
            assert prepared is not None
            asked = await jobs.request_review(
                settings, collected, newsletter, WEEK, prepared.issue.subject, pool, now=NOW
            )
            again = await jobs.request_review(
                settings, collected, newsletter, WEEK, prepared.issue.subject, pool, now=NOW
            )
            assert (asked, again) == (1, 0)
            [(_f, rcpt, data)] = smtp.messages
            assert rcpt == ["erika@example.org"]
            assert f"/admin/{NL}/{WEEK}".encode() in data
            async with client(settings, collected) as http:
                await log_in(http)
                page = await http.get(ISSUE)
                approved = await http.post(f"{ISSUE}/approve", data={"csrf": csrf_of(page, 1)})
            assert approved.status_code == 303
            approval = collected.approval(NL, WEEK)
            assert approval is not None and approval.approved_by == "erika"
            # approved_send = "immediately": the approval started the send.
            assert len(smtp.messages) == 1 + 3
            record = collected.get_issue(NL, WEEK)
            assert record is not None and record.status == "sent"
        finally:
            await pool.close()


async def test_showing_a_page_changes_nothing_with_a_session_either(
    demo_settings: Settings, collected: Store
) -> None:
    from tests.web.test_web_security import _snapshot

    async with client(demo_settings, collected) as http:
        await log_in(http)
        before = _snapshot(collected)
        for path in ("/admin/", ISSUE, f"{ISSUE}/approve", f"{ISSUE}/preview",
                     f"/admin/frame/{NL}/{WEEK}", f"{ISSUE}/test", "/admin/login",
                     "/admin/logout"):  # fmt: skip
            for method in ("GET", "HEAD"):
                answer = await http.request(method, path)
                assert answer.status_code in (200, 303), (method, path)
        assert _snapshot(collected) == before
