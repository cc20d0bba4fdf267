"""The suppression list, proof of consent and the reader's rights (DSGVO Art. 15, 17, 20).

Mixed into :class:`~digest.store.Store`. The suppression list holds a keyed hash of each
address (:func:`digest.core.addresses.address_hash` under ``secret_key``), never the address,
so that it can outlive an erasure. Changing ``secret_key`` therefore makes every
suppression unrecognisable: the key that signs links also guards this list.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from digest.core.addresses import address_hash, email_key
from digest.core.errors import StoreError
from digest.store import schema as t
from digest.store.sql import insert_ignoring_duplicates, transaction, utc_now

__all__ = [
    "REASONS",
    "SUBSCRIBER_STATUS",
    "Consent",
    "PrivacyStore",
    "is_hard_bounce",
]

#: Why an address is suppressed.
REASONS = ("unsubscribed", "hard_bounce", "soft_bounce", "complaint", "erased", "operator")

#: The status a subscriber takes when suppressed for every newsletter, by reason.
SUBSCRIBER_STATUS = {
    "unsubscribed": "unsubscribed",
    "hard_bounce": "bounced",
    "soft_bounce": "bounced",
    "complaint": "complained",
    "operator": "suppressed",
    "erased": "erased",
}

# An enhanced status code 5.1.x (bad destination mailbox or address, RFC 3463) at the
# start of a reply, after the basic code if the reply repeats it.
_HARD_BOUNCE = re.compile(r"\s*(?:5\d\d[ -])?5\.1\.\d{1,3}\b")


# Any enhanced status code at the start of a reply: when there is one, it decides.
_ENHANCED = re.compile(r"\s*(?:\d\d\d[ -])?[245]\.\d{1,3}\.\d{1,3}\b")
# What servers without enhanced codes (RFC 2034) say for an address that does not exist.
_UNKNOWN_USER = re.compile(
    r"\b(user unknown|unknown user|no such (user|mailbox|recipient)|"
    r"(mailbox|user|recipient|address) (does not|doesn't) exist|"
    r"unknown (recipient|mailbox))\b",
    re.IGNORECASE,
)


def is_hard_bounce(code: int | None, reply: str) -> bool:
    """A permanent refusal of the address itself, not of the sender: 5xx with 5.1.x, or
    a 550 without an enhanced code that says the user is unknown."""
    if code is None or not 500 <= code <= 599:
        return False
    if _HARD_BOUNCE.match(reply):
        return True
    return code == 550 and not _ENHANCED.match(reply) and bool(_UNKNOWN_USER.search(reply))


@dataclass(frozen=True)
class Consent:
    """Proof of one consent: what the reader agreed to, when, where and from where.

    ``source`` is 'signup' (a form, double opt-in) or 'import' (the operator's
    statement). The consent is for ``newsletter`` or for ``list_name``.
    """

    statement: str
    source: str = "signup"
    newsletter: str | None = None
    list_name: str | None = None
    text_version: str | None = None
    created_at: datetime | None = None
    ip: str | None = None
    user_agent: str | None = None
    page_url: str | None = None
    confirmed_at: datetime | None = None
    confirm_ip: str | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


#: The scope of the row that holds a check value of the list's key (no newsletter id
#: can have it: ids are slugs).
KEY_CHECK_SCOPE = "#key-check"
_KEY_CHECK_INPUT = b"digest.suppressions.key-check"


class PrivacyStore:
    """Suppression, consent, export and erasure on the store's engine."""

    engine: Engine
    secret_key: str | None

    # --- keys ----------------------------------------------------------------------------

    def address_hash(self, address: str) -> str:
        """The suppression list's key for ``address``; StoreError without a secret_key,
        or with another secret_key than the one the list was made with."""
        if not self.secret_key:
            raise StoreError(
                "the store was opened without secret_key, so it cannot read or write the "
                "suppression list"
            )
        return address_hash(address, self.secret_key)

    def check_suppression_key(self, key: str) -> None:
        """Refuse a key other than the one the suppression list was made with.

        Under another key no stored hash matches any address: every unsubscribed,
        bounced or erased reader would be mailed again, silently. The list keeps a check
        value of its key (a row in its own scope, which no address lookup reaches),
        written the first time a keyed store is opened. Called by ``Store.open``, outside
        any other transaction.
        """
        check = hmac.new(key.encode(), _KEY_CHECK_INPUT, hashlib.sha256).hexdigest()
        with self.engine.begin() as conn:
            kept = conn.execute(
                select(t.suppressions.c.address_hash).where(
                    t.suppressions.c.scope == KEY_CHECK_SCOPE
                )
            ).scalar()
            if kept is None:
                insert_ignoring_duplicates(
                    conn,
                    t.suppressions,
                    [
                        {
                            "address_hash": check,
                            "scope": KEY_CHECK_SCOPE,
                            "reason": "operator",
                            "created_at": utc_now(),
                        }
                    ],
                )
            elif not hmac.compare_digest(kept, check):
                raise StoreError(
                    "secret_key is not the key this database's suppression list was made "
                    "with: under it, every unsubscribed, bounced and erased address would be "
                    "mailed again; set the previous secret_key (DIGEST_SECRET_KEY)"
                )

    # --- suppression ---------------------------------------------------------------------

    def suppress(
        self,
        address: str,
        reason: str,
        newsletter: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Never mail ``address`` again (for ``newsletter``, or any when None); idempotent.

        A subscriber suppressed for every newsletter also leaves the 'active' status.
        Returns False when the address was already suppressed in that scope (the first
        entry, its reason and time, is kept).
        """
        now = now or utc_now()
        with self.engine.begin() as conn:
            added = suppress_in(conn, self.address_hash(address), reason, newsletter, now)
            if newsletter is None:
                leave_active(conn, email_key(address), reason, now)
        return added

    def is_suppressed(self, address: str, newsletter: str | None = None) -> bool:
        """True if ``address`` must not get ``newsletter`` (any newsletter when None:
        suppressed for all of them)."""
        scopes = [t.ALL_NEWSLETTERS] + ([newsletter] if newsletter else [])
        with self.engine.connect() as conn:
            found = conn.execute(
                select(t.suppressions.c.scope).where(
                    t.suppressions.c.address_hash == self.address_hash(address),
                    t.suppressions.c.scope.in_(scopes),
                )
            ).first()
        return found is not None

    def suppressions_of(self, address: str) -> list[dict[str, Any]]:
        """Every suppression entry of ``address``: scope, reason, time."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.suppressions)
                .where(t.suppressions.c.address_hash == self.address_hash(address))
                .order_by(t.suppressions.c.created_at, t.suppressions.c.scope)
            ).all()
        return [
            {
                "scope": "all" if r.scope == t.ALL_NEWSLETTERS else r.scope,
                "reason": r.reason,
                "created_at": _iso(r.created_at),
            }
            for r in rows
        ]

    def suppressed_hashes(self, newsletter: str | None = None) -> set[str]:
        """The hashes suppressed for every newsletter, and for ``newsletter`` if given."""
        scopes = [t.ALL_NEWSLETTERS] + ([newsletter] if newsletter else [])
        with self.engine.connect() as conn:
            return hashes_in_scopes(conn, scopes)

    def lift(self, address: str, consent_id: int, newsletter: str | None = None) -> bool:
        """Lift the suppression of ``address`` for ``newsletter`` (and every newsletter).

        Only a new double opt-in lifts a suppression: call this when the reader has
        confirmed it, with the id of the consent that records the confirmation (see
        :meth:`record_consent`). A consent that is not confirmed, or belongs to someone
        else, is a StoreError and lifts nothing. Returns whether anything was lifted.
        """
        digest_of = self.address_hash(address)
        with self.engine.begin() as conn:
            consent = conn.execute(
                select(t.consents.c.confirmed_at, t.subscribers.c.email_key, t.subscribers.c.id)
                .join(t.subscribers, t.subscribers.c.id == t.consents.c.subscriber_id)
                .where(t.consents.c.id == consent_id)
            ).first()
            if (
                consent is None
                or consent.confirmed_at is None
                or consent.email_key != email_key(address)
            ):
                raise StoreError(
                    f"consent {consent_id} is not a confirmed consent of this address; "
                    "a suppression is lifted only by a confirmed double opt-in"
                )
            lifted = lift_in(conn, digest_of, consent.id, newsletter)
        return lifted

    # --- consent -------------------------------------------------------------------------

    def record_consent(self, subscriber_id: int, consent: Consent) -> int:
        """Keep the proof of one consent of a subscriber; returns its id."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    t.consents.insert()
                    .values(subscriber_id=subscriber_id, **_consent_values(consent))
                    .returning(t.consents.c.id)
                ).scalar_one()
            )

    def confirm_consent(
        self, consent_id: int, *, ip: str | None, now: datetime | None = None
    ) -> None:
        """Record the confirmation (double opt-in) of a consent: its time and IP."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.consents)
                .where(t.consents.c.id == consent_id)
                .values(confirmed_at=now or utc_now(), confirm_ip=ip)
            )

    # --- the reader's rights -------------------------------------------------------------

    def personal_data(self, address: str) -> dict[str, Any] | None:
        """Everything held about ``address`` as one JSON-ready document (Art. 15, 20).

        The subscriber (None when there is none), their memberships, consents and
        deliveries; sign-ups, confirmed or waiting for their confirmation, and the mail
        queued for them; the suppression entries. None only when nothing at all is held.
        """
        key = email_key(address)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.subscribers).where(t.subscribers.c.email_key == key)
            ).first()
            subscriber = _subscriber_data(conn, row) if row is not None else _NO_SUBSCRIBER
            signups = conn.execute(
                select(t.signups)
                .where(t.signups.c.email_key == key)
                .order_by(t.signups.c.created_at, t.signups.c.id)
            ).all()
            queued = conn.execute(
                select(t.mail_queue)
                .where(t.mail_queue.c.recipient_key == key)
                .order_by(t.mail_queue.c.created_at, t.mail_queue.c.id)
            ).all()
        suppressions = self.suppressions_of(address)
        if row is None and not signups and not queued and not suppressions:
            return None
        return {
            **subscriber,
            # Sign-ups kept until their links expire (confirmed ones are in "consents").
            "signups": [
                {
                    "newsletter": u.newsletter,
                    "email": u.email,
                    "name": u.name,
                    "categories": sorted(u.categories or ()),
                    "regions": sorted(u.regions or ()),
                    "statement": u.statement,
                    "text_version": u.text_version,
                    "signed_up_at": _iso(u.created_at),
                    "ip": u.ip,
                    "user_agent": u.user_agent,
                    "page_url": u.page_url,
                    "confirmed_at": _iso(u.confirmed_at),
                }
                for u in signups
            ],
            "mail": [
                {
                    "kind": m.kind,
                    "newsletter": m.newsletter,
                    "queued_at": _iso(m.created_at),
                    "attempts": m.attempts,
                    "sent_at": _iso(m.sent_at),
                    "given_up_at": _iso(m.given_up_at),
                    "last_error": m.last_error,
                }
                for m in queued
            ],
            "suppressions": suppressions,
        }

    def erase(
        self, address: str, now: datetime | None = None, *, connection: Connection | None = None
    ) -> bool:
        """Delete the personal data of ``address`` and suppress it for good (Art. 17).

        The subscriber row (and any merged spelling of it) stays as a tombstone with no
        address, name or interests, so its id is never given to anybody else (links
        already sent carry it). Memberships, unsubscriptions, consents, sign-ups and queued
        mail are deleted;
        delivery rows keep issue, state and time for the counts but lose the address,
        SMTP reply, Message-ID and bounce diagnostic. A suppression (reason 'erased') is
        added in any case, also for an address nobody has. Returns whether anything
        about the address was held and erased: a subscriber, or only a sign-up waiting
        for its confirmation (with its queued mail). With ``connection`` it is done in
        the caller's transaction (the audit log's entry commits with it).
        """
        now = now or utc_now()
        digest_of = self.address_hash(address)
        with transaction(self.engine, connection) as conn:
            suppress_in(conn, digest_of, "erased", None, now)
            # Pending sign-ups and queued mail hold the address too.
            key = email_key(address)
            held = conn.execute(
                delete(t.mail_queue).where(t.mail_queue.c.recipient_key == key)
            ).rowcount
            held += conn.execute(delete(t.signups).where(t.signups.c.email_key == key)).rowcount
            conn.execute(
                delete(t.confirm_limits).where(t.confirm_limits.c.address_hash == digest_of)
            )
            sid = conn.execute(
                select(t.subscribers.c.id).where(t.subscribers.c.email_key == key)
            ).scalar()
            if sid is None:
                return bool(held)
            ids = [sid] + list(
                conn.execute(
                    select(t.subscribers.c.id).where(t.subscribers.c.merged_into == sid)
                ).scalars()
            )
            for table in (t.memberships, t.unsubscriptions, t.consents):
                conn.execute(delete(table).where(table.c.subscriber_id.in_(ids)))
            conn.execute(
                update(t.deliveries)
                .where(t.deliveries.c.subscriber_id.in_(ids))
                .values(email="", smtp_reply=None, message_id=None, bounce_diagnostic=None)
            )
            for tombstone in ids:
                conn.execute(
                    update(t.subscribers)
                    .where(t.subscribers.c.id == tombstone)
                    .values(
                        email=f"erased:{tombstone}",
                        email_key=None,
                        merged_into=None,
                        name="",
                        locale=None,
                        categories=[],
                        regions=[],
                        status="erased",
                        updated_at=now,
                    )
                )
        return True


