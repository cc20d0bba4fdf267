"""Sessions and forms of the editors' area: who is logged in, and whether a form is genuine.

Nothing under ``/admin`` answers without a session (:func:`guarded`): a page asked for
without one redirects to the login form, a POST is refused with 403. The session is a
random value in a cookie (HttpOnly, SameSite=Lax, Secure when ``public_url`` is https,
limited to ``/admin``); the store keeps only its SHA-256 and when it expires
(``admin.session_minutes``). Every form carries a CSRF token bound to its path and to the
session (:func:`genuine`). Readers' data is for editors with the admin role (:func:`for_admins`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from gettext import NullTranslations
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digest.config import NewsletterSettings
from digest.core.errors import ComposeError, ConfigError, DigestError
from digest.core.i18n import N_, translations
from digest.issue.compose import iso_week_window
from digest.store.editorial import Editor
from digest.web.admin.words import Words
from digest.web.forms import CSRF_FIELD, csrf_token, form_is_genuine
from digest.web.pages import message_page, render, settings_of, store_of
from digest.web.routing import SHOWING, Handler, _call

__all__ = [
    "EXPIRED_FORM",
    "FRAME_PREFIX",
    "PREFIX",
    "SESSION_COOKIE",
    "admin_page",
    "catalogue",
    "error_text",
    "for_admins",
    "genuine",
    "guarded",
    "newsletter_of",
    "now",
    "refused",
    "session_editor",
    "session_key",
]

SESSION_COOKIE = "digest_admin"
PREFIX = "/admin"
#: Path prefix of the preview frames, which have a policy of their own (see app.py).
FRAME_PREFIX = f"{PREFIX}/frame/"
_WEEK = re.compile(r"\d{4}-W\d{2}")

_NOT_ALLOWED = (
    N_("Not allowed"),
    N_("Please log in to the editors' area first, then send the form again."),
)
EXPIRED_FORM = N_("The form had expired or did not come from this page. Please try again.")
_ADMINS_ONLY = (
    N_("Not allowed"),
    N_("Only administrators see readers' data. An operator can give you that role."),
)


def now() -> datetime:
    """The time of the editors' area."""
    return datetime.now(UTC)


def catalogue(request: Request) -> NullTranslations:
    """The texts of the editors' area, in the configured locale."""
    return translations(settings_of(request).locale)


def error_text(request: Request, error: DigestError) -> str:
    """What to tell an editor about ``error``: its text for editors, in the area's locale.

    An error without one (a broken template, a relay that refused) is named as the log
    names it, after a sentence of the catalogue.
    """
    gettext = catalogue(request).gettext
    if error.editors_text is None:
        return gettext("This did not work: %(reason)s") % {"reason": error}
    text, values = error.editors_text
    return gettext(text) % values if values else gettext(text)


def _session_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _session_of(request: Request) -> tuple[Editor, str] | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    hashed = _session_hash(token)
    editor = store_of(request).session_editor(hashed, now())
    return (editor, hashed) if editor else None


def _session(request: Request) -> tuple[Editor, str] | None:
    # Set by guarded() for the request it lets through; absent on the login page.
    session: tuple[Editor, str] | None = getattr(request.state, "session", None)
    return session


def session_editor(request: Request) -> Editor:
    """The editor logged in on a request :func:`guarded` let through."""
    editor: Editor = request.state.session[0]
    return editor


def session_key(request: Request) -> str:
    """The stored hash of the session of a request :func:`guarded` let through."""
    key: str = request.state.session[1]
    return key


def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler``, run only for a request with a session (kept on ``request.state``)."""

    async def run(request: Request) -> Response:
        session = await run_in_threadpool(_session_of, request)
        if session is None:
            if request.method in SHOWING:
                target = quote(
                    request.url.path + (f"?{request.url.query}" if request.url.query else "")
                )
                return RedirectResponse(f"{PREFIX}/login?next={target}", 303)
            return message_page(request, 403, settings_of(request).locale, *_NOT_ALLOWED)
        request.state.session = session
        return await _call(handler, request)

    return run


def for_admins(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` behind :func:`guarded`, run only for an editor with the admin role;
    any other editor is answered 403, for a page as for a form."""

    async def run(request: Request) -> Response:
        if not session_editor(request).is_admin:
            return message_page(request, 403, settings_of(request).locale, *_ADMINS_ONLY)
        return await _call(handler, request)

    return guarded(run)


def admin_page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    """A page of the editors' area, its forms' CSRF tokens bound to the session."""
    settings = settings_of(request)
    session = _session(request)
    bound = session[1] if session else ""

    def csrf(path: str) -> str:
        return csrf_token(settings.secret_key, path, bound)

    return render(
        request,
        template,
        status,
        locale=settings.locale,
        body_class="admin",
        csrf=csrf,
        csrf_field=CSRF_FIELD,
        editor=session[0] if session else None,
        prefix=PREFIX,
        words=Words(settings.locale),
        **context,
    )


def genuine(request: Request, form: FormData) -> bool:
    """Whether ``form`` came from a page of this area, in this session."""
    settings = settings_of(request)
    token = form.get(CSRF_FIELD)
    session = _session(request)
    return form_is_genuine(
        request,
        token if isinstance(token, str) else None,
        settings.secret_key,
        settings.public_url,
        session[1] if session else "",
    )


def refused(request: Request, status: int, text: str) -> Response:
    """A page saying ``text`` (a message id) is not possible."""
    return message_page(request, status, settings_of(request).locale, N_("Not possible"), text)


def newsletter_of(request: Request) -> NewsletterSettings | None:
    """The newsletter the path names, or None if it or the week it names does not exist."""
    try:
        newsletter = settings_of(request).newsletter(request.path_params["newsletter"])
    except ConfigError:
        return None
    week = request.path_params.get("week")
    if week is not None and not _real_week(week, newsletter):
        return None
    return newsletter


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
