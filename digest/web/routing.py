"""The one way to declare a reader-facing page: showing and changing are separate handlers.

``GET`` and ``HEAD`` call ``show``, which must not change anything: mail scanners and link
previews fetch every link in a message, with either method. Only ``POST`` calls
``change``. Every other method is answered 405 with an ``Allow`` header, before any
handler runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.config import Settings
from digest.core.i18n import reader_locale

__all__ = ["Handler", "page", "page_locale"]

Handler = Callable[[Request], Response] | Callable[[Request], Awaitable[Response]]

SHOWING = ("GET", "HEAD")


def page(path: str, *, show: Handler, change: Handler | None = None, name: str) -> Route:
    """A route whose method decides, explicitly, which handler may run."""
    allowed = [*SHOWING, *(["POST"] if change is not None else [])]

    async def dispatch(request: Request) -> Response:
        if request.method in SHOWING:
            return await _call(show, request)
        if request.method == "POST" and change is not None:
            return await _call(change, request)
        # Route already answers 405 for these; this keeps the rule if that ever changes.
        raise HTTPException(405, headers={"Allow": ", ".join(allowed)})

    return Route(path, dispatch, methods=allowed, name=name)


async def _call(handler: Handler, request: Request) -> Response:
    if inspect.iscoroutinefunction(handler):
        response: Response = await handler(request)
        return response
    # The store is synchronous: keep its queries off the event loop.
    return await run_in_threadpool(handler, request)  # type: ignore[arg-type]


def page_locale(settings: Settings, newsletter_id: str | None, reader: str | None = None) -> str:
    """The locale of a page: if the named newsletter is configured, the reader's own
    (``reader``, as a token or the store names it) where we speak it, else the
    newsletter's; otherwise the default."""
    for newsletter in settings.newsletters:
        if newsletter.id == newsletter_id:
            return reader_locale(reader, newsletter.locale)
    return settings.locale