#: The subscriber's part of an export of an address no subscriber has.
_NO_SUBSCRIBER: dict[str, Any] = {
    "subscriber": None,
    "memberships": [],
    "unsubscribed": [],
    "consents": [],
    "deliveries": [],
}


def _subscriber_data(conn: Connection, row: Any) -> dict[str, Any]:
    """The subscriber's part of :meth:`PrivacyStore.personal_data`."""
    ids = [row.id] + list(
        conn.execute(
            select(t.subscribers.c.id).where(t.subscribers.c.merged_into == row.id)
        ).scalars()
    )
    memberships = conn.execute(
        select(t.memberships)
        .where(t.memberships.c.subscriber_id == row.id)
        .order_by(t.memberships.c.list_name)
    ).all()
    unsubscribed = conn.execute(
        select(t.unsubscriptions)
        .where(t.unsubscriptions.c.subscriber_id == row.id)
        .order_by(t.unsubscriptions.c.newsletter)
    ).all()
    consents = conn.execute(
        select(t.consents)
        .where(t.consents.c.subscriber_id.in_(ids))
        .order_by(t.consents.c.created_at, t.consents.c.id)
    ).all()
    deliveries = conn.execute(
        select(t.deliveries, t.issues.c.newsletter, t.issues.c.key)
        .join(t.issues, t.issues.c.id == t.deliveries.c.issue_id)
        .where(t.deliveries.c.subscriber_id.in_(ids))
        .order_by(t.deliveries.c.updated_at, t.deliveries.c.id)
    ).all()
    other_spellings = sorted(
        conn.execute(
            select(t.subscribers.c.email).where(t.subscribers.c.merged_into == row.id)
        ).scalars()
    )
    return {
        "subscriber": {
            "id": row.id,
            "email": row.email,
            "other_spellings": other_spellings,
            "name": row.name,
            "locale": row.locale,
            "categories": sorted(row.categories or ()),
            "regions": sorted(row.regions or ()),
            "status": row.status,
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at),
        },
        "memberships": [{"list": m.list_name, "since": _iso(m.created_at)} for m in memberships],
        "unsubscribed": [
            {"newsletter": u.newsletter, "at": _iso(u.created_at)} for u in unsubscribed
        ],
        "consents": [
            {
                "source": c.source,
                "newsletter": c.newsletter,
                "list": c.list_name,
                "statement": c.statement,
                "text_version": c.text_version,
                "signed_up_at": _iso(c.created_at),
                "ip": c.ip,
                "user_agent": c.user_agent,
                "page_url": c.page_url,
                "confirmed_at": _iso(c.confirmed_at),
                "confirm_ip": c.confirm_ip,
            }
            for c in consents
        ],
        "deliveries": [
            {
                "newsletter": d.newsletter,
                "issue": d.key,
                "at": _iso(d.updated_at),
                "state": d.state,
                "email": d.email,
                "message_id": d.message_id,
                "smtp_code": d.smtp_code,
                "smtp_reply": d.smtp_reply,
                "attempts": d.attempts,
                "bounce": d.bounce,
                "bounce_status": d.bounce_status,
                "bounce_diagnostic": d.bounce_diagnostic,
                "bounced_at": _iso(d.bounced_at),
            }
            for d in deliveries
        ],
    }


