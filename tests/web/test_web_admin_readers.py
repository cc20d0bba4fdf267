"""Readers' requests in /admin, through the ASGI app in-process, with an editor and an admin.

An editor without the admin role is refused (403) on every page and form of the readers'
data; an admin finds a reader by address, sees what is held, downloads the export (the
document `digest subscribers export` prints, run as a process), unsubscribes them and
erases them, and the audit log records each of these with who and when, never the address.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from digest.config import Settings
from digest.core.models import Subscriber
from digest.delivery.transport import SmtpPool
from digest.issue.editors import add_editor
from digest.ops import jobs
from digest.store import Store
from digest.store import schema as t
from digest.store.privacy import Consent
from digest.web.app import create_app
from tests.conftest import TEST_SECRET_KEY
from tests.smtp_server import RecordingServer

ROOT = Path(__file__).resolve().parents[2]
NL = "wochenueberblick"
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, tzinfo=UTC)
PASSWORD = "correct horse battery"
READER = "Leserin.Eins@Example.org"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def client(settings: Settings, store: Store) -> httpx.AsyncClient:
    app = create_app(settings, store, login_delay=0)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.public_url)


def csrf_of(page: httpx.Response, index: int = -1) -> str:
    return CSRF.findall(page.text)[index]


async def log_in(http: httpx.AsyncClient, name: str) -> None:
    form = await http.get("/admin/login")
    done = await http.post(
        "/admin/login",
        data={"csrf": csrf_of(form, 0), "name": name, "password": PASSWORD, "next": "/admin/"},
    )
    assert done.status_code == 303, done.text


@pytest.fixture
async def readers(demo_settings: Settings, store: Store) -> AsyncIterator[tuple[Store, int]]:
    """Two editors (erika an editor, anna an admin) and three readers who got an issue
    from a real SMTP server; the first reader signed up with a confirmed consent."""
    await jobs.collect(demo_settings, store, NL, now=NOW)
    add_editor(store, "erika", "erika@example.org", PASSWORD)
    add_editor(store, "anna", "anna@example.org", PASSWORD, role="admin")
    store.save_subscriber(Subscriber(READER, "Leserin Eins"), ["allgemein"])
    for n, lists in enumerate((["bayern"], ["allgemein"]), start=2):
        store.save_subscriber(Subscriber(f"leser{n}@example.org", f"Leser {n}"), lists)
    found = store.subscriber_by_email(READER)
    assert found is not None and found.id is not None
    consent = Consent(
        "Ja, ich möchte den Wochenüberblick erhalten.",
        newsletter=NL,
        created_at=NOW,
        ip="192.0.2.7",
        page_url="https://example.org/anmelden",
        confirmed_at=NOW,
        confirm_ip="192.0.2.8",
    )
    store.record_consent(found.id, consent)
    async with RecordingServer() as smtp:
        settings = replace(demo_settings, smtp=smtp.settings())
        pool = SmtpPool(settings.smtp)
        try:
            report = await jobs.send(settings, store, settings.newsletter(NL), WEEK, pool, now=NOW)
        finally:
            await pool.close()
    assert report is not None and report.sent == 3
    yield store, found.id


def audit_rows(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [
            dict(r._mapping) for r in conn.execute(select(t.audit_log).order_by(t.audit_log.c.id))
        ]


def assert_no_address_in_the_log(store: Store) -> None:
    for row in audit_rows(store):
        assert not any("@" in str(value) for value in row.values()), row


async def cli_export(store_url: str, address: str) -> tuple[int, str, str]:
    """``digest subscribers export ADDRESS`` as the operator runs it, a process of its own."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    environment |= {"DIGEST_STORE_URL": store_url, "DIGEST_SECRET_KEY": TEST_SECRET_KEY}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "digest.cli", "--config", str(ROOT / "config.toml"),
        "subscribers", "export", address,
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# --- the role ------------------------------------------------------------------------------


async def test_an_editor_gets_403_on_every_reader_page_and_action(
    demo_settings: Settings, readers: tuple[Store, int]
) -> None:
    store, sid = readers
    reader = f"/admin/readers/{sid}"
    async with client(demo_settings, store) as http:
        await log_in(http, "erika")
        overview = await http.get("/admin/")
        assert overview.status_code == 200
        assert "/admin/readers" not in overview.text and "/admin/audit" not in overview.text
        token = csrf_of(overview)  # a genuine token, if of another form: the role decides
        for path in ("/admin/readers", reader, f"{reader}/erase", "/admin/audit"):
            page = await http.get(path)
            assert page.status_code == 403, path
            assert "Nur Administratoren" in page.text and "Leserin" not in page.text, path
        for path, data in (
            ("/admin/readers", {"email": READER}),
            (f"{reader}/export", {}),
            (f"{reader}/unsubscribe", {"newsletter": NL}),
            (f"{reader}/erase", {}),
        ):
            refused = await http.post(path, data={"csrf": token, **data})
            assert refused.status_code == 403, path
            assert "Leserin" not in refused.text and "{" not in refused.text, path
    assert store.subscriber_by_email(READER) is not None
    assert not store.unsubscribed(sid, NL) and not store.is_suppressed(READER, NL)
    assert audit_rows(store) == []


