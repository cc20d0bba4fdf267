"""Bulk import of subscribers into a list: a few statements per thousand rows.

The rows arrive as a stream and are taken a chunk at a time: the chunk's addresses are
looked up (earlier rows of the same import, existing subscribers, their membership in
the list, the suppression list), then new subscribers, changed ones, memberships and
consents are written with one executemany each. What is kept in memory does not grow
with the number of rows: the addresses already seen go to a temporary table, and only
the first :data:`REPORTED_ROWS` suppressed and repeated rows are listed (all counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import Connection, bindparam, select, text

from digest.core.addresses import email_key
from digest.core.errors import ImportRowError
from digest.core.models import Subscriber
from digest.store import schema as t

__all__ = ["CHUNK", "REPORTED_ROWS", "ImportCounts", "forget_seen", "import_rows"]

#: Rows taken at a time, and addresses looked up with one statement.
CHUNK = 1000
#: How many suppressed rows, and how many repeated ones, an import lists by line.
REPORTED_ROWS = 1000

#: The addresses an import has seen so far (on the import's connection only).
_SEEN = "digest_import_seen"


@dataclass
class ImportCounts:
    """What an import did (or would do): counts, and the first suppressed and repeated rows.

    ``suppressed`` has the lines of the first :data:`REPORTED_ROWS` rows not imported
    because their address is suppressed (``suppressed_count`` counts them all);
    ``repeated`` the first rows whose address an earlier row of the import already had
    (``repeated_count`` counts them all). Both are in line order.
    """

    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: list[int] = field(default_factory=list)
    suppressed_count: int = 0
    repeated: list[ImportRowError] = field(default_factory=list)
    repeated_count: int = 0

    def add_suppressed(self, line: int) -> None:
        self.suppressed_count += 1
        if len(self.suppressed) < REPORTED_ROWS:
            self.suppressed.append(line)

    def add_repeated(self, error: ImportRowError) -> None:
        self.repeated_count += 1
        if len(self.repeated) < REPORTED_ROWS:
            self.repeated.append(error)


def _chunks(items: Iterable[Any]) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, CHUNK)):
        yield chunk


@dataclass
class _Known:
    """What the store already holds about a chunk's addresses."""

    suppressed: set[str]  # address hashes suppressed for every newsletter
    existing: dict[str, Any]  # email key -> subscriber row
    on_list: set[int]  # ids of existing subscribers already on the list


