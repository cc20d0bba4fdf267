"""Readers' requests in the editors' area: find a reader, see, export, unsubscribe, erase.

Only editors with the admin role get here (:func:`~digest.web.admin.session.for_admins`);
every other editor is answered 403 on every page and form. Each search, view, export,
unsubscribe and erasure is written to the audit log (:mod:`digest.audience.requests`),
shown at ``/admin/audit``. An address travels only in a form's body, never in a URL (which
ends up in logs and histories): a reader's pages are named by the subscriber id. Every
change is a POST with the form's CSRF token; an erasure asks again on a page of its own.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from digest.audience.requests import (
    erase_reader,
    export_document,
    export_json,
    record,
    unsubscribe_reader,
)
from digest.config import Settings
from digest.core.i18n import N_
from digest.core.models import Subscriber
from digest.web.admin.reader_words import ReaderWords
from digest.web.admin.session import (
    EXPIRED_FORM,
    PREFIX,
    admin_page,
    catalogue,
    for_admins,
    genuine,
    refused,
    session_editor,
)
from digest.web.forms import field_text
from digest.web.pages import not_found, settings_of, store_of
from digest.web.routing import page

__all__ = ["AUDIT", "AUDIT_PAGE", "READERS", "SHOWN_DELIVERIES", "reader_routes"]

READERS = f"{PREFIX}/readers"
AUDIT = f"{PREFIX}/audit"
#: Entries of the audit log on one page.
AUDIT_PAGE = 50
#: Deliveries listed on a reader's page, the newest first (the export has every one).
SHOWN_DELIVERIES = 50
#: Audit log entries listed on a reader's page, the newest first.
SHOWN_ENTRIES = 20
#: Ids beyond this are no subscriber's (and more than the databases' integers hold).
_LARGEST_ID = 2**31 - 1

_ERASED = N_("The data has been erased. The address stays on the suppression list.")
_NO_ADDRESS = N_("Please enter the reader's email address.")
_NO_NEWSLETTER = N_("There is no such newsletter.")


def _words(request: Request) -> ReaderWords:
    settings = settings_of(request)
    return ReaderWords(settings.locale, ZoneInfo(settings.timezone))


def _search_page(request: Request, status: int = 200, **context: Any) -> Response:
    context.setdefault("address", "")
    return admin_page(
        request,
        "admin/readers_search.html",
        status,
        title=catalogue(request).gettext("Readers' data"),
        rw=_words(request),
        **context,
    )


def show_search(request: Request) -> Response:
    """``GET /admin/readers``: the search form."""
    erased = "erased" in request.query_params
    return _search_page(request, notice=catalogue(request).gettext(_ERASED) if erased else "")


async def search(request: Request) -> Response:
    """``POST /admin/readers``: find the reader with this address (exact, any case).

    Found: on to their page. Not found: what is held about the address all the same
    (sign-ups waiting for their confirmation, the suppression list). Recorded either way.
    """
    form = await request.form()
    address = field_text(form.get("email")).strip()[:320]
    gettext = catalogue(request).gettext
    if not genuine(request, form):
        return await run_in_threadpool(
            _search_page, request, 400, address=address, error=gettext(EXPIRED_FORM)
        )
    if not address:
        return await run_in_threadpool(_search_page, request, 400, error=gettext(_NO_ADDRESS))
    editor = session_editor(request)

    def find() -> Response:
        store = store_of(request)
        found = store.subscriber_by_email(address)
        record(store, editor.name, "search", address, found.id if found else None)
        if found is not None:
            return RedirectResponse(f"{READERS}/{found.id}", 303)
        return _search_page(
            request, address=address, searched=True, held=store.personal_data(address)
        )

    return await run_in_threadpool(find)


def _subscriber(request: Request) -> Subscriber | None:
    """The subscriber the path names; None for an unknown or erased one."""
    sid: int = request.path_params["id"]
    if sid > _LARGEST_ID:
        return None
    found = store_of(request).subscriber_by_id(sid)
    return found[0] if found else None


def _newsletters(settings: Settings, document: dict[str, Any]) -> list[dict[str, Any]]:
    """The newsletters whose lists the reader is on, or that they left."""
    lists = {m["list"] for m in document["memberships"]}
    left = {u["newsletter"]: u["at"] for u in document["unsubscribed"]}
    shown = []
    for newsletter in settings.newsletters:
        theirs = sorted(lists & {name for s in newsletter.segments for name in s.lists})
        if theirs or newsletter.id in left:
            shown.append(
                {"newsletter": newsletter, "lists": theirs, "left": left.get(newsletter.id)}
            )
    return shown


def _reader_page(request: Request, subscriber: Subscriber) -> Response:
    store, settings = store_of(request), settings_of(request)
    document = store.personal_data(subscriber.email)
    assert document is not None  # a subscriber is held
    names = {n.id: n.name for n in settings.newsletters}
    left = request.query_params.get("unsubscribed")
    notice = ""
    if left in names:
        notice = catalogue(request).gettext("Unsubscribed from %(newsletter)s.") % {
            "newsletter": names[left]
        }
    deliveries = list(reversed(document["deliveries"]))
    return admin_page(
        request,
        "admin/readers_reader.html",
        title=catalogue(request).gettext("Subscriber no. %(id)s") % {"id": subscriber.id},
        rw=_words(request),
        sid=subscriber.id,
        reader=document["subscriber"],
        document=document,
        names=names,
        newsletters=_newsletters(settings, document),
        deliveries=deliveries[:SHOWN_DELIVERIES],
        more_deliveries=max(0, len(deliveries) - SHOWN_DELIVERIES),
        entries=list(reversed(store.audit_of(subscriber.email)))[:SHOWN_ENTRIES],
        notice=notice,
    )


def _viewed(request: Request, subscriber: Subscriber) -> None:
    """Record a page that shows the reader's data; a HEAD request shows nothing."""
    if request.method == "GET":
        record(
            store_of(request), session_editor(request).name, "view", subscriber.email, subscriber.id
        )


