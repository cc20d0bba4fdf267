"""The audit log: who searched, viewed, exported, unsubscribed or erased a reader, and when.

Mixed into :class:`~digest.store.Store`. An entry names the reader by the keyed hash of
the address (:meth:`~digest.store.privacy.PrivacyStore.address_hash`, the suppression
list's) and by the subscriber id, never by the address. After an erasure the entries
stay: they are the proof that the request was handled (DSGVO Art. 5(2)), and they hold
nothing the erasure removed. The hash is the one the suppression list keeps for an
erased address anyway; the id is that of the subscriber's tombstone, which holds no
personal data; without ``secret_key`` neither leads back to the address.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from digest.store import schema as t
from digest.store.sql import transaction, utc_now

__all__ = ["ACTIONS", "AuditEntry", "AuditStore"]

#: What an entry records, as stored.
ACTIONS = ("search", "view", "export", "unsubscribe", "erase")


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit log."""

    id: int
    created_at: datetime
    editor: str
    action: str
    address_hash: str | None
    subscriber_id: int | None
    newsletter: str | None


class AuditStore:
    """The audit log on the store's engine."""

    engine: Engine
    address_hash: Callable[[str], str]  # PrivacyStore's

    def record_access(
        self,
        editor: str,
        action: str,
        address: str,
        *,
        subscriber_id: int | None = None,
        newsletter: str | None = None,
        now: datetime | None = None,
        connection: Connection | None = None,
    ) -> None:
        """Write that ``editor`` did ``action`` on the reader with ``address``.

        With ``connection`` the entry is written in the caller's transaction, and is kept
        only if what it records is.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r} (known: {', '.join(ACTIONS)})")
        with transaction(self.engine, connection) as conn:
            conn.execute(
                t.audit_log.insert().values(
                    created_at=now or utc_now(),
                    editor=editor,
                    action=action,
                    address_hash=self.address_hash(address),
                    subscriber_id=subscriber_id,
                    newsletter=newsletter,
                )
            )

    def audit_log(self, *, before: int | None = None, limit: int = 50) -> list[AuditEntry]:
        """The newest entries first; with ``before`` only those older than that entry."""
        c = t.audit_log.c
        query = select(t.audit_log).order_by(c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(c.id < before)
        with self.engine.connect() as conn:
            return [_entry(row) for row in conn.execute(query).all()]

    def audit_of(self, address: str) -> list[AuditEntry]:
        """Every entry about ``address`` (any spelling), the oldest first."""
        c = t.audit_log.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.audit_log)
                .where(c.address_hash == self.address_hash(address))
                .order_by(c.id)
            ).all()
        return [_entry(row) for row in rows]


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        row.id,
        row.created_at,
        row.editor,
        row.action,
        row.address_hash,
        row.subscriber_id,
        row.newsletter,
    )
