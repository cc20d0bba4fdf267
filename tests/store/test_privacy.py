"""Suppression list, consent proofs, export and erasure in the store (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from digest.audience.subscribers import export_csv, import_csv
from digest.config import Settings
from digest.core.addresses import address_hash
from digest.core.errors import StoreError
from digest.core.models import DeliveryState, Subscriber
from digest.store import Store
from digest.store import schema as t
from digest.store.privacy import KEY_CHECK_SCOPE, Consent, is_hard_bounce
from digest.web.app import create_app
from tests.audience.test_signup import _client, sign_up
from tests.cli.test_cli import digest
from tests.conftest import ROOT, TEST_SECRET_KEY

T0 = datetime(2025, 1, 28, 9, 30, tzinfo=UTC)
CATEGORIES = {"politik", "verwaltung"}
REGIONS = ["Bayern", "Hessen"]
CONSENT = "Formular auf example.org, Double-Opt-in, Text v3"


def _import(store: Store, path: Path, text: str, list_name: str = "allgemein", **kw: object):  # type: ignore[no-untyped-def]
    path.write_text(text, encoding="utf-8")
    return import_csv(
        store, path, list_name, categories=CATEGORIES, regions=REGIONS, consent=CONSENT, **kw
    )


def _ledger_row(store: Store, sid: int, email: str, key: str = "2025-W05") -> int:
    issue = store.create_issue("eins", key, T0, T0 + timedelta(days=7), "Betreff", [])
    store.plan_deliveries(issue.id, [(sid, email, ["alle"])])
    [row] = store.deliveries(issue.id)
    [claimed] = store.claim_deliveries(
        issue.id,
        after_id=0,
        limit=1,
        stale_before=T0,
        new_message_id=lambda: f"<{key}@example.org>",
    )
    assert claimed.id == row.id
    return row.id


def test_the_address_hash_is_keyed_and_matches_every_spelling() -> None:
    one = address_hash("Anna.Case@Example.com", "key-one-0123456789")
    assert one == address_hash(" anna.case@example.COM ", "key-one-0123456789")
    assert one != address_hash("anna.case@example.com", "key-two-0123456789")
    assert len(one) == 64 and "anna" not in one


def test_suppression_is_stored_by_hash_only_and_scoped(store: Store) -> None:
    sid = store.save_subscriber(Subscriber("Anna@example.org"), ["allgemein"])
    assert store.suppress("anna@EXAMPLE.org", "complaint", "eins") is True
    assert store.suppress("anna@example.org", "complaint", "eins") is False  # idempotent
    assert store.is_suppressed("Anna@example.org", "eins")
    assert not store.is_suppressed("Anna@example.org", "zwei")
    assert not store.is_suppressed("Anna@example.org")
    assert [s.id for s in store.active_subscribers(newsletter="zwei")] == [sid]
    assert store.active_subscribers(newsletter="eins") == []
    with store.engine.connect() as conn:
        stored = conn.execute(
            select(t.suppressions).where(t.suppressions.c.scope != KEY_CHECK_SCOPE)
        ).all()
    assert [(r.address_hash, r.scope, r.reason) for r in stored] == [
        (address_hash("anna@example.org", TEST_SECRET_KEY), "eins", "complaint")
    ]
    store.suppress("anna@example.org", "operator")
    assert store.is_suppressed("anna@example.org", "zwei")
    assert store.active_subscribers() == []
    assert store.subscriber_rows(status="suppressed")[0][0].id == sid


def test_a_store_without_key_refuses_to_ignore_the_list(store_url: str) -> None:
    keyed = Store.open(store_url, secret_key=TEST_SECRET_KEY)
    keyed.save_subscriber(Subscriber("a@example.org"), ["allgemein"])
    keyed.suppress("a@example.org", "operator", "eins")
    keyed.close()
    blind = Store.open(store_url)
    try:
        with pytest.raises(StoreError, match="without secret_key"):
            blind.active_subscribers(newsletter="eins")
    finally:
        blind.close()


def test_another_secret_key_is_refused_rather_than_mailing_the_suppressed(
    store_url: str,
) -> None:
    """Under a new key no stored hash would match: the unsubscribed would be mailed again."""
    first = Store.open(store_url, secret_key=TEST_SECRET_KEY)
    first.save_subscriber(Subscriber("a@example.org"), ["allgemein"])
    first.suppress("a@example.org", "unsubscribed", "eins")
    first.close()
    with pytest.raises(StoreError, match="set the previous secret_key"):
        Store.open(store_url, secret_key="another-secret-key-0123456789")
    again = Store.open(store_url, secret_key=TEST_SECRET_KEY)
    try:
        assert again.active_subscribers(newsletter="eins") == []
        assert again.is_suppressed("a@example.org", "eins")
        assert not again.is_suppressed("b@example.org")
    finally:
        again.close()


def test_one_click_unsubscribe_writes_a_suppression_for_that_newsletter(store: Store) -> None:
    sid = store.save_subscriber(Subscriber("u@example.org"), ["allgemein"])
    store.unsubscribe(sid, "eins")
    assert store.is_suppressed("U@example.org", "eins")
    assert not store.is_suppressed("u@example.org", "zwei")
    assert store.suppressions_of("u@example.org")[0]["reason"] == "unsubscribed"


@pytest.mark.parametrize(
    ("code", "reply", "bounce"),
    [
        (550, "5.1.1 <b@example.org>: Recipient address rejected: User unknown", True),
        (550, "550 5.1.10 Recipient not found", True),
        (553, "5.1.3 Bad destination mailbox address syntax", True),
        (554, "5.7.1 Relay access denied", False),
        (550, "User unknown", True),  # no enhanced code: the text says it
        (550, "550 <b@example.org>: No such user here", True),
        (550, "5.7.1 User unknown in our spam list", False),  # the enhanced code decides
        (550, "Message rejected as spam", False),
        (554, "User unknown", False),
        (450, "4.1.1 try later", False),
        (450, "User unknown", False),
    ],
)
def test_which_refusals_are_hard_bounces(code: int, reply: str, bounce: bool) -> None:
    assert is_hard_bounce(code, reply) is bounce


def test_a_hard_bounce_suppresses_the_address_for_every_newsletter(store: Store) -> None:
    sid = store.save_subscriber(Subscriber("B@example.org"), ["allgemein"])
    other = store.save_subscriber(Subscriber("c@example.org"), ["allgemein"])
    row = _ledger_row(store, sid, "B@example.org")
    store.record_delivery(
        row, DeliveryState.FAILED, code=550, reply="5.1.1 <B@example.org>: User unknown"
    )
    assert store.is_suppressed("b@example.org")
    assert [s.id for s in store.active_subscribers(newsletter="zwei")] == [other]
    assert store.status_counts() == {"active": 1, "bounced": 1}
    # a policy refusal is the sender's problem
    row = _ledger_row(store, other, "c@example.org", "2025-W06")
    store.record_delivery(row, DeliveryState.FAILED, code=554, reply="5.7.1 Relay access denied")
    assert not store.is_suppressed("c@example.org")


def test_import_reports_suppressed_rows_and_never_reactivates(store: Store, tmp_path: Path) -> None:
    sid = store.save_subscriber(Subscriber("bounce@example.org", "Alt"), ["allgemein"])
    store.suppress("bounce@example.org", "hard_bounce")
    store.suppress("gone@example.org", "erased")
    store.suppress("only-eins@example.org", "unsubscribed", "eins")
    report = _import(
        store,
        tmp_path / "liste.csv",
        "email,name\n"
        "new@example.org,Neu\n"
        "BOUNCE@example.org,Neuer Name\n"
        "kaputt,Falsch\n"
        "gone@example.org,Wieder da\n"
        "only-eins@example.org,Nur eins\n",
    )
    assert (report.imported, report.updated, report.unchanged) == (2, 0, 0)
    assert report.suppressed == [3, 5]
    assert [e.line for e in report.errors] == [4]
    assert store.subscriber_by_email("gone@example.org") is None
    [(bounced, status)] = [(s, st) for s, st in store.subscriber_rows() if s.id == sid]
    assert (bounced.name, status) == ("Alt", "bounced")
    # a per-newsletter withdrawal is honoured at send time, the import may add the row
    assert store.active_subscribers(newsletter="eins")[0].email == "new@example.org"


def test_import_counts_unchanged_and_updated_and_keeps_consent(
    store: Store, tmp_path: Path
) -> None:
    text = "email,name\na@example.org,A\nb@example.org,B\n"
    assert _import(store, tmp_path / "l.csv", text).imported == 2
    again = _import(store, tmp_path / "l.csv", "email,name\na@example.org,A\nb@example.org,Bee\n")
    assert (again.imported, again.updated, again.unchanged) == (0, 1, 1)
    other = _import(store, tmp_path / "l.csv", text, list_name="bayern")
    assert (other.imported, other.updated, other.unchanged) == (0, 2, 0)
    document = store.personal_data("a@example.org")
    assert document is not None
    assert [(c["source"], c["list"], c["statement"]) for c in document["consents"]] == [
        ("import", "allgemein", CONSENT),
        ("import", "bayern", CONSENT),
    ]


def test_a_dry_run_reports_the_same_and_writes_nothing(store: Store, tmp_path: Path) -> None:
    store.save_subscriber(Subscriber("a@example.org", "A"), ["allgemein"])
    store.suppress("s@example.org", "complaint")
    text = "email,name\na@example.org,A\nb@example.org,B\ns@example.org,S\nx,Y\n"
    dry = _import(store, tmp_path / "l.csv", text, dry_run=True)
    assert store.subscriber_by_email("b@example.org") is None
    assert store.status_counts() == {"active": 1}
    real = _import(store, tmp_path / "l.csv", text)
    assert (dry.imported, dry.updated, dry.unchanged, dry.suppressed) == (1, 0, 1, [4])
    assert (dry.imported, dry.updated, dry.unchanged, dry.suppressed) == (
        real.imported,
        real.updated,
        real.unchanged,
        real.suppressed,
    )
    assert [e.line for e in dry.errors] == [e.line for e in real.errors] == [5]


def test_the_list_export_reimports_unchanged(store: Store, tmp_path: Path) -> None:
    text = (
        "email,name,categories,regions,locale\n"
        'a@example.org,"Böhm, Jürgen",politik|verwaltung,Bayern,de_DE\n'
        "b@example.org,B,,,\n"
    )
    _import(store, tmp_path / "l.csv", text)
    store.suppress("b@example.org", "hard_bounce")
    exported = export_csv(store, "allgemein")
    assert exported.splitlines()[0] == "email,name,categories,regions,locale"
    assert "b@example.org" not in exported
    again = _import(store, tmp_path / "export.csv", exported)
    assert (again.imported, again.updated, again.unchanged, again.errors) == (0, 0, 1, [])


def test_lift_needs_a_confirmed_consent_of_the_address(store: Store) -> None:
    sid = store.save_subscriber(Subscriber("l@example.org"), ["allgemein"])
    other = store.save_subscriber(Subscriber("o@example.org"), ["allgemein"])
    store.unsubscribe(sid, "eins")
    store.suppress("l@example.org", "complaint")
    pending = store.record_consent(sid, Consent("Ja, bitte", newsletter="eins", ip="192.0.2.1"))
    foreign = store.record_consent(
        other, Consent("Ja", newsletter="eins", confirmed_at=T0, confirm_ip="192.0.2.9")
    )
    for consent in (pending, foreign):
        with pytest.raises(StoreError, match="confirmed double opt-in"):
            store.lift("l@example.org", consent, "eins")
    assert store.is_suppressed("l@example.org", "eins")
    store.confirm_consent(pending, ip="192.0.2.2", now=T0)
    assert store.lift("L@example.org", pending, "eins") is True
    assert not store.is_suppressed("l@example.org", "eins")
    assert [s.id for s in store.active_subscribers(newsletter="eins")] == [sid, other]


def test_the_export_holds_everything_about_the_address(store: Store) -> None:
    sid = store.save_subscriber(
        Subscriber("Eva@example.org", "Eva", categories=frozenset({"politik"})), ["allgemein"]
    )
    store.record_consent(
        sid,
        Consent(
            "Ich möchte den Wochenüberblick.", newsletter="eins", text_version="v3",
            created_at=T0, ip="192.0.2.1", user_agent="Firefox", page_url="https://x/anmelden",
            confirmed_at=T0 + timedelta(minutes=5), confirm_ip="192.0.2.1",
        ),
    )  # fmt: skip
    row = _ledger_row(store, sid, "Eva@example.org")
    store.record_delivery(row, DeliveryState.SENT, code=250, reply="2.0.0 Ok: queued", now=T0)
    store.unsubscribe(sid, "eins", now=T0)
    document = store.personal_data("eva@EXAMPLE.org")
    assert document is not None
    assert document["subscriber"]["email"] == "Eva@example.org"
    assert document["subscriber"]["categories"] == ["politik"]
    assert [m["list"] for m in document["memberships"]] == ["allgemein"]
    assert document["unsubscribed"] == [{"newsletter": "eins", "at": T0.isoformat()}]
    [consent] = document["consents"]
    assert consent["text_version"] == "v3" and consent["confirm_ip"] == "192.0.2.1"
    [delivery] = document["deliveries"]
    assert (delivery["issue"], delivery["state"], delivery["smtp_reply"]) == (
        "2025-W05",
        "sent",
        "2.0.0 Ok: queued",
    )
    assert delivery["at"] == T0.isoformat()
    assert document["suppressions"] == [
        {"scope": "eins", "reason": "unsubscribed", "created_at": T0.isoformat()}
    ]
    assert store.personal_data("nobody@example.org") is None


def test_erase_deletes_personal_data_keeps_counts_and_suppresses(
    store: Store, tmp_path: Path
) -> None:
    sid = store.save_subscriber(Subscriber("Erika@example.org", "Erika"), ["allgemein"])
    store.record_consent(sid, Consent("Ja", newsletter="eins", ip="192.0.2.1"))
    row = _ledger_row(store, sid, "Erika@example.org")
    store.record_delivery(row, DeliveryState.SENT, code=250, reply="Ok <Erika@example.org>")
    issue = store.get_issue("eins", "2025-W05")
    assert issue is not None
    issue_id = issue.id

    assert store.erase("erika@example.org") is True
    left = store.personal_data("erika@example.org")  # the keyed hash on the list, no more
    assert left is not None and left["subscriber"] is None
    assert [s["reason"] for s in left["suppressions"]] == ["erased"]
    assert left["consents"] == left["deliveries"] == left["signups"] == left["mail"] == []
    assert store.delivery_counts(issue_id) == {"sent": 1}
    [kept] = store.deliveries(issue_id)
    assert (kept.email, kept.smtp_reply, kept.message_id) == ("", None, None)
    with store.engine.connect() as conn:
        for table in (t.memberships, t.consents, t.unsubscriptions):
            assert conn.execute(select(table)).all() == []
        [tomb] = conn.execute(select(t.subscribers)).all()
    assert (tomb.id, tomb.name, tomb.email_key, tomb.status) == (sid, "", None, "erased")
    assert "erika" not in tomb.email.lower()
    assert store.suppressions_of("Erika@example.org")[0]["reason"] == "erased"
    # links already sent carry the id: they do nothing now
    assert store.unsubscribe(sid, "eins") is None
    # a later import does not add the address again
    report = _import(store, tmp_path / "l.csv", "email\nERIKA@example.org\n")
    assert (report.imported, report.suppressed) == (0, [2])
    # an address nobody has is suppressed all the same
    assert store.erase("niemand@example.org") is False
    assert store.is_suppressed("niemand@example.org")


def test_erasure_removes_pending_sign_ups_and_their_queued_mail(store: Store) -> None:
    from datetime import timedelta

    from digest.store.signups import NewSignup

    signup = NewSignup(
        "wochenueberblick", "Weg@Example.org", "W", frozenset(), frozenset(), "Ja.", "1"
    )
    kept = NewSignup(
        "wochenueberblick", "da@example.org", "D", frozenset(), frozenset(), "Ja.", "1"
    )
    gone = store.add_signup(signup, interval=timedelta(minutes=10))
    stays = store.add_signup(kept, interval=timedelta(minutes=10))
    assert gone is not None and stays is not None
    store.erase("weg@example.org")
    assert store.signup(gone) is None and store.signup(stays) is not None
    assert [row["signup_id"] for row in store.queued_mail()] == [stays]
    assert store.is_suppressed("weg@example.org")


async def test_export_and_erase_of_an_address_with_only_a_pending_sign_up(
    demo_settings: Settings, store: Store, store_url: str, tmp_path: Path
) -> None:
    """Name, IP, user agent and page of a sign-up are held before any confirmation."""
    async with _client(create_app(demo_settings, store), demo_settings, ip="192.0.2.44") as c:
        await sign_up(c, "Wartend@example.org", name="Wanda Wartend")
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    env = {"DIGEST_STORE_URL": store_url, "DIGEST_SECRET_KEY": TEST_SECRET_KEY}

    code, out, err = await digest(
        "subscribers", "export", "wartend@EXAMPLE.org", cwd=tmp_path, **env
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["subscriber"] is None
    [signup] = document["signups"]
    assert (signup["email"], signup["name"], signup["ip"]) == (
        "Wartend@example.org",
        "Wanda Wartend",
        "192.0.2.44",
    )
    assert signup["user_agent"] == "Testbrowser/1.0" and signup["page_url"]
    assert signup["confirmed_at"] is None
    [mail] = document["mail"]
    assert mail["kind"] == "confirm" and mail["sent_at"] is None

    code, out, err = await digest(
        "subscribers", "erase", "WARTEND@example.org", "--yes", cwd=tmp_path, **env
    )
    assert code == 0, err
    assert "erased WARTEND@example.org" in out
    assert store.queued_mail() == []
    with store.engine.connect() as conn:
        for table in (t.signups, t.confirm_limits):
            assert conn.execute(select(table)).all() == []
    left = store.personal_data("wartend@example.org")
    assert left is not None and left["signups"] == [] and left["mail"] == []
