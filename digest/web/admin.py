"""The editors' area under ``/admin``: log in, see, edit, preview, test and approve issues.

Nothing under ``/admin`` answers without a session: a page asked for without one
redirects to the login form, a POST is refused with 403. The session is a random value
in a cookie (HttpOnly, SameSite=Lax, Secure when ``public_url`` is https, limited to
``/admin``); the store keeps only its SHA-256 and when it expires
(``admin.session_minutes``). Every form carries a CSRF token bound to its path and to
the session. A login attempt is counted per account and per client address before its
password is checked (a successful login clears its account's count); past
``admin.login_attempts`` in 15 minutes further attempts are refused unchecked for a
while, every failed attempt is answered a second later, and no more passwords are
checked at once than there are cores.
"""

from __future__ import annotations

import asyncio
import email
import hashlib
import math
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email import policy
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlencode

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from digest.config import NewsletterSettings, Settings
from digest.core.addresses import checked_address
from digest.core.errors import (
    AddressError,
    ComposeError,
    ConfigError,
    DigestError,
    EditorialError,
    IssueReadOnly,
)
from digest.core.i18n import N_, translations
from digest.delivery.deliver import audience, current_recipients
from digest.delivery.transport import SmtpPool
from digest.issue.compose import iso_week_window, teaser_for
from digest.issue.editing import MAX_INTRO, MAX_TEASER, apply_edit, coming_week, issue_draft
from digest.issue.editors import check_login
from digest.issue.prepare import prepare_issue
from digest.ops import jobs
from digest.ops.schedule import next_runs_of
from digest.store import Store
from digest.store.editorial import Editor
from digest.web.forms import CSRF_FIELD, csrf_token, field_text, form_is_genuine
from digest.web.routing import SHOWING, Handler, _call, page
from digest.web.security import _client_key

__all__ = ["FRAME_PREFIX", "PREFIX", "SESSION_COOKIE", "admin_routes"]

Render = Callable[..., Response]

SESSION_COOKIE = "digest_admin"
PREFIX = "/admin"
#: Path prefix of the preview frames, which have a policy of their own (see app.py).
FRAME_PREFIX = f"{PREFIX}/frame/"
#: HTML parts above this size risk being clipped by Gmail (at about 102 KB).
HTML_WARNING_BYTES = 90 * 1024
#: A failed login is answered this many seconds late.
LOGIN_DELAY = 1.0
#: Per client address, this many times ``admin.login_attempts``.
ADDRESS_FACTOR = 4
_WEEK = re.compile(r"\d{4}-W\d{2}")
_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"]+")

_NOT_ALLOWED = (
    N_("Not allowed"),
    N_("Please log in to the editors' area first, then send the form again."),
)
_EXPIRED_FORM = N_("The form had expired or did not come from this page. Please try again.")
_READ_ONLY = N_("This issue has been sent and can no longer be changed.")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "href" and value and value not in self.links:
                self.links.append(value)