async def test_without_a_session_nothing_answers(
    demo_settings: Settings, readers: tuple[Store, int]
) -> None:
    store, sid = readers
    async with client(demo_settings, store) as http:
        for path in ("/admin/readers", f"/admin/readers/{sid}", "/admin/audit"):
            page = await http.get(path)
            assert page.status_code == 303 and "/admin/login" in page.headers["location"]
        for path in ("/admin/readers", f"/admin/readers/{sid}/erase"):
            assert (await http.post(path, data={"email": READER})).status_code == 403
    assert store.subscriber_by_email(READER) is not None and audit_rows(store) == []


async def test_a_role_given_holds_from_the_next_page(
    demo_settings: Settings, readers: tuple[Store, int]
) -> None:
    store, _sid = readers
    async with client(demo_settings, store) as http:
        await log_in(http, "erika")
        assert (await http.get("/admin/readers")).status_code == 403
        store.set_editor_role("erika", "admin")
        page = await http.get("/admin/readers")
        assert page.status_code == 200 and "Leserdaten" in page.text
        store.set_editor_role("erika", "editor")
        assert (await http.get("/admin/readers")).status_code == 403


# --- what an admin does --------------------------------------------------------------------


async def test_an_admin_finds_a_reader_by_address_and_each_look_is_recorded(
    demo_settings: Settings, readers: tuple[Store, int]
) -> None:
    store, sid = readers
    async with client(demo_settings, store) as http:
        await log_in(http, "anna")
        overview = await http.get("/admin/")
        assert 'href="/admin/readers"' in overview.text and 'href="/admin/audit"' in overview.text
        form = await http.get("/admin/readers")
        assert form.status_code == 200
        found = await http.post(
            "/admin/readers", data={"csrf": csrf_of(form), "email": " LESERIN.EINS@example.ORG "}
        )
        assert found.status_code == 303 and found.headers["location"] == f"/admin/readers/{sid}"
        assert (await http.head(found.headers["location"])).status_code == 200  # no view
        page = await http.get(found.headers["location"])
        assert page.status_code == 200
        text = page.text
        for held in (
            READER,
            "Leserin Eins",
            "allgemein",
            "Ja, ich möchte den Wochenüberblick erhalten.",
            "192.0.2.8",
            "https://example.org/anmelden",
            "KW 5/2025",
            "verschickt",
        ):
            assert held in text, held
        # A part of an address is no search: only the whole address, in any case.
        partial = await http.post(
            "/admin/readers", data={"csrf": csrf_of(form), "email": "leserin.eins"}
        )
        assert partial.status_code == 200 and "Kein Abonnent hat diese Adresse" in partial.text
        nobody = await http.post(
            "/admin/readers", data={"csrf": csrf_of(form), "email": "niemand@example.org"}
        )
        assert "Über diese Adresse ist nichts gespeichert." in nobody.text
        audit = await http.get("/admin/audit")
    entries = [(r["editor"], r["action"], r["subscriber_id"]) for r in audit_rows(store)]
    assert entries == [
        ("anna", "search", sid),
        ("anna", "view", sid),
        ("anna", "search", None),
        ("anna", "search", None),
    ]
    assert audit_rows(store)[0]["address_hash"] == store.address_hash(READER)
    assert_no_address_in_the_log(store)
    assert audit.status_code == 200
    assert "anna · hat die Daten angesehen" in audit.text
    assert audit.text.count("hat nach der Adresse gesucht") == 3
    assert READER.lower() not in audit.text.lower()


async def test_a_search_needs_the_form_s_token(
    demo_settings: Settings, readers: tuple[Store, int]
) -> None:
    store, sid = readers
    async with client(demo_settings, store) as http:
        await log_in(http, "anna")
        page = await http.get(f"/admin/readers/{sid}")
        # A token of another form (the export's) is refused here, and vice versa.
        refused = await http.post("/admin/readers", data={"csrf": csrf_of(page), "email": READER})
        assert refused.status_code == 400 and "abgelaufen" in refused.text
        erase = await http.post(f"/admin/readers/{sid}/erase", data={"csrf": csrf_of(page)})
        assert erase.status_code == 400
    assert store.subscriber_by_email(READER) is not None
    assert [r["action"] for r in audit_rows(store)] == ["view"]


