"""Logging in to and out of the editors' area.

A login attempt is counted per account and per client address before its password is
checked (a successful login clears its account's count); past ``admin.login_attempts``
in 15 minutes further attempts are refused unchecked for a while, every failed attempt
is answered a second later, and no more passwords are checked at once than there are
cores. The limit on checks belongs to one app (:func:`_logins`); the counts are kept
where the app's rate limits are (``[web] rate_limit_storage``: this process's memory,
or a storage all replicas share).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digest.config import Settings
from digest.issue.editors import check_login
from digest.web.admin.session import (
    EXPIRED_FORM,
    PREFIX,
    SESSION_COOKIE,
    _session_hash,
    admin_page,
    catalogue,
    genuine,
    now,
    refused,
    session_key,
)
from digest.web.forms import field_text
from digest.web.pages import settings_of, store_of
from digest.web.security import RateCounts, _client_key

__all__ = ["ADDRESS_FACTOR", "LOGIN_DELAY", "login", "logout", "show_login", "to_overview"]

#: A failed login is answered this many seconds late.
LOGIN_DELAY = 1.0
#: Per client address, this many times ``admin.login_attempts``.
ADDRESS_FACTOR = 4


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


@dataclass
class _Logins:
    """One app's login attempts: their counts, and the passwords being checked."""

    per_account: RateLimitItem
    per_address: RateLimitItem
    counts: RateCounts
    # argon2 is made to be slow: a burst of logins waits here rather than taking every core.
    verifying: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(_cores()))

    @classmethod
    def of(cls, settings: Settings, counts: RateCounts) -> _Logins:
        attempts = settings.admin.login_attempts
        return cls(
            RateLimitItemPerMinute(attempts, 15),
            RateLimitItemPerMinute(attempts * ADDRESS_FACTOR, 15),
            counts,
        )


def _logins(request: Request) -> _Logins:
    # Made on the app's first login, on its event loop: nothing awaits between the look
    # and the store, so two logins at once cannot make two.
    state = request.app.state
    logins: _Logins | None = getattr(state, "admin_logins", None)
    if logins is None:
        logins = state.admin_logins = _Logins.of(settings_of(request), state.rate_counts)
    return logins


def _safe_next(value: object) -> str:
    target = value if isinstance(value, str) else ""
    # Only a path of our own area: never another site.
    if not target.startswith(f"{PREFIX}/") or target.startswith("//") or "\\" in target:
        return f"{PREFIX}/"
    return target


def _login_form(request: Request, status: int = 200, **context: Any) -> Response:
    context.setdefault("next", _safe_next(request.query_params.get("next")))
    context.setdefault("login_name", "")
    return admin_page(request, "admin/login.html", status, **context)


async def _too_many_logins(
    request: Request, name: str, target: str, item: RateLimitItem, *keys: str
) -> Response:
    retry_after = await _logins(request).counts.retry_after(item, *keys)
    response = _login_form(
        request,
        429,
        login_name=name,
        next=target,
        error=catalogue(request).gettext(
            "Too many failed logins. Please wait a few minutes and try again."
        ),
    )
    response.headers["retry-after"] = str(retry_after)
    return response


def _secure(settings: Settings) -> bool:
    return settings.public_url.startswith("https://")


def show_login(request: Request) -> Response:
    """``GET /admin/login``: the login form."""
    return _login_form(request)


async def login(request: Request, *, delay: float = LOGIN_DELAY) -> Response:
    """``POST /admin/login``: start a session; a failed attempt is answered ``delay`` late."""
    form = await request.form()
    name = field_text(form.get("name")).strip()[:100]
    password = field_text(form.get("password"))
    target = _safe_next(form.get("next"))
    if not genuine(request, form):
        return _login_form(
            request,
            400,
            error=catalogue(request).gettext(EXPIRED_FORM),
            login_name=name,
            next=target,
        )
    logins = _logins(request)
    address = _client_key(request.scope)
    keys = (("login", "account", name.casefold()), ("login", "address", address))
    items = (logins.per_account, logins.per_address)
    # Every attempt is counted before its password is checked, in the same step as
    # the test: logins sent at once cannot all pass the test before one is counted.
    for item, item_keys in zip(items, keys, strict=True):
        if not await logins.counts.hit(item, *item_keys):
            return await _too_many_logins(request, name, target, item, *item_keys)
    store = store_of(request)
    async with logins.verifying:
        editor = await run_in_threadpool(check_login, store, name, password)
    if editor is None:
        await asyncio.sleep(delay)
        return _login_form(
            request,
            401,
            login_name=name,
            next=target,
            error=catalogue(request).gettext("Name or password is not correct."),
        )
    # Only failures count against a name: its editor may log in again and again.
    await logins.counts.clear(logins.per_account, *keys[0])
    token = secrets.token_urlsafe(32)
    started = now()
    settings = settings_of(request)
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
        secure=_secure(settings),
    )
    return response


async def logout(request: Request) -> Response:
    """``POST /admin/logout``: end the session."""
    form = await request.form()
    if not genuine(request, form):
        return refused(request, 400, EXPIRED_FORM)
    await run_in_threadpool(store_of(request).end_session, session_key(request))
    response = RedirectResponse(f"{PREFIX}/login", 303)
    response.delete_cookie(
        SESSION_COOKIE,
        path=PREFIX,
        httponly=True,
        samesite="lax",
        secure=_secure(settings_of(request)),
    )
    return response


def to_overview(_request: Request) -> Response:
    """``GET /admin/logout``: nothing to show; on to the overview."""
    return RedirectResponse(f"{PREFIX}/", 303)
