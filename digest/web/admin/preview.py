"""Previews and test sends in the editors' area.

An issue is previewed as one segment, or one subscriber found by a search, would get it:
its headers, text part, links and size (:func:`show_preview`), and its HTML part in a
frame of its own (:func:`preview_frame`). A test send mails it to up to ten addresses.
"""

from __future__ import annotations

import email
import re
from email import policy
from html import escape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from digest.config import NewsletterSettings
from digest.core.addresses import checked_address
from digest.core.errors import AddressError, DigestError
from digest.delivery.transport import SmtpPool
from digest.ops import jobs
from digest.web.admin.frames import frames_of
from digest.web.admin.session import (
    EXPIRED_FORM,
    FRAME_PREFIX,
    admin_page,
    catalogue,
    error_text,
    genuine,
    newsletter_of,
    session_editor,
    session_key,
)
from digest.web.admin.words import Words
from digest.web.forms import field_text
from digest.web.pages import not_found, settings_of, store_of

__all__ = ["HTML_WARNING_BYTES", "preview_frame", "send_test", "show_preview", "show_test"]

#: HTML parts above this size risk being clipped by Gmail (at about 102 KB).
HTML_WARNING_BYTES = 90 * 1024
_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"]+")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "href" and value and value not in self.links:
                self.links.append(value)


def _chosen(request: Request, newsletter: NewsletterSettings) -> dict[str, str]:
    subscriber = field_text(request.query_params.get("subscriber")).strip()[:320]
    segment = field_text(request.query_params.get("segment"))
    if subscriber:
        return {"subscriber": subscriber}
    names = [s.name for s in newsletter.segments]
    return {"segment": segment if segment in names else (names[0] if names else "")}


def _address(newsletter: NewsletterSettings, week: str, who: dict[str, str]) -> str:
    """The frame's address: what it shows (newsletter, week, and as whom)."""
    return f"{FRAME_PREFIX}{newsletter.id}/{week}?{urlencode(who)}"


def show_preview(request: Request) -> Response:
    """``GET /admin/{newsletter}/{week}/preview``: the message as the one chosen gets it.

    The message is built once; the page's frames show its HTML part as kept for them.
    """
    newsletter = newsletter_of(request)
    if newsletter is None:
        return not_found(request)
    store = store_of(request)
    week = request.path_params["week"]
    who = _chosen(request, newsletter)
    search = field_text(request.query_params.get("q")).strip()[:100]
    matches = store.search_subscribers(search) if search else []
    context: dict[str, Any] = {
        "title": catalogue(request).gettext("Preview of %(week)s")
        % {"week": Words(settings_of(request).locale).week(week)},
        "newsletter": newsletter,
        "week": week,
        "who": who,
        "search": search,
        "matches": matches,
        "error": "",
    }
    try:
        _issue, built = jobs.preview_message(
            settings_of(request),
            store,
            newsletter,
            week,
            segment=who.get("segment"),
            subscriber=who.get("subscriber"),
        )
    except DigestError as exc:
        context["error"] = error_text(request, exc)
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
    address = _address(newsletter, week, who)
    number = frames_of(request).keep(session_key(request), address, html)
    context.update(
        headers=[(name, str(value)) for name, value in parsed.items()],
        text=text,
        size=size,
        too_big=size > HTML_WARNING_BYTES,
        links=every,
        frame=f"{address}&{urlencode({'built': number})}",
    )
    return admin_page(request, "admin/preview.html", **context)


def preview_frame(request: Request) -> Response:
    """``GET /admin/frame/{newsletter}/{week}``: the HTML part alone, for the preview's frame.

    The HTML its page built (``built``: the number the page gave it), else built here.
    """
    newsletter = newsletter_of(request)
    if newsletter is None:
        return not_found(request)
    week = request.path_params["week"]
    who = _chosen(request, newsletter)
    number = field_text(request.query_params.get("built"))
    kept = frames_of(request).get(session_key(request), _address(newsletter, week, who), number)
    if kept is not None:
        return HTMLResponse(kept)
    try:
        html = jobs.preview(
            settings_of(request),
            store_of(request),
            newsletter,
            week,
            fmt="html",
            segment=who.get("segment"),
            subscriber=who.get("subscriber"),
        ).decode()
    except DigestError as exc:
        html = f"<!doctype html><p>{escape(error_text(request, exc))}</p>"
    return HTMLResponse(html)


def _test_form(request: Request, status: int = 200, **context: Any) -> Response:
    newsletter = newsletter_of(request)
    assert newsletter is not None
    week = request.path_params["week"]
    context.setdefault("addresses", session_editor(request).email)
    context.setdefault("segment", newsletter.segments[0].name if newsletter.segments else "")
    context.setdefault("subscriber", "")
    context.setdefault("results", None)
    context.setdefault("error", "")
    return admin_page(
        request,
        "admin/test.html",
        status,
        title=catalogue(request).gettext("Test send of %(week)s")
        % {"week": Words(settings_of(request).locale).week(week)},
        newsletter=newsletter,
        week=week,
        **context,
    )


def show_test(request: Request) -> Response:
    """``GET /admin/{newsletter}/{week}/test``: the test send form."""
    if newsletter_of(request) is None:
        return not_found(request)
    return _test_form(request)


async def send_test(request: Request) -> Response:
    """``POST /admin/{newsletter}/{week}/test``: mail the issue to up to ten addresses."""
    newsletter = newsletter_of(request)
    if newsletter is None:
        return not_found(request)
    settings = settings_of(request)
    form = await request.form()
    raw = field_text(form.get("addresses"))[:2000]
    segment = field_text(form.get("segment"))
    subscriber = field_text(form.get("subscriber")).strip()[:320]
    values: dict[str, Any] = {"addresses": raw, "segment": segment, "subscriber": subscriber}
    if not genuine(request, form):
        return _test_form(request, 400, error=catalogue(request).gettext(EXPIRED_FORM), **values)
    addresses = []
    for part in re.split(r"[\s,;]+", raw):
        if not part:
            continue
        try:
            addresses.append(checked_address(part, smtputf8=settings.smtp.smtputf8))
        except AddressError:
            return _test_form(
                request,
                400,
                **values,
                error=catalogue(request).gettext("Not an email address: %(address)s")
                % {"address": part},
            )
    if not addresses or len(addresses) > 10:
        return _test_form(
            request,
            400,
            **values,
            error=catalogue(request).gettext("Please enter between one and ten addresses."),
        )
    transport = SmtpPool(settings.smtp)
    try:
        results = await jobs.test_send(
            settings,
            store_of(request),
            newsletter,
            request.path_params["week"],
            addresses,
            transport,
            segment=None if subscriber else segment,
            subscriber=subscriber or None,
        )
    except DigestError as exc:
        return _test_form(request, 502, error=error_text(request, exc), **values)
    finally:
        await transport.close()
    return _test_form(request, results=results, **values)
