"""The ASGI app: the endpoints the links in every message point to.

For now the RFC 8058 one-click unsubscribe: ``POST /unsubscribe/{token}`` unsubscribes
(the body, ``List-Unsubscribe=One-Click``, is not needed: the signed token is the
authority) and answers 200 without a redirect; ``GET`` and ``HEAD`` only show a page with
a button, so a mail scanner following links unsubscribes nobody. The preference centre
and the archive belong here too.

Rules every page follows, whichever route it belongs to:

- routes are declared with :func:`digest.web.routing.page`: only ``POST`` changes state;
- every answer carries the security headers (:mod:`digest.web.security`), and pages need
  nothing inline: markup in ``templates/``, styles in ``static/``;
- routes that take a token live under one of :data:`~digest.web.logs.TOKEN_PREFIXES`, so
  they are rate limited per address and their tokens never reach a log;
- a page about a token says nothing about the subscriber it names: not the address, and
  not whether that subscriber, or that newsletter, exists.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from limits import RateLimitItem
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from digest.config import Settings
from digest.store import Store
from digest.tokens import UNSUBSCRIBE, TokenError, preferences_url, read_token
from digest.web.logs import TOKEN_PREFIXES
from digest.web.reader import reader_routes
from digest.web.routing import page
from digest.web.security import SecurityHeaders, TokenRateLimit, rate_limit_item

__all__ = ["DEFAULT_RATE_LIMIT", "DEFAULT_SIGNUP_RATE_LIMIT", "create_app"]

#: Requests per client address to all token routes together. One-click POSTs from a
#: large mail provider arrive from few addresses, so this is generous on purpose.
DEFAULT_RATE_LIMIT = "60/minute"
#: Sign-ups (POSTs to /subscribe/...) per client address.
DEFAULT_SIGNUP_RATE_LIMIT = "10/hour"

STATIC_PREFIX = "/static"
#: ``/unsubscribe/<token>?einstellungen`` leads on to the preference page of that token's
#: subscriber. A relative link, so that the page itself stays the same for every token.
PREFERENCES_QUERY = "einstellungen"

_ERRORS = {
    404: ("Seite nicht gefunden", "Diese Seite gibt es nicht. Bitte prüfen Sie die Adresse."),
    405: ("Nicht möglich", "Diese Anfrage ist auf dieser Seite nicht möglich."),
    429: (
        "Zu viele Anfragen",
        "Von Ihrem Anschluss kamen in kurzer Zeit zu viele Anfragen. "
        "Bitte versuchen Sie es in einigen Minuten noch einmal.",
    ),
    500: (
        "Ein Fehler ist aufgetreten",
        "Ihre Anfrage konnte leider nicht bearbeitet werden. "
        "Bitte versuchen Sie es später noch einmal.",
    ),
}


class _App(Starlette):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's ServerErrorMiddleware, so its 500 page gets the headers too.
        return SecurityHeaders(super().build_middleware_stack(), cacheable_prefix=STATIC_PREFIX)


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("digest.web", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Jinja2Templates(env=env, context_processors=[_static_url])


def _static_url(request: Request) -> dict[str, Any]:
    # A path, not request.url_for's absolute URL: behind a proxy the Host may be an inner one.
    def static_url(path: str) -> str:
        return f"{request.scope.get('root_path', '')}{STATIC_PREFIX}/{path}"

    return {"static_url": static_url}


def create_app(
    settings: Settings,
    store: Store,
    *,
    rate_limit: str | RateLimitItem = DEFAULT_RATE_LIMIT,
    signup_rate_limit: str | RateLimitItem = DEFAULT_SIGNUP_RATE_LIMIT,
    send_mail: bool = False,
    mail_interval: float = 5.0,
) -> Starlette:
    """The web app on an open store; ``rate_limit`` is per client address on token routes,
    ``signup_rate_limit`` per client address on sign-ups. With ``send_mail`` the app's
    lifespan runs the mail queue (confirmation mail) every ``mail_interval`` seconds while
    it serves."""
    limit = rate_limit_item(rate_limit) if isinstance(rate_limit, str) else rate_limit
    signup_limit = (
        rate_limit_item(signup_rate_limit)
        if isinstance(signup_rate_limit, str)
        else signup_rate_limit
    )
    templates = _templates()

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def error_page(
        request: Request, status: int, headers: dict[str, str] | None = None
    ) -> Response:
        title, text = _ERRORS.get(status, _ERRORS[500])
        response = render(request, "message.html", status, title=title, text=text)
        response.headers.update(headers or {})
        return response

    def unsubscribe_token(request: Request) -> tuple[int, str] | None:
        try:
            return read_token(settings.secret_key, UNSUBSCRIBE, request.path_params["token"])
        except TokenError:
            return None

    def invalid_link(request: Request) -> Response:
        return render(
            request,
            "message.html",
            400,
            title="Link ungültig",
            text="Dieser Abmeldelink ist ungültig oder unvollständig. Bitte verwenden Sie "
            "den vollständigen Link aus der E-Mail.",
        )

    # Neither page names the newsletter or the address: the answer for a subscriber or a
    # newsletter that does not exist (any more) must be the same, byte for byte.
    def ask_to_unsubscribe(request: Request) -> Response:
        found = unsubscribe_token(request)
        if found is None:
            return invalid_link(request)
        if PREFERENCES_QUERY in request.query_params:
            subscriber_id, newsletter_id = found
            return RedirectResponse(preferences_url(settings, newsletter_id, subscriber_id), 303)
        return render(request, "unsubscribe.html", preferences=f"?{PREFERENCES_QUERY}")

    def unsubscribe(request: Request) -> Response:
        found = unsubscribe_token(request)
        if found is None:
            return invalid_link(request)
        subscriber_id, newsletter_id = found
        # Recorded for a newsletter no longer configured too: should it come back, the
        # withdrawal still holds. An unknown subscriber id records nothing.
        store.unsubscribe(subscriber_id, newsletter_id)
        return render(request, "unsubscribed.html", preferences=f"?{PREFERENCES_QUERY}")

    def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_page(request, exc.status_code, dict(exc.headers or {}))

    def server_error(request: Request, _exc: Exception) -> Response:
        return error_page(request, 500)

    def too_many_requests(request: Request, retry_after: int) -> Response:
        return error_page(request, 429, {"Retry-After": str(retry_after)})

    def not_found(request: Request) -> Response:
        return error_page(request, 404)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if not send_mail:
            yield
            return
        from digest.signup import run_mail_queue

        stop = asyncio.Event()
        task = asyncio.create_task(
            run_mail_queue(store, settings, stop=stop, interval=mail_interval)
        )
        try:
            yield
        finally:
            stop.set()
            await task

    return _App(
        lifespan=lifespan,
        routes=[
            *reader_routes(settings, store, render, not_found),
            page(
                "/unsubscribe/{token}",
                show=ask_to_unsubscribe,
                change=unsubscribe,
                name="unsubscribe",
            ),
            Route("/healthz", health, methods=["GET"], name="health"),
            Mount(STATIC_PREFIX, StaticFiles(packages=[("digest.web", "static")]), name="static"),
        ],
        middleware=[
            Middleware(
                TokenRateLimit, limit=limit, prefixes=TOKEN_PREFIXES, refuse=too_many_requests
            ),
            Middleware(
                TokenRateLimit,
                limit=signup_limit,
                prefixes=("subscribe",),
                refuse=too_many_requests,
                methods=("POST",),
            ),
        ],
        exception_handlers={HTTPException: http_error, 500: server_error},
    )
