"""Migrations on data: a store at an old revision, upgraded, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, select
from sqlalchemy.exc import IntegrityError

from digest.core.addresses import address_hash, email_key
from digest.core.errors import StoreError
from digest.core.models import DeliveryState, Subscriber
from digest.store import Store
from digest.store import schema as t
from digest.store.privacy import KEY_CHECK_SCOPE
from digest.store.store import MIGRATIONS
from tests.conftest import TEST_SECRET_KEY

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _upgrade(url: str, revision: str) -> None:
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def test_the_migration_keys_addresses_as_the_application_does() -> None:
    frozen = importlib.import_module("digest.store.migrations.versions.0003_subscriber_email_key")
    for address in [
        "Anna.Case@Example.COM",
        "a@XN--bcher-kva.de",
        "jürgen@BÜCHER.de",
        "kein-at-zeichen",
        " x@y.example ",
    ]:
        assert frozen.email_key(address) == email_key(address)
    assert email_key("a@xn--bcher-kva.de") == email_key("A@Bücher.de")


def test_0003_merges_subscribers_that_differ_in_case(store_url: str) -> None:
    _upgrade(store_url, "0002")
    engine = create_engine(store_url)
    with engine.begin() as conn:

        def subscriber(sid: int, email: str, name: str, updated: datetime) -> None:
            added = conn.execute(
                t.subscribers.insert().values(
                    email=email, name=name, locale=None, categories=[], regions=[],
                    status="active", created_at=T0, updated_at=updated,
                ).returning(t.subscribers.c.id)
            ).scalar_one()  # fmt: skip
            assert added == sid

        subscriber(1, "Anna.Case@example.com", "Anna", T0)
        subscriber(2, "other@example.org", "Other", T0)
        subscriber(3, "anna.case@example.com", "Anna Case", T0 + timedelta(days=1))
        subscriber(4, "ANNA.CASE@EXAMPLE.COM", "A. C.", T0 - timedelta(days=1))
        for sid, name in [(1, "allgemein"), (3, "allgemein"), (3, "bayern"), (4, "it")]:
            conn.execute(
                t.memberships.insert().values(subscriber_id=sid, list_name=name, created_at=T0)
            )
        # the copy that got the mail was unsubscribed: that must hold for the merged one
        conn.execute(
            t.unsubscriptions.insert().values(subscriber_id=3, newsletter="eins", created_at=T0)
        )
        for key in ("W01", "W02", "W03"):
            conn.execute(
                t.issues.insert().values(
                    newsletter="eins", key=key, window_start=T0, window_end=T0, subject="S",
                    status="sending", created_at=T0,
                )
            )  # fmt: skip
        issue = {key: id_ for key, id_ in conn.execute(select(t.issues.c.key, t.issues.c.id))}

        def delivery(issue_key: str, sid: int, state: str) -> None:
            conn.execute(
                t.deliveries.insert().values(
                    issue_id=issue[issue_key], subscriber_id=sid, email="x", segments="[]",
                    state=state, attempts=1, updated_at=T0,
                )
            )  # fmt: skip

        delivery("W01", 1, DeliveryState.PENDING)  # the other spelling got W01 already
        delivery("W01", 3, DeliveryState.SENT)
        delivery("W02", 1, DeliveryState.SENT)
        delivery("W02", 4, DeliveryState.PENDING)
        delivery("W03", 4, DeliveryState.FAILED)
    engine.dispose()

    store = Store.open(store_url, secret_key=TEST_SECRET_KEY)  # upgrades to the newest revision
    try:
        [anna, other] = store.active_subscribers()
        assert (anna.id, anna.email, anna.name) == (1, "Anna.Case@example.com", "Anna Case")
        assert anna.lists == {"allgemein", "bayern", "it"}
        assert other.id == 2
        assert store.unsubscribed(1, "eins")
        assert store.active_subscribers(newsletter="eins") == [other]
        # W01 is sent (either spelling got it), W02 too; W03's refusal moved over
        by_issue = {
            key: [(r.subscriber_id, r.state) for r in store.deliveries(issue[key])] for key in issue
        }
        assert by_issue == {
            "W01": [(1, DeliveryState.SENT)],
            "W02": [(1, DeliveryState.SENT)],
            "W03": [(1, DeliveryState.FAILED)],
        }
        # links already sent with a merged copy's id still reach the subscriber
        assert store.unsubscribe(4, "zwei") == "Anna.Case@example.com"
        assert store.unsubscribed(1, "zwei") and store.unsubscribed(4, "zwei")
        assert store.subscriber_by_email("anna.CASE@example.com") == anna
        # the merged ids are never given to anybody else
        sid = store.save_subscriber(Subscriber("neu@example.org"), ["allgemein"])
        assert sid not in (1, 2, 3, 4)
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(
                t.subscribers.insert().values(
                    email="Other@Example.org", email_key=email_key("Other@Example.org"),
                    name="", categories=[], regions=[], status="active",
                    created_at=T0, updated_at=T0,
                )
            )  # fmt: skip
    finally:
        store.close()


def test_0004_moves_unsubscriptions_onto_the_suppression_list(store_url: str) -> None:
    _upgrade(store_url, "0003")
    engine = create_engine(store_url)
    with engine.begin() as conn:
        for sid, address in [(1, "Anna@example.org"), (2, "ben@example.org")]:
            conn.execute(
                t.subscribers.insert().values(
                    id=sid, email=address, email_key=email_key(address), name="", locale=None,
                    categories=[], regions=[], status="active", created_at=T0, updated_at=T0,
                )
            )  # fmt: skip
        conn.execute(
            t.unsubscriptions.insert().values(subscriber_id=1, newsletter="eins", created_at=T0)
        )
    engine.dispose()

    with pytest.raises(StoreError, match="needs secret_key"):
        Store.open(store_url)  # the hash needs the key; nothing is half done
    store = Store.open(store_url, secret_key=TEST_SECRET_KEY)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(t.suppressions).where(t.suppressions.c.scope != KEY_CHECK_SCOPE)
            ).all()
        assert [(r.address_hash, r.scope, r.reason, r.created_at) for r in rows] == [
            (address_hash("anna@EXAMPLE.org", TEST_SECRET_KEY), "eins", "unsubscribed", T0)
        ]
        assert store.is_suppressed("anna@example.org", "eins")
        assert not store.is_suppressed("ben@example.org", "eins")
        assert [s.id for s in store.active_subscribers(newsletter="eins")] == [2]
    finally:
        store.close()


def test_0004_on_a_store_without_unsubscriptions_needs_no_key(store_url: str) -> None:
    Store.open(store_url).close()


def test_0005_goes_down_and_up_again_keeping_subscribers(store_url: str) -> None:
    store = Store.open(store_url, secret_key=TEST_SECRET_KEY)
    sid = store.save_subscriber(Subscriber("bleibt@example.org"), ["allgemein"])
    store.close()
    engine = create_engine(store_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    engine.dispose()
    store = Store.open(store_url, secret_key=TEST_SECRET_KEY)  # upgrades to 0005 again
    try:
        assert store.subscriber_by_id(sid) is not None
        assert store.queued_mail() == []
    finally:
        store.close()


def test_0008_adds_bounce_columns_to_existing_deliveries_and_goes_down_again(
    store_url: str,
) -> None:
    _upgrade(store_url, "0005")
    engine = create_engine(store_url)
    with engine.begin() as conn:
        sid = conn.execute(
            t.subscribers.insert()
            .values(
                email="alt@example.org",
                email_key="alt@example.org",
                name="",
                categories=[],
                regions=[],
                status="active",
                created_at=T0,
                updated_at=T0,
            )
            .returning(t.subscribers.c.id)
        ).scalar_one()
        issue = conn.execute(
            t.issues.insert()
            .values(
                newsletter="n",
                key="2025-W01",
                window_start=T0,
                window_end=T0,
                subject="s",
                status="sent",
                created_at=T0,
            )
            .returning(t.issues.c.id)
        ).scalar_one()
        conn.exec_driver_sql(
            "INSERT INTO deliveries (issue_id, subscriber_id, email, segments, state, "
            "message_id, attempts, updated_at) VALUES "
            f"({issue}, {sid}, 'alt@example.org', '[]', 'sent', '<m@x>', 1, '2025-01-01')"
        )
    engine.dispose()
    store = Store.open(store_url, secret_key=TEST_SECRET_KEY)  # upgrades to the head
    try:
        [(delivery, _)] = store.deliveries_with_message_ids(["<m@x>"])
        recorded = store.record_bounce(
            delivery, "hard", status="5.1.1", diagnostic="550 5.1.1 unknown", now=T0,
            soft_limit=3, soft_since=T0,
        )  # fmt: skip
        assert recorded is not None and recorded.suppressed == "hard_bounce"
    finally:
        store.close()
    engine = create_engine(store_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
    engine.dispose()
    store = Store.open(store_url, secret_key=TEST_SECRET_KEY)
    try:
        assert store.deliveries_with_message_ids(["<m@x>"]) == [(delivery, "alt@example.org")]
        assert store.is_suppressed("alt@example.org")
    finally:
        store.close()


def test_0009_keys_confirmations_per_address_and_goes_down_again(store_url: str) -> None:
    from sqlalchemy import inspect

    from digest.store.signups import NewSignup

    _upgrade(store_url, "0008")
    engine = create_engine(store_url)
    with engine.begin() as conn:
        sid = conn.execute(
            t.subscribers.insert()
            .values(
                email="p@example.org", email_key="p@example.org", name="", categories=[],
                regions=[], status="active", created_at=T0, updated_at=T0,
            )
            .returning(t.subscribers.c.id)
        ).scalar_one()  # fmt: skip
        for source, page in [("preferences", "/preferences/WzEsIm4iXQ.secret"),
                             ("signup", "https://example.org/subscribe/n")]:  # fmt: skip
            conn.execute(
                t.consents.insert().values(
                    subscriber_id=sid, source=source, statement="Ja", created_at=T0,
                    page_url=page,
                )
            )  # fmt: skip
    engine.dispose()
    store = Store.open(store_url, secret_key=TEST_SECRET_KEY)  # upgrades to the head
    try:
        pages = [c["page_url"] for c in store.personal_data("p@example.org")["consents"]]  # type: ignore[index]
        assert pages == ["/preferences/", "https://example.org/subscribe/n"]
        signup = NewSignup("n", "Neu@example.org", "", frozenset(), frozenset(), "Ja.", "1")
        assert store.add_signup(signup, interval=timedelta(minutes=10), now=T0) is not None
        again = NewSignup("n", "neu@EXAMPLE.org", "", frozenset(), frozenset(), "Ja.", "1")
        assert store.add_signup(again, interval=timedelta(minutes=10), now=T0) is None
        with store.engine.connect() as conn:
            [row] = conn.execute(select(t.confirm_limits)).all()
        assert row.address_hash == address_hash("neu@example.org", TEST_SECRET_KEY)
    finally:
        store.close()
    engine = create_engine(store_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0008")
    assert "confirm_limits" not in inspect(engine).get_table_names()
    engine.dispose()


def test_0011_adds_the_schedule_marks_and_goes_down_again(store_url: str) -> None:
    from sqlalchemy import inspect

    _upgrade(store_url, "0010")
    store = Store.open(store_url)  # upgrades to the head
    try:
        with store.schedule_mark("newsletter:n") as mark:
            assert (mark.due_at, mark.ticked_at) == (None, None)
            mark.advance(due_at=T0, ticked_at=T0 + timedelta(minutes=1))
        assert store.schedule_marks() == {"newsletter:n": (T0, T0 + timedelta(minutes=1))}
    finally:
        store.close()
    engine = create_engine(store_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0010")
    assert "schedule_marks" not in inspect(engine).get_table_names()
    engine.dispose()


def test_0013_keeps_every_editor_an_editor_and_adds_the_audit_log(store_url: str) -> None:
    """An existing account keeps what it could do and gains no access to readers' data."""
    from sqlalchemy import inspect

    _upgrade(store_url, "0012")
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(
            t.editors.insert().values(
                name="erika", email="erika@example.org", password_hash="x", created_at=T0
            )
        )
    engine.dispose()
    store = Store.open(store_url, secret_key=TEST_SECRET_KEY)  # upgrades to the head
    try:
        editor = store.editor_by_name("erika")
        assert editor is not None and editor.role == "editor" and not editor.is_admin
        store.record_access("anna", "view", "Leser@Example.org", subscriber_id=7, now=T0)
        [entry] = store.audit_of("leser@example.org")
        assert (entry.editor, entry.action, entry.subscriber_id) == ("anna", "view", 7)
        assert entry.address_hash == address_hash("leser@example.org", TEST_SECRET_KEY)
    finally:
        store.close()
    engine = create_engine(store_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0011")
    assert "audit_log" not in inspect(engine).get_table_names()
    assert "role" not in {c["name"] for c in inspect(engine).get_columns("editors")}
    engine.dispose()
