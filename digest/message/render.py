"""Render an issue: Jinja2 → MJML (mjml-python) → HTML, and the text part from the same data.

MJML is compiled once per variant (one distinct content set), never per recipient.
Personal fields are written into both parts as placeholders such as
``%%DIGEST-3f9c…:unsubscribe_url%%`` (see :data:`PERSONAL_FIELDS`); :func:`personalize`
fills them in for one recipient with plain string substitution. The markers contain
nothing that HTML escaping or MJML changes, so they come out of the compiler as they went
in. Their middle part is random per rendering, so text from a feed cannot name one and
have a reader's signed unsubscribe link filled into a link of its own.

Templates are looked up first in the newsletter's ``templates`` folder (if set), then
in the bundled ``templates/`` folder at the top of the project. That folder sits next
to the ``digest`` package in a source checkout and an editable install (``pip install
-e .``); a wheel carries it as ``digest/templates/`` (see pyproject.toml).

Templates hold no reader-visible text of their own: they call ``_()`` (Jinja2's i18n
extension, new style), and the issue's locale (a reader's, else the newsletter's) picks
the catalogue (:func:`digest.core.i18n.translations`) and formats the dates. One
environment per search path and locale.

A newsletter with ``click_counts`` gets counted links in what readers get (the send's
messages and the archive page, never previews or tests): each ``item.url`` the templates
print is then ``public_url/r/<token>`` (:func:`digest.audience.tokens.click_url`), the
same link for every reader of the issue.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
)
from markupsafe import Markup, escape
from mjml import mjml2html

from digest.audience.tokens import click_url
from digest.config import NewsletterSettings, Settings
from digest.core.errors import RenderError
from digest.core.i18n import format_day, format_long_day, language, translations
from digest.core.models import Issue, IssueItem, Variant
from digest.issue.compose import content_key, shorten

__all__ = [
    "render_mail_templates",
    "HTML_TEMPLATE",
    "TEXT_TEMPLATE",
    "PERSONAL_FIELDS",
    "BUNDLED_TEMPLATES",
    "placeholder",
    "greeting_for",
    "template_path",
    "render_variant",
    "counted_links",
    "personalize",
]

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"


def _bundled_templates() -> Path:
    """``digest/templates/`` of an installed wheel, else ``templates/`` next to the package.

    Found from this module's own file, which also works when ``digest`` is imported as a
    namespace package (``digest.__file__`` is then None).
    """
    package = Path(__file__).resolve().parents[1]
    installed = package / "templates"
    return installed if installed.is_dir() else package.parent / "templates"


#: Bundled templates: the top-level ``templates/`` folder of the project.
BUNDLED_TEMPLATES = _bundled_templates()

#: Fields filled in per recipient. ``greeting`` defaults to one made from ``name``.
PERSONAL_FIELDS = ("greeting", "name", "email", "unsubscribe_url", "preferences_url")


#: Longest preheader in characters: clients show the first 100 or so after the subject.
MAX_PREHEADER_LENGTH = 200

# Invisible characters after the preheader, so clients do not pad the preview line
# with the first words of the body.
_PREVIEW_PADDING = Markup("&#847;&zwnj;&nbsp;" * 24)


def placeholder(field: str, marker: str) -> str:
    """What a template prints for a personal field, e.g. ``%%DIGEST-<marker>:email%%``."""
    return f"%%DIGEST-{marker}:{field}%%"


def greeting_for(name: str, locale: str = "de_DE") -> str:
    """The salutation line: with the name when there is one, else without."""
    catalogue = translations(locale)
    name = " ".join(name.split())
    if name:
        # TRANSLATORS: the first line of a digest; the reader's name as they gave it.
        return catalogue.gettext("Hello %(name)s,") % {"name": name}
    # TRANSLATORS: the first line of a digest to a reader without a name.
    return catalogue.gettext("Hello,")


def template_path(settings: Settings, newsletter: NewsletterSettings) -> tuple[Path, ...]:
    """The folders searched for templates, the newsletter's overrides first."""
    folders = [settings.resolve(newsletter.templates)] if newsletter.templates else []
    return (*folders, BUNDLED_TEMPLATES)


