"""The figures editors see, as the store computes them: deliveries, unsubscribes after
an issue, readers' events over time (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from digest.core.models import DeliveryState, Subscriber
from digest.store import Store

NL = "nl"
T0 = datetime(2025, 1, 27, 9, tzinfo=UTC)
SECRET = "test-secret-key-0123456789"


def _issue(store: Store, key: str, start: datetime) -> int:
    return store.create_issue(NL, key, start, start + timedelta(days=7), "Betreff", []).id


def _sent(store: Store, issue_id: int, sids: list[int], at: datetime) -> dict[int, int]:
    """Deliveries of ``issue_id`` to ``sids``, recorded sent at ``at``; their ids by reader."""
    store.plan_deliveries(issue_id, [(sid, f"{sid}@example.org", ["alle"]) for sid in sids], at)
    rows = {row.subscriber_id: row.id for row in store.deliveries(issue_id)}
    for sid in sids:
        store.record_delivery(rows[sid], DeliveryState.SENT, code=250, reply="ok", now=at)
    return rows


def test_unsubscribes_are_put_down_to_the_last_issue_a_reader_was_sent(store: Store) -> None:
    sids = [store.save_subscriber(Subscriber(f"r{n}@example.org"), ["alle"]) for n in range(5)]
    w05 = _issue(store, "2025-W05", T0)
    w06 = _issue(store, "2025-W06", T0 + timedelta(days=7))
    _sent(store, w05, sids, T0 + timedelta(days=7))
    _sent(store, w06, sids[2:], T0 + timedelta(days=14))
    day = timedelta(days=1)
    store.unsubscribe(sids[0], NL, now=T0 + timedelta(days=8))  # after W05
    store.unsubscribe(sids[1], NL, now=T0 + timedelta(days=20))  # after W05, W06 never came
    store.unsubscribe(sids[2], NL, now=T0 + timedelta(days=15))  # after W06
    store.unsubscribe(sids[3], "anderer", now=T0 + 9 * day)  # another newsletter
    assert store.unsubscribes_after(w05) == 2
    assert store.unsubscribes_after(w06) == 1
    figures = store.issue_deliveries(w05)
    assert (figures.sent, figures.unsubscribes) == (5, 2)


def test_deliveries_bounces_and_complaints_of_an_issue(store: Store) -> None:
    sids = [store.save_subscriber(Subscriber(f"r{n}@example.org"), ["alle"]) for n in range(6)]
    issue = _issue(store, "2025-W05", T0)
    at = T0 + timedelta(days=7)
    rows = _sent(store, issue, sids[:4], at)
    store.plan_deliveries(issue, [(sids[4], "x@example.org", ["alle"]), (sids[5], "y", ["alle"])])
    failed = {row.subscriber_id: row.id for row in store.deliveries(issue)}[sids[5]]
    store.record_delivery(failed, DeliveryState.FAILED, code=550, reply="no", now=at)
    for sid, kind in ((sids[0], "hard"), (sids[1], "soft"), (sids[2], "complaint")):
        store.record_bounce(
            rows[sid],
            kind,
            status=None,
            diagnostic=None,
            now=at + timedelta(hours=1),
            soft_limit=3,
            soft_since=T0,
        )
    figures = store.issue_deliveries(issue)
    assert (figures.sent, figures.deferred, figures.failed) == (4, 1, 1)
    assert (figures.bounced, figures.complaints, figures.unsubscribes) == (2, 1, 0)


def test_reader_events_since_a_time(store_url: str) -> None:
    store = Store.open(store_url, secret_key=SECRET)
    try:
        old = T0 - timedelta(days=400)
        before = store.save_subscriber(Subscriber("alt@example.org"), ["alle"], now=old)
        both = store.save_subscriber(Subscriber("zwei@example.org"), ["alle", "bayern"], now=T0)
        store.save_subscriber(Subscriber("fremd@example.org"), ["andere-liste"], now=T0)
        store.unsubscribe(before, NL, now=T0 + timedelta(days=1))
        store.unsubscribe(both, "anderer", now=T0 + timedelta(days=1))
        issue = _issue(store, "2025-W05", T0)
        rows = _sent(store, issue, [before, both], T0 + timedelta(days=7))
        store.record_bounce(
            rows[both],
            "hard",
            status="5.1.1",
            diagnostic=None,
            now=T0 + timedelta(days=8),
            soft_limit=3,
            soft_since=T0,
        )
        events = store.reader_events(NL, ["alle", "bayern"], T0 - timedelta(days=1))
        assert events == {
            "joined": [T0],  # one reader on two lists joins once; the old one before
            "confirmed": [],
            "left": [T0 + timedelta(days=1)],
            "bounced": [T0 + timedelta(days=8)],
        }
    finally:
        store.close()