async def test_the_export_is_the_document_of_the_cli(
    demo_settings: Settings, readers: tuple[Store, int], store_url: str
) -> None:
    store, sid = readers
    async with client(demo_settings, store) as http:
        await log_in(http, "anna")
        page = await http.get(f"/admin/readers/{sid}")
        download = await http.post(f"/admin/readers/{sid}/export", data={"csrf": csrf_of(page, 1)})
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/json; charset=utf-8"
    assert download.headers["content-disposition"] == f'attachment; filename="abonnent-{sid}.json"'
    code, out, err = await cli_export(store_url, READER)
    assert code == 0, err
    assert download.text == out
    document = json.loads(out)
    assert document["subscriber"]["email"] == READER
    assert [d["state"] for d in document["deliveries"]] == ["sent"]
    # The export lists when and what was done with the data, itself among it, not by whom.
    assert [(e["action"], e["newsletter"]) for e in document["audit"]] == [
        ("view", None),
        ("export", None),
    ]
    assert "anna" not in out
    assert [r["action"] for r in audit_rows(store)] == ["view", "export"]


async def test_an_admin_unsubscribes_a_reader_from_one_newsletter(
    demo_settings: Settings, readers: tuple[Store, int]
) -> None:
    store, sid = readers
    async with client(demo_settings, store) as http:
        await log_in(http, "anna")
        page = await http.get(f"/admin/readers/{sid}")
        assert "Abmelden" in page.text
        unknown = await http.post(
            f"/admin/readers/{sid}/unsubscribe", data={"csrf": csrf_of(page), "newsletter": "x"}
        )
        assert unknown.status_code == 400
        done = await http.post(
            f"/admin/readers/{sid}/unsubscribe", data={"csrf": csrf_of(page), "newsletter": NL}
        )
        assert done.status_code == 303
        after = await http.get(done.headers["location"])
    assert "Abgemeldet von Kommune Digital – Wochenüberblick." in after.text
    assert "abgemeldet am" in after.text
    assert store.unsubscribed(sid, NL) and store.is_suppressed(READER, NL)
    assert not store.is_suppressed(READER)  # from this newsletter only
    assert [(r["action"], r["newsletter"]) for r in audit_rows(store)] == [
        ("view", None),
        ("unsubscribe", NL),
        ("view", None),
    ]


async def test_erase_asks_again_then_erases_and_the_log_keeps_no_address(
    demo_settings: Settings, readers: tuple[Store, int], store_url: str
) -> None:
    store, sid = readers
    async with client(demo_settings, store) as http:
        await log_in(http, "anna")
        asked = await http.get(f"/admin/readers/{sid}/erase")
        assert asked.status_code == 200
        assert READER in asked.text and "Endgültig löschen" in asked.text
        assert store.subscriber_by_email(READER) is not None  # asking changes nothing
        done = await http.post(f"/admin/readers/{sid}/erase", data={"csrf": csrf_of(asked)})
        assert done.status_code == 303 and done.headers["location"] == "/admin/readers?erased"
        told = await http.get(done.headers["location"])
        assert "Die Daten sind gelöscht." in told.text
        assert (await http.get(f"/admin/readers/{sid}")).status_code == 404
        form = await http.get("/admin/readers")
        again = await http.post("/admin/readers", data={"csrf": csrf_of(form), "email": READER})
    assert "Kein Abonnent hat diese Adresse" in again.text and "gelöscht" in again.text
    assert store.subscriber_by_email(READER) is None
    assert store.is_suppressed(READER)  # the suppression is kept
    held = store.personal_data(READER)
    assert held is not None and held["subscriber"] is None and held["consents"] == []
    assert [s["reason"] for s in held["suppressions"]] == ["erased"]
    assert READER not in str(store.subscriber_rows())
    actions = [(r["action"], r["subscriber_id"]) for r in audit_rows(store)]
    assert actions == [("view", sid), ("erase", sid), ("search", None)]
    assert_no_address_in_the_log(store)
    # What is still held about the address: its suppression, and what was done with it.
    code, out, err = await cli_export(store_url, READER)
    assert code == 0, err
    document = json.loads(out)
    assert [e["action"] for e in document["audit"]] == ["view", "erase", "search"]
    assert document["subscriber"] is None