def _is_web_url(value: str) -> bool:
    return value.lower().startswith(("https://", "http://"))


def _http_url(value: str) -> str:
    # Feed links end up in href and src: only web addresses get through.
    return value if _is_web_url(value) else "#"


# What XML 1.0 (and so the MJML parser) refuses even as a character reference.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _printable(value: Any) -> Any:
    """Every value a template prints, without the characters no document may contain.

    Sources drop control characters already; this keeps a value that came another way
    (the store, a template override) from making the whole issue fail to compile.
    """
    if isinstance(value, Markup):
        return Markup(_NOT_XML.sub("", value))
    if isinstance(value, str):
        return _NOT_XML.sub("", value)
    return value


def _autoescape(name: str | None) -> bool:
    return not (name or "").endswith(".txt.j2")


@functools.lru_cache(maxsize=32)
def _environment(search_path: tuple[Path, ...], locale: str) -> Environment:
    env = Environment(
        extensions=["jinja2.ext.i18n"],
        loader=FileSystemLoader(search_path),
        autoescape=_autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_printable,
    )
    env.filters["http_url"] = _http_url
    env.tests["web_url"] = _is_web_url
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    return env


def _template_location(exc: BaseException, search_path: tuple[Path, ...]) -> tuple[str, int]:
    """The template and line where a runtime error happened, from the traceback.

    Jinja2 rewrites tracebacks so template code shows up as frames of the template file.
    """
    found: tuple[str, int] | None = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__jinja_exception__") is exc:
            filename = Path(tb.tb_frame.f_code.co_filename)
            found = (_template_name(filename, search_path), tb.tb_lineno)
        tb = tb.tb_next
    return found or ("", 0)


def _template_name(filename: Path, search_path: tuple[Path, ...]) -> str:
    for folder in search_path:
        if filename.is_relative_to(folder):
            return filename.relative_to(folder).as_posix()
    return filename.name


def _render(
    env: Environment, name: str, context: Mapping[str, Any], search_path: tuple[Path, ...]
) -> str:
    try:
        return env.get_template(name).render(context)
    except TemplateNotFound as exc:
        folders = ", ".join(str(p) for p in search_path)
        missing = exc.name if isinstance(exc.name, str) else name
        raise RenderError(missing, f"not found in {folders}") from None
    except TemplateSyntaxError as exc:
        raise RenderError(exc.name or name, exc.message or "syntax error", exc.lineno) from None
    except Exception as exc:
        where, line = _template_location(exc, search_path)
        problem = exc.message if isinstance(exc, TemplateError) else None
        problem = problem or f"{type(exc).__name__}: {exc}"
        raise RenderError(where or name, problem, line or None) from exc


def _compile(source: str) -> str:
    try:
        html = mjml2html(source)
    except ValueError as exc:
        raise RenderError(HTML_TEMPLATE, f"MJML does not compile: {exc}") from None
    leftover = re.search(r"<(mj-[a-z-]+)", html)
    if leftover:
        raise RenderError(HTML_TEMPLATE, f"unknown MJML element <{leftover[1]}>")
    return html


def _context(
    settings: Settings, newsletter: NewsletterSettings, issue: Issue, marker: str, archive: bool
) -> dict[str, Any]:
    zone, locale = newsletter.zone, issue.locale or newsletter.locale
    titles = [article.title for article in issue.articles[:3]]
    public_url = settings.public_url.rstrip("/")

    def day(value: datetime) -> str:
        return format_day(value, locale, zone)

    def long_day(value: datetime) -> str:
        return format_long_day(value, locale, zone)

    formatters: dict[str, Callable[[datetime], str]] = {"day": day, "long_day": long_day}
    return {
        "newsletter": newsletter,
        "issue": issue,
        "lang": language(locale),
        "preheader": shorten(
            " ".join((newsletter.preheader or " · ".join(titles)).split()), MAX_PREHEADER_LENGTH
        ),
        "preview_padding": _PREVIEW_PADDING,
        "public_url": public_url,
        "archive_url": f"{public_url}/archive/{newsletter.id}/{issue.key}",
        "signup_url": f"{public_url}/subscribe/{newsletter.id}",
        "archive": archive,
        "personal": {field: placeholder(field, marker) for field in PERSONAL_FIELDS},
        **formatters,
    }


