"""What every endpoint shares: the app's settings and store, and how a page is shown.

The app keeps them on ``app.state`` (:func:`install`); an endpoint is a plain function of
its request that finds them there (:func:`settings_of`, :func:`store_of`), as Starlette's
own examples do, so each page can be read and tested alone. Pages are rendered by one
Jinja2 environment per locale, each with its catalogue, made on first use.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.templating import Jinja2Templates

from digest.config import Settings
from digest.core.i18n import N_, language, translations
from digest.store import Store

__all__ = [
    "STATIC_PREFIX",
    "error_page",
    "install",
    "message_page",
    "not_found",
    "render",
    "render_once",
    "settings_of",
    "store_of",
]

STATIC_PREFIX = "/static"

# Message ids, translated when a page is shown.
_ERRORS = {
    404: (N_("Page not found"), N_("This page does not exist. Please check the address.")),
    405: (N_("Not possible"), N_("This request is not possible on this page.")),
    429: (
        N_("Too many requests"),
        N_(
            "Too many requests came from your connection in a short time. "
            "Please try again in a few minutes."
        ),
    ),
    500: (
        N_("An error occurred"),
        N_("Sorry, your request could not be processed. Please try again later."),
    ),
}


def install(app: Starlette, settings: Settings, store: Store) -> None:
    """Keep ``settings`` and ``store`` on ``app`` for its endpoints."""
    app.state.settings = settings
    app.state.store = store
    app.state.templates = {}
    app.state.rendered = {}


def settings_of(request: Request) -> Settings:
    """The settings of the app that answers ``request``."""
    settings: Settings = request.app.state.settings
    return settings


def store_of(request: Request) -> Store:
    """The store of the app that answers ``request``."""
    store: Store = request.app.state.store
    return store


def _templates(locale: str) -> Jinja2Templates:
    env = Environment(
        extensions=["jinja2.ext.i18n"],
        loader=PackageLoader("digest.web", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        # The package's templates do not change while it runs: no stat() per page.
        auto_reload=False,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.globals["lang"] = language(locale)
    return Jinja2Templates(env=env, context_processors=[_static_url])


def _static_url(request: Request) -> dict[str, Any]:
    # A path, not request.url_for's absolute URL: behind a proxy the Host may be an inner one.
    def static_url(path: str) -> str:
        return f"{request.scope.get('root_path', '')}{STATIC_PREFIX}/{path}"

    return {"static_url": static_url}


def render(
    request: Request, name: str, status: int = 200, *, locale: str | None = None, **context: Any
) -> Response:
    """The page of template ``name`` in ``locale`` (default: the configured locale)."""
    locale = locale or settings_of(request).locale
    environments: dict[str, Jinja2Templates] = request.app.state.templates
    templates = environments.get(locale)
    if templates is None:
        # One environment per locale, each with its catalogue: nothing shared between
        # requests but the compiled templates.
        templates = environments[locale] = _templates(locale)
    return templates.TemplateResponse(request, name, context, status_code=status)


def render_once(request: Request, name: str, *, locale: str, **context: str) -> Response:
    """:func:`render` for a page that is the same for every request with these arguments
    (it does not look at the request): rendered once per locale, root path and
    ``context``, then answered from memory. The one-click unsubscribe's answer is one:
    after a large send, mail providers post those in bursts."""
    key = (name, locale, request.scope.get("root_path", ""), tuple(sorted(context.items())))
    rendered: dict[tuple[object, ...], bytes] = request.app.state.rendered
    body = rendered.get(key)
    if body is None:
        page = render(request, name, 200, locale=locale, **context)
        body = rendered[key] = bytes(page.body)
    return HTMLResponse(body)


def message_page(request: Request, status: int, locale: str, title: str, text: str) -> Response:
    """A page of one message: ``title`` and ``text`` are message ids, translated here."""
    catalogue = translations(locale)
    return render(
        request,
        "message.html",
        status,
        locale=locale,
        title=catalogue.gettext(title),
        text=catalogue.gettext(text),
    )


def error_page(request: Request, status: int, headers: dict[str, str] | None = None) -> Response:
    """The page of an HTTP error, in the configured locale."""
    title, text = _ERRORS.get(status, _ERRORS[500])
    response = message_page(request, status, settings_of(request).locale, title, text)
    response.headers.update(headers or {})
    return response


def not_found(request: Request) -> Response:
    """The 404 page."""
    return error_page(request, 404)