@dataclass
class _Changes:
    """The writes of one chunk, gathered so each is one executemany."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    joining: list[int] = field(default_factory=list)


def import_rows(
    conn: Connection,
    rows: Iterable[tuple[int, Subscriber]],
    list_name: str,
    *,
    consent: str,
    hash_of: Any,
    now: datetime,
) -> ImportCounts:
    """Add ``rows`` (line, subscriber; in line order) to ``list_name`` on ``conn``.

    A new address is inserted; an existing active subscriber is updated in place (the
    spelling first given is kept) or left unchanged. An address suppressed for every
    newsletter, or a subscriber who is not active (bounced, unsubscribed, …), is not
    added, updated or reactivated: only a confirmed double opt-in lifts that. Each new
    membership gets a consent row (source 'import') with the operator's ``consent``.
    A row whose address (in any spelling) an earlier row had is skipped and reported.
    ``rows`` is read a chunk at a time, in the caller's transaction on ``conn``.
    """
    counts = ImportCounts()
    _start_seen(conn)
    for chunk in _chunks(rows):
        keyed = _first_sightings(conn, chunk, counts)
        if not keyed:
            continue
        hashes = {key: hash_of(key) for _line, _s, key in keyed}
        known = _look_up(conn, [key for _line, _s, key in keyed], hashes, list_name)
        changes = _check_rows(keyed, hashes, known, counts, now)
        _write_subscribers(conn, changes, now)
        _join_list(conn, changes.joining, list_name, consent=consent, now=now)
    return counts


def _seen_table(conn: Connection) -> str:
    schema = "pg_temp" if conn.dialect.name == "postgresql" else "temp"
    return f"{schema}.{_SEEN}"


def _start_seen(conn: Connection) -> None:
    """An empty temporary table for the addresses seen, on this connection only."""
    conn.execute(text(f"DROP TABLE IF EXISTS {_seen_table(conn)}"))
    conn.execute(
        text(f"CREATE TEMPORARY TABLE {_SEEN} (email_key TEXT PRIMARY KEY, line INTEGER NOT NULL)")
    )


def forget_seen(conn: Connection) -> None:
    """Drop the addresses an import has seen; after its transaction ended, either way.

    SQLite creates the temporary table outside the transaction, so a rollback keeps it.
    """
    with conn.begin():
        conn.execute(text(f"DROP TABLE IF EXISTS {_seen_table(conn)}"))


def _first_sightings(
    conn: Connection, chunk: list[tuple[int, Subscriber]], counts: ImportCounts
) -> list[tuple[int, Subscriber, str]]:
    """The rows of ``chunk`` whose address no earlier row had; the others are reported."""
    first: dict[str, int] = {}
    keyed: list[tuple[int, Subscriber, str]] = []
    repeats: list[tuple[int, Subscriber, str]] = []
    for line, subscriber in chunk:
        key = email_key(subscriber.email)
        if key in first:
            repeats.append((line, subscriber, key))
        else:
            first[key] = line
            keyed.append((line, subscriber, key))
    table = _seen_table(conn)
    query = text(f"SELECT email_key, line FROM {table} WHERE email_key IN :keys")
    seen = conn.execute(
        query.bindparams(bindparam("keys", expanding=True)), {"keys": list(first)}
    ).all()
    if seen:
        earlier: dict[str, int] = {key: line for key, line in seen}
        first.update(earlier)
        repeats.extend(row for row in keyed if row[2] in earlier)
        keyed = [row for row in keyed if row[2] not in earlier]
        repeats.sort(key=lambda row: row[0])
    for line, subscriber, key in repeats:
        counts.add_repeated(
            ImportRowError(
                line,
                f"{subscriber.email} appears twice in this file (first on line {first[key]}, "
                "in any spelling)",
            )
        )
    if keyed:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        conn.exec_driver_sql(
            f"INSERT INTO {table} (email_key, line) VALUES ({mark}, {mark})",
            [(key, line) for line, _s, key in keyed],
        )
    return keyed


def _look_up(conn: Connection, keys: list[str], hashes: dict[str, str], list_name: str) -> _Known:
    """Read what the store holds about ``keys`` (at most one chunk of them)."""
    suppressed = set(
        conn.execute(
            select(t.suppressions.c.address_hash).where(
                t.suppressions.c.scope == t.ALL_NEWSLETTERS,
                t.suppressions.c.address_hash.in_(list(hashes.values())),
            )
        ).scalars()
    )
    existing: dict[str, Any] = {}
    for found in conn.execute(
        select(
            t.subscribers.c.id,
            t.subscribers.c.email_key,
            t.subscribers.c.name,
            t.subscribers.c.locale,
            t.subscribers.c.categories,
            t.subscribers.c.regions,
            t.subscribers.c.status,
        ).where(t.subscribers.c.email_key.in_(keys))
    ):
        existing[found.email_key] = found
    on_list: set[int] = set()
    if existing:
        on_list.update(
            conn.execute(
                select(t.memberships.c.subscriber_id).where(
                    t.memberships.c.list_name == list_name,
                    t.memberships.c.subscriber_id.in_([row.id for row in existing.values()]),
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
            counts.add_suppressed(line)
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
        # One executemany, then the new ids by key: RETURNING in the rows' order would
        # be one INSERT per row on SQLite.
        conn.execute(t.subscribers.insert(), changes.inserts)
        keys = [row["email_key"] for row in changes.inserts]
        found = conn.execute(
            select(t.subscribers.c.email_key, t.subscribers.c.id).where(
                t.subscribers.c.email_key.in_(keys)
            )
        )
        ids: dict[str, int] = {key: sid for key, sid in found}
        changes.joining.extend(ids[key] for key in keys)
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
            # newsletter, text version, the sign-up's address and page, its confirmation:
            # none for an import (NULL)
            {
                "subscriber_id": sid,
                "list_name": list_name,
                "source": "import",
                "statement": consent,
                "created_at": now,
            }
            for sid in joining
        ],
    )
