"""A reader's requests under the DSGVO: what is held about them, and their erasure.

``digest subscribers export`` and the editors' area (``/admin/readers``) export the same
document (:func:`export_document`, written by :func:`export_json`): everything the store
holds about an address and the audit log's entries about it. What an admin does in the
editors' area is written to the audit log in the same transaction as the change itself
(:func:`unsubscribe_reader`, :func:`erase_reader`), or before the data is shown
(:func:`record`).

The export lists when and what was done with the reader's data, not which member of
staff did it: the people who act for the controller are not the reader's to know
(CJEU C-579/21, 22 June 2023); the audit log in ``/admin`` names them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from digest.store import Store
from digest.store.audit import AuditEntry

__all__ = [
    "erase_reader",
    "export_document",
    "export_json",
    "record",
    "unsubscribe_reader",
]

#: The store's part of the export of an address it holds nothing else about.
_NOTHING_HELD: dict[str, Any] = {
    "subscriber": None,
    "memberships": [],
    "unsubscribed": [],
    "consents": [],
    "deliveries": [],
    "signups": [],
    "mail": [],
    "suppressions": [],
}


def _audit_item(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.created_at.isoformat(),
        "action": entry.action,
        "newsletter": entry.newsletter,
    }


def export_document(store: Store, address: str) -> dict[str, Any] | None:
    """Everything held about ``address`` (DSGVO Art. 15, 20) with the audit log's entries
    about it under ``"audit"``; None when nothing at all is held."""
    held = store.personal_data(address)
    audit = store.audit_of(address)
    if held is None and not audit:
        return None
    return {**(held or _NOTHING_HELD), "audit": [_audit_item(e) for e in audit]}


def export_json(document: dict[str, Any]) -> str:
    """The export as it is written to a file or downloaded."""
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def record(
    store: Store,
    editor: str,
    action: str,
    address: str,
    subscriber_id: int | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """Write that ``editor`` searched, viewed or exported the reader with ``address``."""
    store.record_access(editor, action, address, subscriber_id=subscriber_id, now=now)


def unsubscribe_reader(
    store: Store,
    editor: str,
    subscriber_id: int,
    address: str,
    newsletter: str,
    *,
    now: datetime | None = None,
) -> None:
    """Withdraw the reader from ``newsletter`` as the unsubscribe link does, and record it."""
    with store.engine.begin() as conn:
        store.unsubscribe(subscriber_id, newsletter, now, connection=conn)
        store.record_access(
            editor,
            "unsubscribe",
            address,
            subscriber_id=subscriber_id,
            newsletter=newsletter,
            now=now,
            connection=conn,
        )


def erase_reader(
    store: Store,
    editor: str,
    address: str,
    subscriber_id: int | None = None,
    *,
    now: datetime | None = None,
) -> bool:
    """Erase ``address`` as ``digest subscribers erase`` does, and record it; whether
    anything was held (see :meth:`~digest.store.privacy.PrivacyStore.erase`)."""
    with store.engine.begin() as conn:
        erased = store.erase(address, now, connection=conn)
        store.record_access(
            editor, "erase", address, subscriber_id=subscriber_id, now=now, connection=conn
        )
    return erased
