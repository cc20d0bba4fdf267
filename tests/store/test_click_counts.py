"""Click counts in the store (migration 0012), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, select

from digest.core.models import Article
from digest.store import Store
from digest.store import schema as t
from digest.store.clicks import READ, SCANNER, ClickKey
from digest.store.store import MIGRATIONS

T0 = datetime(2025, 1, 27, 9, tzinfo=UTC)
DAY = date(2025, 2, 3)


def _alembic(url: str, action: str, revision: str) -> None:
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)
    engine.dispose()


def _article(n: int, category: str = "politik") -> Article:
    return Article(
        uid=f"https://example.org/{n}",
        source="feed",
        title=f"Meldung {n}",
        link=f"https://example.org/{n}",
        published=T0 + timedelta(hours=n),
        category=category,
    )


def _issue(store: Store, key: str, numbers: range) -> tuple[int, dict[str, int]]:
    store.upsert_articles("nl", [_article(n, "politik" if n % 2 else "technik") for n in numbers])
    record = store.create_issue(
        "nl",
        key,
        T0,
        T0 + timedelta(days=7),
        "Betreff",
        [f"https://example.org/{n}" for n in numbers],
    )
    found = store.click_targets("nl", key)
    assert found is not None and found[0] == record.id
    return record.id, {target.uid: target.article_id for target in found[1]}


def test_0012_adds_click_counts_and_goes_down_again(store_url: str) -> None:
    _alembic(store_url, "upgrade", "0011")
    store = Store.open(store_url)  # upgrades to the head
    try:
        issue_id, articles = _issue(store, "2025-W05", range(2))
        article_id = articles["https://example.org/1"]
        store.add_clicks({ClickKey(issue_id, article_id, DAY, "mail", READ): 2})
        [clicks] = [a for a in store.article_clicks(issue_id) if a.article_id == article_id]
        assert (clicks.mail, clicks.web, clicks.scanner) == (2, 0, 0)
    finally:
        store.close()
    _alembic(store_url, "downgrade", "0011")
    engine = create_engine(store_url)
    assert "click_counts" not in inspect(engine).get_table_names()
    engine.dispose()


def test_counts_add_up_per_issue_article_day_channel_and_kind(store: Store) -> None:
    issue_id, articles = _issue(store, "2025-W05", range(4))
    other_issue, others = _issue(store, "2025-W06", range(4, 6))
    one, two = articles["https://example.org/1"], articles["https://example.org/2"]
    store.add_clicks(
        {
            ClickKey(issue_id, one, DAY, "mail", READ): 3,
            ClickKey(issue_id, one, DAY, "web", READ): 1,
            ClickKey(issue_id, two, DAY, "mail", SCANNER): 5,
        }
    )
    store.add_clicks(
        {
            ClickKey(issue_id, one, DAY, "mail", READ): 2,  # added to the 3
            ClickKey(issue_id, one, DAY + timedelta(days=1), "mail", READ): 1,
            ClickKey(issue_id, two, DAY, "mail", READ): 1,
            # An article of another issue under this issue's id: not a link it had.
            ClickKey(issue_id, others["https://example.org/4"], DAY, "mail", READ): 7,
            ClickKey(issue_id, 999_999, DAY, "mail", READ): 1,  # no such article
        }
    )
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.click_counts).order_by(*t.click_counts.primary_key)).all()
    assert [tuple(r) for r in rows] == [
        (issue_id, one, DAY, "mail", READ, 5),
        (issue_id, one, DAY, "web", READ, 1),
        (issue_id, one, DAY + timedelta(days=1), "mail", READ, 1),
        (issue_id, two, DAY, "mail", READ, 1),
        (issue_id, two, DAY, "mail", SCANNER, 5),
    ]
    clicks = store.article_clicks(issue_id)
    assert [(a.title, a.mail, a.web, a.scanner) for a in clicks[:2]] == [
        ("Meldung 1", 6, 1, 0),
        ("Meldung 2", 1, 0, 5),
    ]
    assert len(clicks) == 4  # the articles nobody opened too, with nothing
    assert store.article_clicks(other_issue)[0].reads == 0
    assert store.click_targets("nl", "2025-W07") is None
