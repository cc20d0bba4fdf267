"""The ASGI app: the endpoints the links in every message point to.

For now the RFC 8058 one-click unsubscribe: ``POST /unsubscribe/{token}`` unsubscribes
(the body, ``List-Unsubscribe=One-Click``, is not needed: the signed token is the
authority) and answers 200 without a redirect; ``GET`` only shows a page with a button,
so a mail scanner following links unsubscribes nobody. The preference centre and the
archive belong here too.
"""

from __future__ import annotations

from html import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from digest.config import Settings
from digest.errors import ConfigError
from digest.store import Store
from digest.tokens import UNSUBSCRIBE, TokenError, read_token

__all__ = ["create_app"]

_PAGE = """<!doctype html>
<html lang="de"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;
line-height:1.5;color:#1d2a38}}button{{font-size:1rem;padding:.6rem 1.2rem;
background:#1d3557;color:#fff;border:0;border-radius:4px}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status)


def create_app(settings: Settings, store: Store) -> Starlette:
    """The web app on an open store."""

    def newsletter_name(newsletter_id: str) -> str:
        try:
            return settings.newsletter(newsletter_id).name
        except ConfigError:
            return newsletter_id

    def read(token: str) -> tuple[int, str] | None:
        try:
            return read_token(settings.secret_key, UNSUBSCRIBE, token)
        except TokenError:
            return None

    def unsubscribe(request: Request) -> HTMLResponse:
        found = read(request.path_params["token"])
        if found is None:
            return _page(
                "Link ungültig",
                "<p>Dieser Abmeldelink ist ungültig oder unvollständig. Bitte verwenden Sie "
                "den vollständigen Link aus der E-Mail.</p>",
                status=400,
            )
        subscriber_id, newsletter_id = found
        name = escape(newsletter_name(newsletter_id))
        if request.method == "GET":
            return _page(
                "Abmelden",
                f"<p>Möchten Sie den Newsletter „{name}“ abbestellen?</p>"
                '<form method="post"><input type="hidden" name="List-Unsubscribe" '
                'value="One-Click"><button type="submit">Abmelden</button></form>',
            )
        email = store.unsubscribe(subscriber_id, newsletter_id)
        if email is None:
            return _page("Abgemeldet", "<p>Diese Adresse ist nicht (mehr) eingetragen.</p>")
        return _page(
            "Abgemeldet",
            f"<p>{escape(email)} erhält den Newsletter „{name}“ nicht mehr.</p>",
        )

    def health(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
            Route("/healthz", health),
        ]
    )
