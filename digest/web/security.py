"""Headers on every answer; on the routes that take a token, a per-address rate limit and
no path but the one their links use."""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.config import rate_limit_item
from digest.web.logs import normalised_path

__all__ = [
    "ADMIN_CONTENT_SECURITY_POLICY",
    "ARCHIVE_CONTENT_SECURITY_POLICY",
    "CONTENT_SECURITY_POLICY",
    "CanonicalTokenPaths",
    "PREVIEW_FRAME_CONTENT_SECURITY_POLICY",
    "SecurityHeaders",
    "TokenRateLimit",
    "rate_limit_item",
]

#: Everything a page needs comes from this site's /static; nothing inline, no scripts.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

#: The archive shows a digest as it was mailed: its inline style attributes (never a
#: <style> element or a script) and the articles' pictures from the web. Browsers that
#: do not know style-src-attr fall back to style-src and show it unstyled.
ARCHIVE_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' https: http:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: The editors' area: as above, and it embeds the preview frames from this site.
ADMIN_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "default-src 'none';", "default-src 'none'; frame-src 'self';"
)
#: A rendered email inside the editors' preview: its own inline styles and the articles'
#: pictures, no script and no form, framed only by this site, sandboxed (a unique origin).
PREVIEW_FRAME_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src http: https: data:; "
    "font-src http: https: data:; frame-ancestors 'self'; base-uri 'none'; "
    "form-action 'none'; sandbox allow-popups allow-popups-to-escape-sandbox"
)

_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    # A token in the address bar must not travel on to another site in a Referer header.
    # Not no-referrer: under it a browser posts our own forms with "Origin: null", which
    # is what a sandboxed frame or another site's page sends (see forms.py).
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
}


class SecurityHeaders:
    """Adds the security headers to every HTTP answer, and ``no-store`` outside static files.

    Pure ASGI, so it also wraps answers that no route produced: 404, 405, 429 and the 500
    page of Starlette's error middleware. ``policies`` gives paths under a prefix another
    Content-Security-Policy (the first prefix that matches).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        cacheable_prefix: str,
        policies: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.app = app
        self.cacheable_prefix = cacheable_prefix
        self.policies = policies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith(self.cacheable_prefix)
        policy = next(
            (policy for prefix, policy in self.policies if scope["path"].startswith(prefix)),
            CONTENT_SECURITY_POLICY,
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers[name] = value
                headers["content-security-policy"] = policy
                if not cacheable:
                    # Token pages stay out of shared caches and the browser's history cache.
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _client_key(scope: Scope) -> str:
    """The address a budget belongs to: an IPv4 address, or the /64 of an IPv6 one."""
    client = scope.get("client")
    host = client[0] if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


#: How many more genuine one-click withdrawals than other requests an address may send.
WITHDRAWAL_FACTOR = 20


class TokenRateLimit:
    """A moving-window budget per client address for every path under a token prefix
    (with ``methods``: for requests with one of these methods only).

    A POST that ``genuine_withdrawal`` accepts (a validly signed unsubscribe token) has a
    budget of its own, ``withdrawal_factor`` times as large.

    Over the budget the request never reaches the route: ``refuse(request, retry_after)``
    answers it (429 with ``Retry-After``). The budget is in memory, per process.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: RateLimitItem,
        prefixes: tuple[str, ...],
        refuse: Callable[[Request, int], Response],
        genuine_withdrawal: Callable[[Scope], bool] = lambda _scope: False,
        withdrawal_factor: int = WITHDRAWAL_FACTOR,
        methods: tuple[str, ...] | None = None,
    ) -> None:
        self.app = app
        self.methods = methods
        self.limit = limit
        # A separate, larger budget: a mail provider posts its users' one-click
        # unsubscribes from few addresses, and a refused one leaves a reader subscribed.
        self.withdrawal_limit = type(limit)(limit.amount * withdrawal_factor, limit.multiples)
        self.prefixes = tuple(f"/{prefix}/" for prefix in prefixes)
        self.refuse = refuse
        self.genuine_withdrawal = genuine_withdrawal
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(self.prefixes)
            and (self.methods is None or scope["method"] in self.methods)
        ):
            key = _client_key(scope)
            withdrawal = self.genuine_withdrawal(scope)
            limit = self.withdrawal_limit if withdrawal else self.limit
            budget = "withdrawal" if withdrawal else "other"
            if not self.limiter.hit(limit, key, budget):
                reset_at = self.limiter.get_window_stats(limit, key, budget).reset_time
                retry_after = max(1, math.ceil(reset_at - time.time()))
                response = self.refuse(Request(scope, receive), retry_after)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CanonicalTokenPaths:
    """A token route asked for by a path written otherwise than its links write it is
    answered by ``not_found`` (404) before anything else runs.

    Links say ``/unsubscribe/<token>``; a server decodes ``/%75nsubscribe/<token>`` or
    ``/unsubscribe%2F<token>`` to the same route, and ``/unsubscribe//<token>`` reaches
    no route but still carries the token. No mail client writes these: they come from
    a tool rewriting the link or from someone probing, and they get the page of a path
    that does not exist. The path as sent (``raw_path``) must be its own normalised
    form (:func:`~digest.web.logs.normalised_path`): nothing percent-encoded, no doubled
    slash, no ``.`` or ``..`` segment.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefixes: tuple[str, ...],
        not_found: Callable[[Request], Response],
    ) -> None:
        self.app = app
        self.prefixes = frozenset(prefix.casefold() for prefix in prefixes)
        self.not_found = not_found

    def written_otherwise(self, scope: Scope) -> bool:
        """True for a path to a token route that is not written as its links write it."""
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        sent = raw.decode("latin-1").removeprefix(scope.get("root_path", ""))
        normalised = normalised_path(sent)
        first = normalised.split("/", 2)[1].casefold()
        return first in self.prefixes and sent != normalised

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.written_otherwise(scope):
            response = self.not_found(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