def render_mail_templates(
    settings: Settings,
    newsletter: NewsletterSettings,
    name: str,
    context: Mapping[str, Any],
    *,
    locale: str | None = None,
) -> tuple[str, str]:
    """The HTML and text of a mail other than an issue: ``<name>.html.j2`` and
    ``<name>.txt.j2`` from the same folders as the issue's templates, in ``locale``
    (default: the newsletter's)."""
    search_path = template_path(settings, newsletter)
    env = _environment(search_path, locale or newsletter.locale)
    html = _render(env, f"{name}.html.j2", context, search_path)
    text = _render(env, f"{name}.txt.j2", context, search_path)
    return html, text


def counted_links(settings: Settings, issue: Issue, channel: str) -> Issue:
    """The issue with each article's link going through ``public_url/r/<token>``.

    ``channel`` says where the link is (:data:`~digest.audience.tokens.MAIL` or ``WEB``).
    A link that is no web address stays as it is (the templates print it as "#").
    """

    def counted(item: IssueItem) -> IssueItem:
        if not _is_web_url(item.url):
            return item
        url = click_url(settings, issue.newsletter, issue.key, item.article.uid, channel)
        return dataclasses.replace(item, url=url)

    sections = tuple(
        dataclasses.replace(section, items=tuple(counted(item) for item in section.items))
        for section in issue.sections
    )
    return dataclasses.replace(issue, sections=sections)


def render_variant(
    settings: Settings,
    newsletter: NewsletterSettings,
    issue: Issue,
    *,
    archive: bool = False,
    clicks: str | None = None,
) -> Variant:
    """Render an issue (already cut for its readers) once, with personal placeholders,
    in the issue's locale (:attr:`Issue.locale <digest.core.models.Issue.locale>`).

    With ``archive`` it is the copy for the public archive page: the same templates,
    which then leave out every personal line and link (no greeting by name, no address,
    no unsubscribe or preference link) and the "View in browser" link. With ``clicks``
    (a channel) and the newsletter's ``click_counts`` on, article links are counted
    (:func:`counted_links`); the variant's ``issue`` keeps the articles' own links.
    """
    search_path = template_path(settings, newsletter)
    env = _environment(search_path, issue.locale or newsletter.locale)
    marker = secrets.token_hex(8)
    shown = counted_links(settings, issue, clicks) if clicks and newsletter.click_counts else issue
    context = _context(settings, newsletter, shown, marker, archive)
    html = _compile(_render(env, HTML_TEMPLATE, context, search_path))
    text = _render(env, TEXT_TEMPLATE, context, search_path)
    return Variant(
        issue_key=issue.key,
        content_key=content_key(issue),
        issue=issue,
        html=html,
        text=text,
        marker=marker,
    )


def _fill(template: str, part: str, marker: str, values: Mapping[str, str], html: bool) -> str:
    def value(match: re.Match[str]) -> str:
        field = match[1]
        if field not in values:
            given = ", ".join(sorted(values)) or "none"
            raise RenderError(part, f"no value for personal field {field!r} (given: {given})")
        return str(escape(values[field])) if html else values[field]

    # One pass: a value that itself looks like a placeholder is not expanded again.
    return re.sub(rf"%%DIGEST-{marker}:([a-z_]+)%%", value, template)


def personalize(
    variant: Variant, fields: Mapping[str, str], *, locale: str = "de_DE"
) -> tuple[str, str]:
    """The (html, text) of a variant for one recipient.

    ``fields`` holds the values of :data:`PERSONAL_FIELDS`; ``greeting`` may be left out
    and is then made from ``name`` in ``locale``. Values are HTML-escaped in the HTML
    part only. A placeholder without a value raises :class:`RenderError`.
    """
    values = dict(fields)
    if "greeting" not in values:
        values["greeting"] = greeting_for(values.get("name", ""), locale)
    return (
        _fill(variant.html, HTML_TEMPLATE, variant.marker, values, html=True),
        _fill(variant.text, TEXT_TEMPLATE, variant.marker, values, html=False),
    )