def _session_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def admin_routes(
    settings: Settings,
    store: Store,
    render: Render,
    message: Render,
    *,
    login_delay: float = LOGIN_DELAY,
) -> list[Route]:
    """The routes of the editors' area.

    ``render(request, template, status, locale=..., **context)`` shows a page,
    ``message(request, status, locale, title, text)`` a page of one message.
    """
    locale = settings.locale
    catalogue = translations(locale)
    secure = settings.public_url.startswith("https://")
    limiter = MovingWindowRateLimiter(MemoryStorage())
    per_account = RateLimitItemPerMinute(settings.admin.login_attempts, 15)
    per_address = RateLimitItemPerMinute(settings.admin.login_attempts * ADDRESS_FACTOR, 15)
    # argon2 is made to be slow: a burst of logins waits here rather than taking every core.
    verifying = asyncio.Semaphore(_cores())

    def now() -> datetime:
        return datetime.now(UTC)

    # --- sessions and forms ----------------------------------------------------------------

    def session_of(request: Request) -> tuple[Editor, str] | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        hashed = _session_hash(token)
        editor = store.session_editor(hashed, now())
        return (editor, hashed) if editor else None

    def admin_page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        session = getattr(request.state, "session", None)
        bound = session[1] if session else ""

        def csrf(path: str) -> str:
            return csrf_token(settings.secret_key, path, bound)

        response = render(
            request,
            template,
            status,
            locale=locale,
            body_class="admin",
            csrf=csrf,
            csrf_field=CSRF_FIELD,
            editor=session[0] if session else None,
            prefix=PREFIX,
            **context,
        )
        return response

    def genuine(request: Request, form: FormData) -> bool:
        token = form.get(CSRF_FIELD)
        session = getattr(request.state, "session", None)
        return form_is_genuine(
            request,
            token if isinstance(token, str) else None,
            settings.secret_key,
            settings.public_url,
            session[1] if session else "",
        )

    def refused(request: Request, status: int, text: str) -> Response:
        return message(request, status, locale, N_("Not possible"), text)

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            session = await run_in_threadpool(session_of, request)
            if session is None:
                if request.method in SHOWING:
                    target = quote(
                        request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    )
                    return RedirectResponse(f"{PREFIX}/login?next={target}", 303)
                return message(request, 403, locale, *_NOT_ALLOWED)
            request.state.session = session
            return await _call(handler, request)

        return run

    def newsletter_of(request: Request) -> NewsletterSettings | None:
        try:
            newsletter = settings.newsletter(request.path_params["newsletter"])
        except ConfigError:
            return None
        week = request.path_params.get("week")
        if week is not None and not _real_week(week, newsletter):
            return None
        return newsletter

    def not_found(request: Request) -> Response:
        return message(
            request,
            404,
            locale,
            N_("Page not found"),
            N_("This page does not exist. Please check the address."),
        )

    # --- login -----------------------------------------------------------------------------

    def safe_next(value: object) -> str:
        target = value if isinstance(value, str) else ""
        # Only a path of our own area: never another site.
        if not target.startswith(f"{PREFIX}/") or target.startswith("//") or "\\" in target:
            return f"{PREFIX}/"
        return target

    def login_form(request: Request, status: int = 200, **context: Any) -> Response:
        context.setdefault("next", safe_next(request.query_params.get("next")))
        context.setdefault("login_name", "")
        return admin_page(request, "admin/login.html", status, **context)

    def too_many_logins(
        request: Request, name: str, target: str, item: RateLimitItem, *keys: str
    ) -> Response:
        reset = limiter.get_window_stats(item, *keys).reset_time
        response = login_form(
            request,
            429,
            login_name=name,
            next=target,
            error=catalogue.gettext(
                "Too many failed logins. Please wait a few minutes and try again."
            ),
        )
        response.headers["retry-after"] = str(max(1, math.ceil(reset - time.time())))
        return response

    def show_login(request: Request) -> Response:
        return login_form(request)

    async def login(request: Request) -> Response:
        form = await request.form()
        name = field_text(form.get("name")).strip()[:100]
        password = field_text(form.get("password"))
        target = safe_next(form.get("next"))
        if not genuine(request, form):
            return login_form(
                request, 400, error=catalogue.gettext(_EXPIRED_FORM), login_name=name, next=target
            )
        address = _client_key(request.scope)
        keys = (("account", name.casefold()), ("address", address))
        items = (per_account, per_address)
        # Every attempt is counted before its password is checked, in the same step as
        # the test: logins sent at once cannot all pass the test before one is counted.
        for item, (kind, key) in zip(items, keys, strict=True):
            if not limiter.hit(item, kind, key):
                return too_many_logins(request, name, target, item, kind, key)
        async with verifying:
            editor = await run_in_threadpool(check_login, store, name, password)
        if editor is None:
            await asyncio.sleep(login_delay)
            return login_form(
                request,
                401,
                login_name=name,
                next=target,
                error=catalogue.gettext("Name or password is not correct."),
            )
        # Only failures count against a name: its editor may log in again and again.
        limiter.clear(per_account, *keys[0])
        token = secrets.token_urlsafe(32)
        started = now()
        minutes = settings.admin.session_minutes
        await run_in_threadpool(
            store.start_session,
            editor.id,
            _session_hash(token),
            started,
            started + timedelta(minutes=minutes),
        )
        response = RedirectResponse(target, 303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=minutes * 60,
            path=PREFIX,
            httponly=True,
            samesite="lax",
            secure=secure,
        )
        return response

    async def logout(request: Request) -> Response:
        form = await request.form()
        if not genuine(request, form):
            return refused(request, 400, _EXPIRED_FORM)
        await run_in_threadpool(store.end_session, request.state.session[1])
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(
            SESSION_COOKIE, path=PREFIX, httponly=True, samesite="lax", secure=secure
        )
        return response

    def to_overview(_request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", 303)

    # --- overview --------------------------------------------------------------------------

    def newsletter_summary(newsletter: NewsletterSettings, at: datetime) -> dict[str, Any]:
        due = next_runs_of(newsletter, at)
        week = coming_week(newsletter, at)
        key, start, end = iso_week_window(week, newsletter.zone, at)
        prepared = prepare_issue(store, newsletter, key, at, save=False)
        segments = {s.name: 0 for s in newsletter.segments}
        nothing = 0
        sections: list[tuple[str, int]] = []
        if prepared is not None:
            record = prepared.record
            plan = audience(
                store,
                newsletter,
                prepared.issue,
                current_recipients(store, newsletter),
                record,
                ledger_open=record is None or record.status == "composed",
            )
            for _row, recipient in plan.to_send:
                for name in recipient.segments:
                    segments[name] = segments.get(name, 0) + 1
            nothing = len(plan.nothing_for_them)
            sections = [(s.title, len(s.items)) for s in prepared.issue.sections]
        approval = store.approval(newsletter.id, key)
        last = []
        for row, counts in store.issues_of(newsletter.id, limit=8):
            last.append(
                {
                    "key": row.key,
                    "status": row.status,
                    "sent_at": row.sent_at,
                    "counts": counts,
                    "subject": row.subject,
                }
            )
        return {
            "newsletter": newsletter,
            "due": due.astimezone(newsletter.zone),
            "week": key,
            "start": start.astimezone(newsletter.zone),
            "end": end.astimezone(newsletter.zone),
            "sections": sections,
            "segments": segments,
            "nothing": nothing,
            "approval": approval,
            "last": last,
        }

    def overview(request: Request) -> Response:
        at = now()
        return admin_page(
            request,
            "admin/overview.html",
            title=catalogue.gettext("Editors' area"),
            summaries=[newsletter_summary(n, at) for n in settings.newsletters],
        )

    # --- one issue -------------------------------------------------------------------------

    def issue_page(
        request: Request,
        newsletter: NewsletterSettings,
        week: str,
        status: int = 200,
        error: str = "",
        notice: str = "",
    ) -> Response:
        at = now()
        key, start, end = iso_week_window(week, newsletter.zone, at)
        record = store.get_issue(newsletter.id, key)
        drafts, edits = issue_draft(store, newsletter, key, at)

        def teaser(article: Any) -> str:
            return edits.teasers.get(article.uid) or (
                teaser_for(article.summary, newsletter.teaser_length)
                or teaser_for(article.content, newsletter.teaser_length)
            )

        return admin_page(
            request,
            "admin/issue.html",
            status,
            title=catalogue.gettext("Issue %(week)s") % {"week": key},
            newsletter=newsletter,
            week=key,
            start=start.astimezone(newsletter.zone),
            end=end.astimezone(newsletter.zone),
            record=record,
            read_only=record is not None and record.status != "composed",
            drafts=drafts,
            edits=edits,
            teaser=teaser,
            history=store.edit_history(newsletter.id, key),
            approval=store.approval(newsletter.id, key),
            ended=end <= at,
            error=error,
            notice=notice,
            max_intro=MAX_INTRO,
            max_teaser=MAX_TEASER,
        )

    def show_issue(request: Request) -> Response:
        newsletter = newsletter_of(request)
        if newsletter is None:
            return not_found(request)
        notice = ""
        if "approved" in request.query_params:
            notice = catalogue.gettext("The issue is approved.")
        return issue_page(request, newsletter, request.path_params["week"], notice=notice)

    async def edit_issue(request: Request) -> Response:
        newsletter = newsletter_of(request)
        if newsletter is None:
            return not_found(request)
        week = request.path_params["week"]
        form = await request.form()
        if not genuine(request, form):
            return await run_in_threadpool(
                issue_page, request, newsletter, week, 400, catalogue.gettext(_EXPIRED_FORM)
            )
        editor: Editor = request.state.session[0]
        uid = field_text(form.get("uid")) if "uid" in form else None
        text = field_text(form.get("text")) if "text" in form else None

        def change() -> Response:
            try:
                apply_edit(
                    store,
                    newsletter,
                    week,
                    action=field_text(form.get("action")),
                    uid=uid,
                    text=text,
                    editor=editor.name,
                    now=now(),
                )
            except IssueReadOnly:
                return issue_page(request, newsletter, week, 409, catalogue.gettext(_READ_ONLY))
            except EditorialError as exc:
                return issue_page(request, newsletter, week, 400, str(exc))
            anchor = (
                f"#a-{hashlib.sha256(uid.encode()).hexdigest()[:12]}"
                if isinstance(uid, str)
                else ""
            )
            return RedirectResponse(f"{request.url.path}{anchor}", 303)

        return await run_in_threadpool(change)

    async def approve(request: Request) -> Response:
        newsletter = newsletter_of(request)
        if newsletter is None:
            return not_found(request)
        week = request.path_params["week"]
        page_path = f"{PREFIX}/{newsletter.id}/{week}"
        form = await request.form()
        if not genuine(request, form):
            return await run_in_threadpool(
                issue_page, request, newsletter, week, 400, catalogue.gettext(_EXPIRED_FORM)
            )
        editor: Editor = request.state.session[0]
        at = now()
        try:
            await run_in_threadpool(store.approve, newsletter.id, week, editor=editor.name, now=at)
        except IssueReadOnly:
            return await run_in_threadpool(
                issue_page, request, newsletter, week, 409, catalogue.gettext(_READ_ONLY)
            )
        _key, _start, end = iso_week_window(week, newsletter.zone, at)
        background = None
        if newsletter.approved_send == "immediately" and end <= at:
            background = BackgroundTask(send_approved, newsletter, week)
        return RedirectResponse(f"{page_path}?approved", 303, background=background)

    async def send_approved(newsletter: NewsletterSettings, week: str) -> None:
        transport = SmtpPool(settings.smtp)
        try:
            await jobs.send(settings, store, newsletter, week, transport)
        except DigestError as exc:
            import logging

            logging.getLogger("digest.web").error(
                "%s %s: send after approval: %s", newsletter.id, week, exc
            )
        finally:
            await transport.close()

    # --- preview and test ------------------------------------------------------------------

    def chosen(request: Request, newsletter: NewsletterSettings) -> dict[str, str]:
        subscriber = field_text(request.query_params.get("subscriber")).strip()[:320]
        segment = field_text(request.query_params.get("segment"))
        if subscriber:
            return {"subscriber": subscriber}
        names = [s.name for s in newsletter.segments]
        return {"segment": segment if segment in names else (names[0] if names else "")}

    def show_preview(request: Request) -> Response:
        newsletter = newsletter_of(request)
        if newsletter is None:
            return not_found(request)
        week = request.path_params["week"]
        who = chosen(request, newsletter)
        search = field_text(request.query_params.get("q")).strip()[:100]
        matches = store.search_subscribers(search) if search else []
        context: dict[str, Any] = {
            "title": catalogue.gettext("Preview of %(week)s") % {"week": week},
            "newsletter": newsletter,
            "week": week,
            "who": who,
            "search": search,
            "matches": matches,
            "error": "",
            "query": urlencode(who),
        }
        try:
            _issue, built = jobs.preview_message(
                settings,
                store,
                newsletter,
                week,
                segment=who.get("segment"),
                subscriber=who.get("subscriber"),
            )
        except DigestError as exc:
            context["error"] = str(exc)
            return admin_page(request, "admin/preview.html", 400, **context)
        parsed = email.message_from_bytes(built.data, policy=policy.default)
        html_part = parsed.get_body(preferencelist=("html",))
        text_part = parsed.get_body(preferencelist=("plain",))
        html = html_part.get_content() if html_part is not None else ""
        text = text_part.get_content() if text_part is not None else ""
        links = _Links()
        links.feed(html)
        every = list(links.links)
        for url in _URL_IN_TEXT.findall(text):
            if url not in every:
                every.append(url)
        size = len(html.encode())
        context.update(
            headers=[(name, str(value)) for name, value in parsed.items()],
            text=text,
            size=size,
            too_big=size > HTML_WARNING_BYTES,
            links=every,
        )
        return admin_page(request, "admin/preview.html", **context)

    def preview_frame(request: Request) -> Response:
        newsletter = newsletter_of(request)
        if newsletter is None:
            return not_found(request)
        who = chosen(request, newsletter)
        try:
            html = jobs.preview(
                settings,
                store,
                newsletter,
                request.path_params["week"],
                fmt="html",
                segment=who.get("segment"),
                subscriber=who.get("subscriber"),
            ).decode()
        except DigestError as exc:
            html = f"<!doctype html><p>{_escape(str(exc))}</p>"
        return HTMLResponse(html)

    def test_form(request: Request, status: int = 200, **context: Any) -> Response:
        newsletter = newsletter_of(request)
        assert newsletter is not None
        week = request.path_params["week"]
        context.setdefault("addresses", request.state.session[0].email)
        context.setdefault("segment", newsletter.segments[0].name if newsletter.segments else "")
        context.setdefault("subscriber", "")
        context.setdefault("results", None)
        context.setdefault("error", "")
        return admin_page(
            request,
            "admin/test.html",
            status,
            title=catalogue.gettext("Test send of %(week)s") % {"week": week},
            newsletter=newsletter,
            week=week,
            **context,
        )

    def show_test(request: Request) -> Response:
        if newsletter_of(request) is None:
            return not_found(request)
        return test_form(request)

    async def send_test(request: Request) -> Response:
        newsletter = newsletter_of(request)
        if newsletter is None:
            return not_found(request)
        form = await request.form()
        raw = field_text(form.get("addresses"))[:2000]
        segment = field_text(form.get("segment"))
        subscriber = field_text(form.get("subscriber")).strip()[:320]
        values: dict[str, Any] = {"addresses": raw, "segment": segment, "subscriber": subscriber}
        if not genuine(request, form):
            return test_form(request, 400, error=catalogue.gettext(_EXPIRED_FORM), **values)
        addresses = []
        for part in re.split(r"[\s,;]+", raw):
            if not part:
                continue
            try:
                addresses.append(checked_address(part, smtputf8=settings.smtp.smtputf8))
            except AddressError:
                return test_form(
                    request,
                    400,
                    **values,
                    error=catalogue.gettext("Not an email address: %(address)s")
                    % {"address": part},
                )
        if not addresses or len(addresses) > 10:
            return test_form(
                request,
                400,
                **values,
                error=catalogue.gettext("Please enter between one and ten addresses."),
            )
        transport = SmtpPool(settings.smtp)
        try:
            results = await jobs.test_send(
                settings,
                store,
                newsletter,
                request.path_params["week"],
                addresses,
                transport,
                segment=None if subscriber else segment,
                subscriber=subscriber or None,
            )
        except DigestError as exc:
            return test_form(request, 502, error=str(exc), **values)
        finally:
            await transport.close()
        return test_form(request, results=results, **values)

    return [
        page(f"{PREFIX}/login", show=show_login, change=login, name="admin_login"),
        page(f"{PREFIX}/logout", show=to_overview, change=guarded(logout), name="admin_logout"),
        page(f"{PREFIX}/", show=guarded(overview), name="admin"),
        page(
            f"{PREFIX}/{{newsletter}}/{{week}}",
            show=guarded(show_issue),
            change=guarded(edit_issue),
            name="admin_issue",
        ),
        page(
            f"{PREFIX}/{{newsletter}}/{{week}}/approve",
            show=guarded(show_issue),
            change=guarded(approve),
            name="admin_approve",
        ),
        page(
            f"{PREFIX}/{{newsletter}}/{{week}}/preview",
            show=guarded(show_preview),
            name="admin_preview",
        ),
        page(
            f"{FRAME_PREFIX}{{newsletter}}/{{week}}",
            show=guarded(preview_frame),
            name="admin_frame",
        ),
        page(
            f"{PREFIX}/{{newsletter}}/{{week}}/test",
            show=guarded(show_test),
            change=guarded(send_test),
            name="admin_test",
        ),
    ]


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def _real_week(week: str, newsletter: NewsletterSettings) -> bool:
    """True for a week the calendar has, written as its issue key (``2025-W05``).

    A week that does not exist (``2025-W99``), one whose window a date cannot hold
    (``9999-W52`` ends in the year 10000) and one whose key is written otherwise (the
    year 0002 has the key ``2-W01``) are pages that do not exist, not errors.
    """
    if not _WEEK.fullmatch(week):
        return False
    try:
        key, _start, _end = iso_week_window(week, newsletter.zone, datetime.now(UTC))
    except (ComposeError, ValueError, OverflowError):
        return False
    return key == week


def _escape(text: str) -> str:
    from html import escape

    return escape(text)