def show_reader(request: Request) -> Response:
    """``GET /admin/readers/{id}``: everything held about the reader (recorded as a view)."""
    subscriber = _subscriber(request)
    if subscriber is None or subscriber.id is None:
        return not_found(request)
    if subscriber.id != request.path_params["id"]:  # a merged spelling: its survivor
        return RedirectResponse(f"{READERS}/{subscriber.id}", 303)
    _viewed(request, subscriber)
    return _reader_page(request, subscriber)


def to_reader(request: Request) -> Response:
    """``GET`` of an action's path: nothing to show; on to the reader's page."""
    return RedirectResponse(f"{READERS}/{request.path_params['id']}", 303)


async def export(request: Request) -> Response:
    """``POST /admin/readers/{id}/export``: the JSON of ``digest subscribers export``."""
    form = await request.form()
    if not genuine(request, form):
        return refused(request, 400, EXPIRED_FORM)
    editor = session_editor(request)

    def download() -> Response:
        subscriber = _subscriber(request)
        if subscriber is None:
            return not_found(request)
        store = store_of(request)
        # Recorded first: the export lists itself among what was done with the data.
        record(store, editor.name, "export", subscriber.email, subscriber.id)
        document = export_document(store, subscriber.email)
        assert document is not None  # a subscriber is held
        # TRANSLATORS: the name of the downloaded file with a subscriber's data.
        filename = catalogue(request).gettext("subscriber-%(id)s.json") % {"id": subscriber.id}
        return Response(
            export_json(document).encode("utf-8"),
            media_type="application/json; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{filename}"'},
        )

    return await run_in_threadpool(download)


async def unsubscribe(request: Request) -> Response:
    """``POST /admin/readers/{id}/unsubscribe``: withdraw the reader from one newsletter."""
    form = await request.form()
    if not genuine(request, form):
        return refused(request, 400, EXPIRED_FORM)
    newsletter = field_text(form.get("newsletter"))
    if newsletter not in {n.id for n in settings_of(request).newsletters}:
        return refused(request, 400, _NO_NEWSLETTER)
    editor = session_editor(request)

    def withdraw() -> Response:
        subscriber = _subscriber(request)
        if subscriber is None or subscriber.id is None:
            return not_found(request)
        unsubscribe_reader(
            store_of(request), editor.name, subscriber.id, subscriber.email, newsletter
        )
        return RedirectResponse(f"{READERS}/{subscriber.id}?unsubscribed={newsletter}", 303)

    return await run_in_threadpool(withdraw)


def ask_to_erase(request: Request) -> Response:
    """``GET /admin/readers/{id}/erase``: asks again, naming the address (a view)."""
    subscriber = _subscriber(request)
    if subscriber is None:
        return not_found(request)
    _viewed(request, subscriber)
    return admin_page(
        request,
        "admin/readers_erase.html",
        title=catalogue(request).gettext("Erase subscriber no. %(id)s?") % {"id": subscriber.id},
        sid=subscriber.id,
        address=subscriber.email,
    )


async def erase(request: Request) -> Response:
    """``POST /admin/readers/{id}/erase``: erase as ``digest subscribers erase`` does."""
    form = await request.form()
    if not genuine(request, form):
        return refused(request, 400, EXPIRED_FORM)
    editor = session_editor(request)

    def forget() -> Response:
        subscriber = _subscriber(request)
        if subscriber is None:
            return not_found(request)
        erase_reader(store_of(request), editor.name, subscriber.email, subscriber.id)
        return RedirectResponse(f"{READERS}?erased", 303)

    return await run_in_threadpool(forget)


def show_audit(request: Request) -> Response:
    """``GET /admin/audit``: who did what with readers' data, the newest first."""
    before = field_text(request.query_params.get("before"))
    older_than = int(before) if before.isdigit() and int(before) <= _LARGEST_ID else None
    entries = store_of(request).audit_log(before=older_than, limit=AUDIT_PAGE)
    return admin_page(
        request,
        "admin/readers_audit.html",
        title=catalogue(request).gettext("Audit log"),
        rw=_words(request),
        names={n.id: n.name for n in settings_of(request).newsletters},
        entries=entries,
        older=entries[-1].id if len(entries) == AUDIT_PAGE else None,
    )


def reader_routes() -> list[Route]:
    """The routes of the readers' pages, each for admins only."""
    reader = f"{READERS}/{{id:int}}"
    return [
        page(READERS, show=for_admins(show_search), change=for_admins(search), name="readers"),
        page(reader, show=for_admins(show_reader), name="reader"),
        page(
            f"{reader}/export",
            show=for_admins(to_reader),
            change=for_admins(export),
            name="reader_export",
        ),
        page(
            f"{reader}/unsubscribe",
            show=for_admins(to_reader),
            change=for_admins(unsubscribe),
            name="reader_unsubscribe",
        ),
        page(
            f"{reader}/erase",
            show=for_admins(ask_to_erase),
            change=for_admins(erase),
            name="reader_erase",
        ),
        page(AUDIT, show=for_admins(show_audit), name="audit"),
    ]