def suppress_in(
    conn: Connection, digest_of: str, reason: str, newsletter: str | None, now: datetime
) -> bool:
    if reason not in REASONS:
        raise ValueError(f"unknown suppression reason {reason!r} (known: {', '.join(REASONS)})")
    scope = newsletter or t.ALL_NEWSLETTERS
    added = insert_ignoring_duplicates(
        conn,
        t.suppressions,
        [{"address_hash": digest_of, "scope": scope, "reason": reason, "created_at": now}],
    )
    return bool(added)


def lift_in(conn: Connection, digest_of: str, subscriber_id: int, newsletter: str | None) -> bool:
    """Lift a suppression in ``conn``, for the caller that holds a confirmed consent
    (see :meth:`PrivacyStore.lift`); returns whether a suppression was lifted."""
    scopes = [t.ALL_NEWSLETTERS] + ([newsletter] if newsletter else [])
    lifted = conn.execute(
        delete(t.suppressions).where(
            t.suppressions.c.address_hash == digest_of,
            t.suppressions.c.scope.in_(scopes),
        )
    ).rowcount
    if newsletter:
        conn.execute(
            delete(t.unsubscriptions).where(
                t.unsubscriptions.c.subscriber_id == subscriber_id,
                t.unsubscriptions.c.newsletter == newsletter,
            )
        )
    conn.execute(
        update(t.subscribers)
        .where(t.subscribers.c.id == subscriber_id, t.subscribers.c.status != "merged")
        .values(status="active", updated_at=utc_now())
    )
    return bool(lifted)


def leave_active(conn: Connection, key: str, reason: str, now: datetime) -> None:
    """An active subscriber with this key takes the status of ``reason``."""
    conn.execute(
        update(t.subscribers)
        .where(t.subscribers.c.email_key == key, t.subscribers.c.status == "active")
        .values(status=SUBSCRIBER_STATUS[reason], updated_at=now)
    )


def hashes_in_scopes(conn: Connection, scopes: Iterable[str]) -> set[str]:
    return set(
        conn.execute(
            select(t.suppressions.c.address_hash)
            .where(t.suppressions.c.scope.in_(list(scopes)))
            .distinct()
        ).scalars()
    )


def _consent_values(consent: Consent) -> dict[str, Any]:
    return {
        "newsletter": consent.newsletter,
        "list_name": consent.list_name,
        "source": consent.source,
        "statement": consent.statement,
        "text_version": consent.text_version,
        "created_at": consent.created_at or utc_now(),
        "ip": consent.ip,
        "user_agent": consent.user_agent,
        "page_url": consent.page_url,
        "confirmed_at": consent.confirmed_at,
        "confirm_ip": consent.confirm_ip,
    }
