"""The ASGI app: the endpoints the links in every message point to.

For now the RFC 8058 one-click unsubscribe: ``POST /unsubscribe/{token}`` unsubscribes
(the body, ``List-Unsubscribe=One-Click``, is not needed: the signed token is the
authority) and answers 200 without a redirect; ``GET`` and ``HEAD`` only show a page with
a button, so a mail scanner following links unsubscribes nobody. The reader pages
(:mod:`digest.web.reader`), the public archive (:mod:`digest.web.archive`) and the counted
article links ``/r/{token}`` (:mod:`digest.web.clicks`) are mounted here too.

Rules every page follows, whichever route it belongs to:

- routes are declared with :func:`digest.web.routing.page`: only ``POST`` changes state
  (a counted article link's ``GET`` adds one to a count, and nothing else);
- every answer carries the security headers (:mod:`digest.web.security`), and pages need
  nothing inline: markup in ``templates/``, styles in ``static/``;
- routes that take a token live under one of :data:`~digest.web.logs.TOKEN_PREFIXES`, so
  they are rate limited per address, answer only the path their links use (anything
  percent-encoded, a doubled slash, a dot segment is a 404) and their tokens never
  reach a log;
- a page about a token says nothing about the subscriber it names: not the address, and
  not whether that subscriber exists (it may name the newsletter the token names);
- pages speak the reader's locale (the one their token names, or the subscriber's when
  the page looks them up), else the locale of the newsletter the token names, else the
  configured default locale (:func:`page_locale`); their texts come from the catalogues
  in ``digest/locale/``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from limits import RateLimitItem
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from digest.audience.tokens import (
    UNSUBSCRIBE,
    TokenError,
    preferences_url,
    read_token,
    read_token_locale,
)
from digest.config import Settings, WebSettings, rate_limit_item
from digest.core.i18n import N_
from digest.store import Store
from digest.web.admin import FRAME_PREFIX, admin_routes
from digest.web.admin import PREFIX as ADMIN_PREFIX
from digest.web.archive import ARCHIVE_PREFIX, archive_routes
from digest.web.clicks import CLICK_PREFIX, Clicks, counting_clicks, follow_click
from digest.web.logs import TOKEN_PREFIXES
from digest.web.metrics import metrics, ready
from digest.web.pages import (
    STATIC_PREFIX,
    error_page,
    install,
    message_page,
    not_found,
    render,
    render_once,
    settings_of,
)
from digest.web.reader import reader_routes
from digest.web.routing import page, page_locale
from digest.web.security import (
    ADMIN_CONTENT_SECURITY_POLICY,
    ARCHIVE_CONTENT_SECURITY_POLICY,
    PREVIEW_FRAME_CONTENT_SECURITY_POLICY,
    CanonicalTokenPaths,
    RateCounts,
    SecurityHeaders,
    TokenRateLimit,
)
from digest.web.withdrawals import Withdrawals

__all__ = ["DEFAULT_RATE_LIMIT", "DEFAULT_SIGNUP_RATE_LIMIT", "create_app", "page_locale"]

#: The defaults of ``web.rate_limit`` and ``web.signup_rate_limit`` (see digest/config.py).
DEFAULT_RATE_LIMIT = WebSettings.rate_limit
DEFAULT_SIGNUP_RATE_LIMIT = WebSettings.signup_rate_limit

#: ``/unsubscribe/<token>?einstellungen`` leads on to the preference page of that token's
#: subscriber. A relative link, so that the page itself stays the same for every token.
PREFERENCES_QUERY = "einstellungen"

_INVALID_LINK = (
    N_("Invalid link"),
    N_(
        "This unsubscribe link is invalid or incomplete. "
        "Please use the complete link from the email."
    ),
)


class _App(Starlette):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's ServerErrorMiddleware, so its 500 page gets the headers too.
        return SecurityHeaders(
            super().build_middleware_stack(),
            cacheable_prefix=STATIC_PREFIX,
            policies=(
                (FRAME_PREFIX, PREVIEW_FRAME_CONTENT_SECURITY_POLICY),
                (f"{ADMIN_PREFIX}/", ADMIN_CONTENT_SECURITY_POLICY),
                (ARCHIVE_PREFIX, ARCHIVE_CONTENT_SECURITY_POLICY),
            ),
        )


def _unsubscribe_token(request: Request) -> tuple[int, str, str | None] | None:
    try:
        token = request.path_params["token"]
        return read_token_locale(settings_of(request).secret_key, UNSUBSCRIBE, token)
    except TokenError:
        return None


def _invalid_link(request: Request) -> Response:
    return message_page(request, 400, settings_of(request).locale, *_INVALID_LINK)


def _newsletter_name(settings: Settings, newsletter_id: str) -> str:
    """The name of the newsletter a token names; empty for one no longer configured."""
    for newsletter in settings.newsletters:
        if newsletter.id == newsletter_id:
            return newsletter.name
    return ""


# Neither page names the address, nor tells whether its subscriber exists (any more):
# for a subscriber who does not, the answer is the same, byte for byte. What they name
# comes from the signed token alone: the newsletter being left, in the reader's language
# the token names (else the newsletter's), when it is configured; a newsletter removed
# from the config is named by none, and its pages speak the default locale, like those
# of one that never existed.
def ask_to_unsubscribe(request: Request) -> Response:
    """``GET /unsubscribe/{token}``: a page with a button (or on to the preferences)."""
    found = _unsubscribe_token(request)
    if found is None:
        return _invalid_link(request)
    settings = settings_of(request)
    subscriber_id, newsletter_id, locale = found
    if PREFERENCES_QUERY in request.query_params:
        target = preferences_url(settings, newsletter_id, subscriber_id, locale=locale)
        return RedirectResponse(target, 303)
    return render(
        request,
        "unsubscribe.html",
        locale=page_locale(settings, newsletter_id, locale),
        newsletter_name=_newsletter_name(settings, newsletter_id),
        preferences=f"?{PREFERENCES_QUERY}",
    )


async def unsubscribe(request: Request) -> Response:
    """``POST /unsubscribe/{token}``: unsubscribe (RFC 8058 one-click), 200, no redirect."""
    found = _unsubscribe_token(request)
    if found is None:
        return _invalid_link(request)
    subscriber_id, newsletter_id, locale = found
    # Recorded for a newsletter no longer configured too: should it come back, the
    # withdrawal still holds. An unknown subscriber id records nothing. Answered once
    # committed, in one transaction with the others of a burst (see withdrawals.py).
    withdrawals: Withdrawals = request.app.state.withdrawals
    await withdrawals.unsubscribe(subscriber_id, newsletter_id)
    settings = settings_of(request)
    return render_once(
        request,
        "unsubscribed.html",
        locale=page_locale(settings_of(request), newsletter_id, locale),
        newsletter_name=_newsletter_name(settings, newsletter_id),
        preferences=f"?{PREFERENCES_QUERY}",
    )


async def health(_request: Request) -> Response:
    """``GET /healthz``: the process serves (liveness; ``/readyz`` also asks the store)."""
    return PlainTextResponse("ok")


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_page(request, exc.status_code, dict(exc.headers or {}))


def _server_error(request: Request, _exc: Exception) -> Response:
    return error_page(request, 500)


def _genuine_withdrawal(scope: Scope) -> bool:
    """A POST to an unsubscribe link whose token is validly signed."""
    prefix = "/unsubscribe/"
    path: str = scope["path"]
    if scope["method"] != "POST" or not path.startswith(prefix):
        return False
    settings: Settings = scope["app"].state.settings
    try:
        read_token(settings.secret_key, UNSUBSCRIBE, path.removeprefix(prefix))
    except TokenError:
        return False
    return True


def _too_many_requests(request: Request, retry_after: int) -> Response:
    return error_page(request, 429, {"Retry-After": str(retry_after)})


@contextlib.asynccontextmanager
async def _mail_queue(
    settings: Settings, store: Store, send_mail: bool, interval: float
) -> AsyncIterator[None]:
    """While the app serves: the queued confirmation mail sent, if ``send_mail``."""
    if not send_mail:
        yield
        return
    from digest.ops.mail_queue import run_mail_queue

    stop = asyncio.Event()
    task = asyncio.create_task(run_mail_queue(store, settings, stop=stop, interval=interval))
    try:
        yield
    finally:
        stop.set()
        await task


def create_app(
    settings: Settings,
    store: Store,
    *,
    rate_limit: str | RateLimitItem | None = None,
    signup_rate_limit: str | RateLimitItem | None = None,
    send_mail: bool = False,
    mail_interval: float = 5.0,
    login_delay: float = 1.0,
) -> Starlette:
    """The web app on an open store; ``rate_limit`` is per client address on token routes,
    ``signup_rate_limit`` per client address on sign-ups (default: the ``[web]``
    settings), counted in ``[web] rate_limit_storage``. With ``send_mail`` the app's
    lifespan runs the mail queue (confirmation mail) every ``mail_interval`` seconds
    while it serves; in a cluster (``[cluster] queue``) it never does: a job queued with
    each sign-up sends the mail. A failed login to the editors' area is answered
    ``login_delay`` seconds late."""
    rate_limit = settings.web.rate_limit if rate_limit is None else rate_limit
    signup_rate_limit = (
        settings.web.signup_rate_limit if signup_rate_limit is None else signup_rate_limit
    )
    limit = rate_limit_item(rate_limit) if isinstance(rate_limit, str) else rate_limit
    signup_limit = (
        rate_limit_item(signup_rate_limit)
        if isinstance(signup_rate_limit, str)
        else signup_rate_limit
    )

    # One storage for the app's counts (each named by what it counts).
    counts = RateCounts(settings.web.rate_limit_storage)
    send_mail = send_mail and not settings.cluster.enabled

    clicks = Clicks()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with (
            counting_clicks(store, clicks),
            _mail_queue(settings, store, send_mail, mail_interval),
        ):
            yield

    app = _App(
        lifespan=lifespan,
        routes=[
            *reader_routes(),
            *archive_routes(),
            *admin_routes(login_delay=login_delay),
            page(
                "/unsubscribe/{token}",
                show=ask_to_unsubscribe,
                change=unsubscribe,
                name="unsubscribe",
            ),
            page(f"/{CLICK_PREFIX}/{{token}}", show=follow_click, name="click"),
            Route("/healthz", health, methods=["GET"], name="health"),
            Route("/readyz", ready, methods=["GET"], name="ready"),
            # Off, there is no such path; on, it is the same 404 to everyone not allowed.
            *([Route("/metrics", metrics, methods=["GET"])] if settings.web.metrics else []),
            Mount(STATIC_PREFIX, StaticFiles(packages=[("digest.web", "static")]), name="static"),
        ],
        middleware=[
            # Before anything reads the client's address: from a trusted proxy, the
            # rightmost address in X-Forwarded-For that is not itself a trusted proxy.
            Middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.web.trusted_proxies)),
            # First: such a path reaches neither the rate limit nor a route.
            Middleware(
                CanonicalTokenPaths, prefixes=(*TOKEN_PREFIXES, CLICK_PREFIX), not_found=not_found
            ),
            Middleware(
                TokenRateLimit,
                limit=limit,
                prefixes=TOKEN_PREFIXES,
                refuse=_too_many_requests,
                counts=counts,
                name="token",
                genuine_withdrawal=_genuine_withdrawal,
            ),
            Middleware(
                TokenRateLimit,
                limit=signup_limit,
                prefixes=("subscribe",),
                refuse=_too_many_requests,
                counts=counts,
                name="signup",
                methods=("POST",),
            ),
        ],
        exception_handlers={HTTPException: _http_error, 500: _server_error},
    )
    install(app, settings, store)
    app.state.rate_counts = counts
    app.state.clicks = clicks
    app.state.withdrawals = Withdrawals(store)
    return app
