"""An address added by two at the same moment (two imports, an import and a sign-up): the
second one goes on from what the first stored. On PostgreSQL, where the second waits
for the first's transaction at the unique index and then finds the address taken: the
first is held open here until the second is seen waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, text

from digest.core.models import Subscriber
from digest.store import Store
from digest.store.importing import import_rows
from digest.store.signups import NewSignup
from tests.conftest import POSTGRES_URL, TEST_SECRET_KEY, postgres_schema_url

NOW = datetime(2025, 2, 3, 9, 0, tzinfo=UTC)
ADDRESS = "gleichzeitig@example.org"


@pytest.fixture
def pg_store() -> Iterator[Store]:
    if not POSTGRES_URL:
        pytest.skip("the wait at the unique index is PostgreSQL's (set DIGEST_TEST_POSTGRES_URL)")
    with postgres_schema_url() as url:
        store = Store.open(url, secret_key=TEST_SECRET_KEY)
        try:
            yield store
        finally:
            store.close()


def _while_another_adds_it(store: Store, second: Callable[[], Any]) -> Any:
    """Run ``second`` while an uncommitted import holds ``ADDRESS``; commit that import
    once ``second`` waits for it, and return what ``second`` returned."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = second()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    with store.engine.connect() as first:
        transaction = first.begin()
        import_rows(
            first, [(2, Subscriber(ADDRESS, "Erste"))], "allgemein", consent="Messe",
            hash_of=store.address_hash, now=NOW,
        )  # fmt: skip
        thread = threading.Thread(target=run)
        thread.start()
        _wait_for_a_lock_wait(first, thread)
        transaction.commit()
    thread.join(timeout=30)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _wait_for_a_lock_wait(conn: Connection, thread: threading.Thread) -> None:
    """Until another session waits for a lock held by ``conn``'s transaction (or the
    ``thread`` meant to wait has ended: its outcome says why)."""
    pid = conn.execute(text("select pg_backend_pid()")).scalar_one()
    deadline = time.monotonic() + 20
    while thread.is_alive() and time.monotonic() < deadline:
        # Within a transaction the activity view is one snapshot unless cleared.
        conn.execute(text("select pg_stat_clear_snapshot()"))
        blocked = conn.execute(
            text("select count(*) from pg_stat_activity where :pid = any(pg_blocking_pids(pid))"),
            {"pid": pid},
        ).scalar_one()
        if blocked:
            return
        time.sleep(0.02)
    assert not thread.is_alive(), "the second never waited for the first"


def test_an_import_goes_on_from_what_another_import_added(pg_store: Store) -> None:
    rows = [(2, Subscriber(ADDRESS, "Zweite")), (3, Subscriber("andere@example.org"))]
    counts = _while_another_adds_it(
        pg_store,
        lambda: pg_store.import_subscribers(rows, "bayern", consent="Formular", now=NOW),
    )
    assert (counts.imported, counts.updated) == (1, 1)
    found = pg_store.subscriber_by_email(ADDRESS)
    assert found is not None and found.lists == {"allgemein", "bayern"}
    assert found.name == "Zweite"


def test_a_sign_up_confirmed_while_an_import_adds_the_address(pg_store: Store) -> None:
    signup_id = pg_store.add_signup(
        NewSignup(
            "wochenueberblick", ADDRESS, "Petra", frozenset(), frozenset(), "Ja, bitte.", "1"
        ),
        interval=timedelta(minutes=10),
        now=NOW,
    )
    assert signup_id is not None
    done = _while_another_adds_it(
        pg_store,
        lambda: pg_store.confirm_signup(
            signup_id, join_list="bayern", interests=lambda c, r: (set(), set()), ip=None, now=NOW
        ),
    )
    assert done is not None
    confirmed, first = done
    found = pg_store.subscriber_by_email(ADDRESS)
    assert first and found is not None and confirmed.subscriber_id == found.id
    assert found.lists == {"allgemein", "bayern"}
