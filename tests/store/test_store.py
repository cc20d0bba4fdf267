"""The store on a real SQLite file, and on PostgreSQL when DIGEST_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import inspect, select

from digest.core.models import Article, DeliveryState, Image, Subscriber
from digest.store import Store
from digest.store import schema as t
from digest.store.ledger import ClaimedRow, MessageIdPattern, Outcome, PlannedRow

T0 = datetime(2025, 1, 28, 9, 30, tzinfo=UTC)


def article(uid: str, **changes: object) -> Article:
    base = Article(
        uid=uid,
        source="feed",
        title=f"Titel {uid}",
        link=f"https://x.example/{uid}",
        published=T0,
        category="politik",
        region="Bayern",
        author="A. Autor",
        summary="<p>Kurz</p>",
        content="",
        image=Image("https://x.example/i.jpg", "Ein Bild"),
        label="Interview",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_migrations_create_schema_and_are_idempotent(store_url: str) -> None:
    first = Store.open(store_url)
    first.migrate()  # second run: nothing to do, no error
    tables = set(inspect(first.engine).get_table_names())
    first.close()
    assert {
        "articles",
        "issues",
        "subscribers",
        "memberships",
        "deliveries",
        "sources",
        "unsubscriptions",
        "alembic_version",
    } <= tables


def test_articles_round_trip_with_aware_utc_times(store: Store) -> None:
    berlin_time = datetime(2025, 1, 28, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    assert store.upsert_articles("nl", [article("a", published=berlin_time)]) == (1, 0)
    [loaded] = store.window_articles("nl", T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert loaded.published == T0 and loaded.published.tzinfo is not None
    assert loaded.image == Image("https://x.example/i.jpg", "Ein Bild")
    assert loaded.label == "Interview" and loaded.region == "Bayern"


def test_recollecting_never_duplicates_and_updates_in_place(store: Store) -> None:
    assert store.upsert_articles("nl", [article("a"), article("b"), article("a")]) == (2, 0)
    assert store.upsert_articles("nl", [article("a"), article("b")]) == (0, 0)
    assert store.upsert_articles("nl", [article("a", title="Neuer Titel")]) == (0, 1)
    assert store.count_articles("nl") == 2
    titles = {a.uid: a.title for a in store.window_articles("nl", T0, T0 + timedelta(1))}
    assert titles == {"a": "Neuer Titel", "b": "Titel b"}
    # another newsletter keeps its own copy
    assert store.upsert_articles("other", [article("a")]) == (1, 0)


def test_window_is_half_open_and_claimed_articles_leave_it(store: Store) -> None:
    start, end = T0 - timedelta(hours=1), T0 + timedelta(hours=1)
    store.upsert_articles(
        "nl",
        [article("at-start", published=start), article("in"), article("at-end", published=end)],
    )
    assert {a.uid for a in store.window_articles("nl", start, end)} == {"at-start", "in"}
    issue = store.create_issue("nl", "2025-W05", start, end, "Betreff", ["in"])
    again = store.create_issue("nl", "2025-W05", start, end, "anders", ["at-start"])
    assert again.id == issue.id and again.subject == "Betreff"
    assert [a.uid for a in store.issue_articles(issue.id)] == ["in"]
    assert {a.uid for a in store.window_articles("nl", start, end)} == {"at-start"}
    assert {a.uid for a in store.window_articles("nl", start, end, issue.id)} == {"at-start", "in"}


def test_source_state_keeps_validators_across_a_failure(store: Store) -> None:
    assert store.source_state("nl", "feed") == (None, None)
    store.save_source_state("nl", "feed", etag='"v1"', last_modified="Tue", error=None)
    store.save_source_state("nl", "feed", etag=None, last_modified=None, error="HTTP 500")
    assert store.source_state("nl", "feed") == ('"v1"', "Tue")


def test_subscribers_and_lists(store: Store) -> None:
    jb = Subscriber("jb@example.org", "Jürgen Böhm", categories=frozenset({"politik"}))
    sid = store.save_subscriber(jb, ["allgemein"])
    assert store.save_subscriber(replace(jb, name="J. Böhm"), ["bayern"]) == sid
    store.save_subscriber(Subscriber("x@example.org"), ["other"])
    found = store.subscriber_by_email("jb@example.org")
    assert found is not None and found.name == "J. Böhm"
    assert found.lists == {"allgemein", "bayern"} and found.categories == {"politik"}
    assert [s.email for s in store.active_subscribers(["bayern", "allgemein"])] == [
        "jb@example.org"
    ]
    assert len(store.active_subscribers()) == 2


def test_delivery_ledger_plans_once_and_claims_once(store: Store) -> None:
    store.upsert_articles("nl", [article("a")])
    issue = store.create_issue("nl", "2025-W05", T0, T0 + timedelta(1), "S", ["a"])
    sid = store.save_subscriber(Subscriber("a@example.org"), ["l"])
    assert store.plan_deliveries(issue.id, [(sid, "a@example.org", ["alle"])]) == 1
    assert store.plan_deliveries(issue.id, [(sid, "a@example.org", ["alle"])]) == 0
    [row] = store.deliveries(issue.id)
    assert row.state == DeliveryState.PENDING and row.segments == ("alle",)

    def claim() -> list[int]:
        claimed = store.claim_deliveries(
            issue.id, after_id=0, limit=10, stale_before=T0, new_message_id=lambda: "<m@x>"
        )
        return [r.id for r in claimed]

    assert claim() == [row.id]
    assert claim() == []  # another sender holds it
    store.record_delivery(row.id, DeliveryState.SENT, code=250, reply="OK queued")
    [row] = store.deliveries(issue.id)
    assert (row.state, row.smtp_code, row.attempts, row.message_id) == ("sent", 250, 1, "<m@x>")
    assert store.delivery_counts(issue.id) == {"sent": 1}


def test_claims_take_chunks_once_and_a_stale_row_keeps_its_message_id(store: Store) -> None:
    from itertools import count

    issue = store.create_issue("nl", "2025-W05", T0, T0 + timedelta(1), "S", [])
    planned = [
        PlannedRow(store.save_subscriber(Subscriber(f"r{n}@example.org"), ["l"]), f"r{n}@x", ())
        for n in range(5)
    ]
    assert store.plan_rows(issue.id, planned) == 5 and store.plan_rows(issue.id, planned) == 0
    ids = count()

    def claim(after: int, *, stale_before: datetime = T0) -> list[ClaimedRow]:
        return store.claim_deliveries(
            issue.id,
            after_id=after,
            limit=2,
            stale_before=stale_before,
            new_message_id=lambda: f"<{next(ids)}@x>",
        )

    first = claim(0)
    second = claim(first[-1].id)
    assert len(first) == len(second) == 2 and {r.id for r in first}.isdisjoint(r.id for r in second)
    assert all(r.message_id and not r.resumed for r in first + second)
    store.release_deliveries([second[1].id])  # claimed, never tried: back as it was
    store.record_outcomes([Outcome(first[0].id, DeliveryState.SENT, 250, "ok")])
    rows = {r.id: r for r in store.deliveries(issue.id)}
    assert (rows[second[1].id].state, rows[second[1].id].attempts) == ("pending", 0)
    assert (rows[first[0].id].state, rows[first[0].id].smtp_reply) == ("sent", "ok")
    # Later, the claims of a run that stopped are stale: taken over with their ids.
    again = claim(0, stale_before=datetime.now(UTC) + timedelta(minutes=1))
    assert [(r.id, r.message_id, r.resumed) for r in again] == [
        (first[1].id, first[1].message_id, True),
        (second[0].id, second[0].message_id, True),
    ]


def test_values_from_outside_have_no_length_limit(store: Store) -> None:
    long_label = "Hintergrund " * 40
    assert store.upsert_articles("nl", [article("a", label=long_label, region="Region " * 30)]) == (
        1,
        0,
    )
    [loaded] = store.window_articles("nl", T0, T0 + timedelta(1))
    assert loaded.label == long_label
    etag = '"' + "e" * 2000 + '"'
    store.save_source_state("nl", "feed", etag=etag, last_modified="x" * 300, error=None)
    assert store.source_state("nl", "feed") == (etag, "x" * 300)


def test_unsubscribing_from_one_newsletter_keeps_the_others(store: Store) -> None:
    sid = store.save_subscriber(Subscriber("a@example.org"), ["allgemein"])
    assert store.unsubscribe(sid, "eins") == "a@example.org"
    assert store.unsubscribe(sid, "eins") == "a@example.org"  # a second click is fine
    assert store.unsubscribe(9999, "eins") is None
    assert store.active_subscribers(newsletter="eins") == []
    assert [s.id for s in store.active_subscribers(newsletter="zwei")] == [sid]
    assert store.unsubscribed(sid, "eins") and not store.unsubscribed(sid, "zwei")


def test_many_unsubscribes_in_one_transaction_are_each_as_if_alone(store: Store) -> None:
    """A burst of one-click POSTs is written together: a merged id withdraws its
    survivor, an erased or unknown id nothing, a repeated one once."""
    a = store.save_subscriber(Subscriber("a@example.org"), ["allgemein"])
    b = store.save_subscriber(Subscriber("b@example.org"), ["allgemein"])
    gone = store.save_subscriber(Subscriber("gone@example.org"), ["allgemein"])
    tomb = store.save_subscriber(Subscriber("B@Example.org.invalid"), ["allgemein"])
    with store.engine.begin() as conn:  # the tombstone of another spelling of b
        conn.execute(
            t.subscribers.update()
            .where(t.subscribers.c.id == tomb)
            .values(status="merged", merged_into=b, email_key=None)
        )
    assert store.erase("gone@example.org")
    asked = [(a, "eins"), (tomb, "eins"), (gone, "eins"), (9999, "eins"), (a, "eins"), (a, "zwei")]
    assert store.unsubscribe_many(asked, now=T0) == [
        "a@example.org", "b@example.org", None, None, "a@example.org", "a@example.org",
    ]  # fmt: skip
    assert store.unsubscribe_many([]) == []
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(t.unsubscriptions.c.subscriber_id, t.unsubscriptions.c.newsletter)
        ).all()
    assert sorted(rows) == [(a, "eins"), (a, "zwei"), (b, "eins")]
    assert store.unsubscribed(tomb, "eins") and not store.unsubscribed(b, "zwei")
    assert store.is_suppressed("a@example.org", "zwei")
    assert store.is_suppressed("b@example.org", "eins")
    assert not store.is_suppressed("b@example.org", "zwei")
    assert store.suppressions_of("a@example.org")[0]["created_at"] == T0.isoformat()
    assert store.active_subscribers(newsletter="eins") == []


def test_claims_take_only_due_rows_and_keep_the_first_attempt(store: Store) -> None:
    issue = store.create_issue("nl", "2025-W06", T0, T0 + timedelta(1), "S", [])
    sid = store.save_subscriber(Subscriber("d@example.org"), ["l"])
    assert store.plan_rows(issue.id, [PlannedRow(sid, "d@example.org", ())]) == 1

    def claim(now: datetime) -> list[ClaimedRow]:
        return store.claim_deliveries(
            issue.id, after_id=0, limit=5, stale_before=T0, new_message_id=lambda: "<d@x>", now=now
        )

    [first] = claim(T0)
    # a claim is no attempt yet: only a server's answer about the message counts
    assert (first.attempts, first.first_attempt_at) == (0, None)
    # deferred: pending, not claimed before its time, claimed once it has come
    later = T0 + timedelta(minutes=5)
    store.record_outcomes(
        [Outcome(first.id, DeliveryState.PENDING, 451, "4.7.1 later", next_attempt_at=later)],
        now=T0,
    )
    [row] = store.deliveries(issue.id)
    assert (row.state, row.next_attempt_at) == (DeliveryState.PENDING, later)
    assert (row.attempts, row.first_attempt_at) == (1, T0)
    assert claim(later - timedelta(seconds=1)) == []
    [second] = claim(later)
    assert (second.attempts, second.first_attempt_at, second.message_id) == (1, T0, "<d@x>")
    [row] = store.deliveries(issue.id)
    assert row.next_attempt_at is None
    # given back unanswered: no attempt counted, the first attempt stays
    store.release_deliveries([second.id])
    [row] = store.deliveries(issue.id)
    assert (row.state, row.attempts, row.first_attempt_at) == ("pending", 1, T0)
    # an outcome no server answered about (the message could not be built) counts none
    [third] = claim(later)
    store.record_outcomes(
        [Outcome(third.id, DeliveryState.PENDING, None, "not answered", answered=False)]
    )
    [row] = store.deliveries(issue.id)
    assert (row.attempts, row.first_attempt_at) == (1, T0)


def test_a_row_given_back_after_its_first_claim_has_no_first_attempt(store: Store) -> None:
    issue = store.create_issue("nl", "2025-W07", T0, T0 + timedelta(1), "S", [])
    sid = store.save_subscriber(Subscriber("e@example.org"), ["l"])
    store.plan_rows(issue.id, [PlannedRow(sid, "e@example.org", ())])
    [claimed] = store.claim_deliveries(
        issue.id, after_id=0, limit=5, stale_before=T0, new_message_id=lambda: "<e@x>", now=T0
    )
    store.release_deliveries([claimed.id])
    [row] = store.deliveries(issue.id)
    assert (row.state, row.attempts, row.first_attempt_at) == ("pending", 0, None)


def test_a_message_id_pattern_is_filled_in_by_the_claim_and_kept_on_a_repeat(
    store: Store,
) -> None:
    issue = store.create_issue("nl", "2025-W05", T0, T0 + timedelta(1), "S", [])
    planned = [
        PlannedRow(store.save_subscriber(Subscriber(f"p{n}@example.org"), ["l"]), f"p{n}@x", ())
        for n in range(3)
    ]
    store.plan_rows(issue.id, planned)
    pattern = MessageIdPattern("nl.2025-W05", "example.org")
    first = store.claim_deliveries(
        issue.id, after_id=0, limit=10, stale_before=T0, new_message_id=pattern
    )
    assert len(first) == 3
    for row in first:
        assert re.fullmatch(
            rf"<nl\.2025-W05\.{row.id}\.[0-9a-f]{{32}}@example\.org>", row.message_id or ""
        )
    assert len({row.message_id for row in first}) == 3
    stored = {r.id: r.message_id for r in store.deliveries(issue.id)}
    assert stored == {r.id: r.message_id for r in first}
    # Left in 'sending' by a run that stopped: taken over later with the same ids.
    again = store.claim_deliveries(
        issue.id,
        after_id=0,
        limit=10,
        stale_before=datetime.now(UTC) + timedelta(minutes=1),
        new_message_id=pattern,
    )
    assert [(r.id, r.message_id, r.resumed) for r in again] == [
        (r.id, r.message_id, True) for r in first
    ]
