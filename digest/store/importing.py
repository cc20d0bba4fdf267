"""Bulk import of subscribers into a list: a few statements per thousand rows.

The file's addresses are looked up in chunks (existing subscribers, their membership in
the list, the suppression list), then new subscribers, changed ones, memberships and
consents are written with one executemany each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

from digest.core.addresses import email_key
from digest.core.models import Subscriber
from digest.store import schema as t

__all__ = ["ImportCounts", "import_rows"]

CHUNK = 1000


@dataclass
class ImportCounts:
    """What an import did (or would do): counts, and the lines of suppressed rows."""

    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: list[int] = field(default_factory=list)


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


@dataclass
class _Known:
    """What the store already holds about the file's addresses."""

    suppressed: set[str]  # address hashes suppressed for every newsletter
    existing: dict[str, Any]  # email key -> subscriber row
    on_list: set[int]  # ids of existing subscribers already on the list


@dataclass
class _Changes:
    """The writes an import makes, gathered so each is one executemany."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    joining: list[int] = field(default_factory=list)


def import_rows(
    conn: Connection,
    rows: Sequence[tuple[int, Subscriber]],
    list_name: str,
    *,
    consent: str,
    hash_of: Any,
    now: datetime,
) -> ImportCounts:
    """Add ``rows`` (line, subscriber; one per address) to ``list_name`` on ``conn``.

    A new address is inserted; an existing active subscriber is updated in place (the
    spelling first given is kept) or left unchanged. An address suppressed for every
    newsletter, or a subscriber who is not active (bounced, unsubscribed, …), is not
    added, updated or reactivated: only a confirmed double opt-in lifts that. Each new
    membership gets a consent row (source 'import') with the operator's ``consent``.
    """
    counts = ImportCounts()
    keyed = [(line, s, email_key(s.email)) for line, s in rows]
    hashes = {key: hash_of(key) for _line, _s, key in keyed}
    known = _look_up(conn, [key for _line, _s, key in keyed], hashes, list_name)
    changes = _check_rows(keyed, hashes, known, counts, now)
    _write_subscribers(conn, changes, now)
    _join_list(conn, changes.joining, list_name, consent=consent, now=now)
    return counts


def _look_up(conn: Connection, keys: list[str], hashes: dict[str, str], list_name: str) -> _Known:
    """Read, a chunk at a time, what the store holds about ``keys``."""
    suppressed: set[str] = set()
    for chunk in _chunks(list(hashes.values())):
        suppressed.update(
            conn.execute(
                select(t.suppressions.c.address_hash).where(
                    t.suppressions.c.scope == t.ALL_NEWSLETTERS,
                    t.suppressions.c.address_hash.in_(chunk),
                )
            ).scalars()
        )
    existing: dict[str, Any] = {}
    for chunk in _chunks(keys):
        for found in conn.execute(
            select(
                t.subscribers.c.id,
                t.subscribers.c.email_key,
                t.subscribers.c.name,
                t.subscribers.c.locale,
                t.subscribers.c.categories,
                t.subscribers.c.regions,
                t.subscribers.c.status,
            ).where(t.subscribers.c.email_key.in_(chunk))
        ):
            existing[found.email_key] = found
    on_list: set[int] = set()
    for chunk in _chunks([row.id for row in existing.values()]):
        on_list.update(
            conn.execute(
                select(t.memberships.c.subscriber_id).where(
                    t.memberships.c.list_name == list_name,
                    t.memberships.c.subscriber_id.in_(chunk),
                )
            ).scalars()
        )
    return _Known(suppressed, existing, on_list)


def _check_rows(
    keyed: list[tuple[int, Subscriber, str]],
    hashes: dict[str, str],
    known: _Known,
    counts: ImportCounts,
    now: datetime,
) -> _Changes:
    """Decide for each row: skip as suppressed, insert, update, join the list, or none."""
    changes = _Changes()
    for line, subscriber, key in keyed:
        values = {
            "name": subscriber.name,
            "locale": subscriber.locale,
            "categories": sorted(subscriber.categories),
            "regions": sorted(subscriber.regions),
        }
        row = known.existing.get(key)
        if hashes[key] in known.suppressed or (row is not None and row.status != "active"):
            counts.suppressed.append(line)
            continue
        if row is None:
            changes.inserts.append(
                dict(values, email=subscriber.email, email_key=key, status="active",
                     created_at=now, updated_at=now)
            )  # fmt: skip
            counts.imported += 1
            continue
        differs = (
            row.name != values["name"]
            or row.locale != values["locale"]
            or sorted(row.categories or ()) != values["categories"]
            or sorted(row.regions or ()) != values["regions"]
        )
        if differs:
            changes.updates.append({"row_id": row.id, **{f"new_{k}": v for k, v in values.items()}})
        if row.id not in known.on_list:
            changes.joining.append(row.id)
        if differs or row.id not in known.on_list:
            counts.updated += 1
        else:
            counts.unchanged += 1
    return changes


def _write_subscribers(conn: Connection, changes: _Changes, now: datetime) -> None:
    """Insert the new subscribers (their ids join the list) and update the changed ones."""
    if changes.inserts:
        added = conn.execute(
            t.subscribers.insert().returning(t.subscribers.c.id, sort_by_parameter_order=True),
            changes.inserts,
        ).scalars()
        changes.joining.extend(added)
    if changes.updates:
        conn.execute(
            t.subscribers.update()
            .where(t.subscribers.c.id == bindparam("row_id"))
            .values(
                name=bindparam("new_name"),
                locale=bindparam("new_locale"),
                categories=bindparam("new_categories"),
                regions=bindparam("new_regions"),
                updated_at=now,
            ),
            changes.updates,
        )


def _join_list(
    conn: Connection, joining: list[int], list_name: str, *, consent: str, now: datetime
) -> None:
    """Add ``joining`` to the list, each with a consent row recording the import."""
    if not joining:
        return
    conn.execute(
        t.memberships.insert(),
        [{"subscriber_id": sid, "list_name": list_name, "created_at": now} for sid in joining],
    )
    conn.execute(
        t.consents.insert(),
        [
            {
                "subscriber_id": sid,
                "list_name": list_name,
                "newsletter": None,
                "source": "import",
                "statement": consent,
                "text_version": None,
                "created_at": now,
                "ip": None,
                "user_agent": None,
                "page_url": None,
                "confirmed_at": None,
                "confirm_ip": None,
            }
            for sid in joining
        ],
    )
