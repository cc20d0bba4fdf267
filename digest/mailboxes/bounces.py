"""Bounces and complaints that come back after the SMTP transaction.

A relay that accepted a message can still fail to deliver it later and say so in a
bounce (a DSN, RFC 3464) to the envelope sender; a mailbox provider reports a reader's
"this is spam" click in a complaint report (ARF, RFC 5965). Both reach the return path.

With ``[bounces] domain`` set, each message goes out with its own return path (VERP):
``<prefix>-<delivery id>-<signature>@<domain>``. The signature is an HMAC of the delivery
id under ``secret_key``, in lower-case base32 (some MTAs lower-case the local part), so
only digest can make an address that names a delivery: a forged bounce suppresses nobody.

A report without such a return path (no ``[bounces] domain``, a complaint loop that
strips it) is matched by the Message-ID of the returned message, and only when the
recipient it names (a DSN's ``Original-Recipient`` or ``Final-Recipient``; an ARF's
``Original-Rcpt-To`` or the returned message's To) is that delivery's address too. A
Message-ID is no secret from its reader, so it alone must not let anyone act on
another's delivery: each carries 122 random bits or more of its own (see
:class:`~digest.store.ledger.MessageIdPattern`), and the address must agree besides.

:func:`process_bounces` reads the unread messages of the bounce mailbox (a Maildir or
IMAP, through :mod:`digest.mailboxes.mailbox`), finds the delivery each concerns (by its return
path, else by Message-ID and recipient as above), and records the outcome on that
delivery row (:meth:`~digest.store.Store.record_bounce`): a hard bounce (5.x.x) or a
complaint puts the address on the suppression list at once; soft bounces (4.x.x) do so
past ``soft_limit`` within ``soft_days``; a policy refusal (5.7.x: our sending, not the
address, was refused) and a delay warning are recorded only. Bounces that are not
RFC 3464 DSNs are read with flufl.bounce.

Idempotent like the unsubscribe mailbox: a processed message is marked (no longer
unread), recording the same bounce twice changes nothing, and anything not understood
(no report, no known delivery, a forged return path, a recipient that is not the
delivery's) stays unread for a person.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from enum import Enum

from digest.config import BounceSettings, NewsletterSettings, Settings
from digest.core.addresses import email_key
from digest.mailboxes.mailbox import (
    ImapMailbox,
    Mailbox,
    MaildirMailbox,
    open_configured,
    process_unread,
)
from digest.store import Store

__all__ = [
    "BounceOutcome",
    "BounceReport",
    "BounceResult",
    "ForgedReturnPath",
    "Report",
    "delivery_in_return_path",
    "open_bounce_mailbox",
    "process_bounces",
    "read_report",
    "return_path",
    "verp_address",
]

BOUNCE_MAILBOX = "bounce mailbox"

# 80 bits of HMAC-SHA256: 16 base32 characters, no padding. With a 20-character prefix
# and a 15-digit id the local part stays well under the 64 characters of RFC 5321.
_SIGNATURE_BYTES = 10
_SIGNATURE_CHARS = 16


def _signature(secret_key: str, delivery_id: int) -> str:
    mac = hmac.new(
        secret_key.encode("utf-8"), f"digest.return-path:{delivery_id}".encode(), hashlib.sha256
    ).digest()[:_SIGNATURE_BYTES]
    return base64.b32encode(mac).decode("ascii").lower()


def verp_address(bounces: BounceSettings, secret_key: str, delivery_id: int) -> str:
    """The signed return path that names ``delivery_id``."""
    signature = _signature(secret_key, delivery_id)
    return f"{bounces.prefix}-{delivery_id}-{signature}@{bounces.domain}"


def return_path(settings: Settings, newsletter: NewsletterSettings, delivery_id: int) -> str:
    """The envelope sender (MAIL FROM) of one delivery.

    With ``[bounces] domain`` its own signed VERP address; otherwise the newsletter's
    sender address (its domain in ASCII), as the From header has it.
    """
    if settings.bounces.verp:
        return verp_address(settings.bounces, settings.secret_key, delivery_id)
    return sender_address(newsletter)


def sender_address(newsletter: NewsletterSettings) -> str:
    """The newsletter's sender address with its domain in ASCII, as the From header has it."""
    return f"{_local_part(newsletter.sender)}@{newsletter.sender_domain}"


@functools.lru_cache(maxsize=32)
def _local_part(sender: str) -> str:
    """The local part of the sender's address (parsed once: it is read for every message)."""
    return parseaddr(sender)[1].rpartition("@")[0]


def _verp_pattern(bounces: BounceSettings) -> re.Pattern[str]:
    return re.compile(
        rf"(?<![\w.+-]){re.escape(bounces.prefix)}-(?P<id>[0-9]{{1,18}})-"
        rf"(?P<signature>[a-z2-7]{{{_SIGNATURE_CHARS}}})@{re.escape(bounces.domain)}"
        r"(?![\w-]|\.\w)",
        re.IGNORECASE,
    )


def delivery_in_return_path(bounces: BounceSettings, secret_key: str, text: str) -> int | None:
    """The delivery id of a correctly signed return path in ``text``, or None.

    Raises :class:`ForgedReturnPath` when ``text`` holds return paths of this shape
    but none with a valid signature.
    """
    forged = False
    for match in _verp_pattern(bounces).finditer(text):
        delivery_id = int(match["id"])
        if hmac.compare_digest(match["signature"].lower(), _signature(secret_key, delivery_id)):
            return delivery_id
        forged = True
    if forged:
        raise ForgedReturnPath()
    return None


class ForgedReturnPath(Exception):
    """A return path of our shape whose signature is wrong."""


# --- reading a report ----------------------------------------------------------------------

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_BASIC_CODE = re.compile(r"\b([245])\d\d\b")


@dataclass(frozen=True)
class Report:
    """What one bounce or complaint report says about the message it returns.

    ``kind`` is one of :data:`digest.store.bounces.BOUNCE_KINDS`, or None for a report
    that tells of no failure (a delivery notice, a "not spam" report).
    """

    kind: str | None
    status: str | None = None
    diagnostic: str | None = None
    recipients: tuple[str, ...] = ()  # the addresses it says the returned message went to
    message_ids: tuple[str, ...] = ()
    returned_to: tuple[str, ...] = ()  # the To of the returned message, if it has one

    def agrees_with(self, address: str) -> bool:
        """Whether every address the report names is ``address``, and it names one.

        Compared by :func:`~digest.core.addresses.email_key`. A value that is no address
        (``<redacted>``) says nothing either way.
        """
        named = _readable(self.recipients)
        if not address or not named:
            return False
        wanted = email_key(address)
        return all(a == wanted for a in named + _readable(self.returned_to))


def _readable(values: tuple[str, ...]) -> list[str]:
    """The :func:`email_key` of each value that is an address."""
    keys = []
    for _, addr in getaddresses(list(values)):
        local, _, domain = addr.rpartition("@")
        if local and domain:
            keys.append(email_key(addr))
    return keys


def _kind_of_status(status: str | None, failed: bool) -> str:
    if status is None:
        return "hard" if failed else "soft"
    if status.startswith("5.7."):
        return "policy"
    return "hard" if status.startswith("5.") else "soft"


def _status_in(text: str) -> str | None:
    match = _STATUS.search(text)
    return ".".join(match.groups()) if match else None


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[:limit]}…"


def _field_value(value: str) -> str:
    """A DSN field's value without its type (``rfc822; a@b`` → ``a@b``)."""
    return value.partition(";")[2].strip() if ";" in value else value.strip()


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            return payload.decode("utf-8", "replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _field_blocks(part: Message) -> list[Message]:
    """The field groups of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parses delivery-status into blocks
        return [block for block in payload if isinstance(block, Message)]
    text = _part_text(part).replace("\r\n", "\n")
    return [HeaderParser().parsestr(block) for block in re.split(r"\n\s*\n", text) if block]


# A Message-ID header line of a message quoted in the text of a bounce (Exim, qmail).
_QUOTED_MESSAGE_ID = re.compile(r"^Message-ID:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def _returned_headers(msg: Message) -> Iterator[Message]:
    """The headers of the message a report returns (in full or its headers only)."""
    for part in msg.walk():
        if part is msg:
            continue
        if part.get_content_type() == "text/rfc822-headers":
            yield HeaderParser().parsestr(_part_text(part))
        elif part.get("Message-ID") and part.get("From"):  # a returned message/rfc822
            yield part


def _returned_to(msg: Message) -> tuple[str, ...]:
    """The To headers of the message a report returns."""
    return tuple(str(v) for headers in _returned_headers(msg) for v in headers.get_all("To", []))


def _returned_message_ids(msg: Message) -> tuple[str, ...]:
    """Message-IDs of the message a report returns (in full, its headers, or quoted)."""
    found: list[str] = []
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            found += _QUOTED_MESSAGE_ID.findall(_part_text(part))
    for headers in _returned_headers(msg):
        for value in headers.get_all("Message-ID", []):
            found += re.findall(r"<[^<>\s]+>", str(value))
    return tuple(dict.fromkeys(found))


def _dsn(msg: Message) -> Report | None:
    parts = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"]
    if not parts:
        return None
    best: Report | None = None
    rank = {"failed": 3, "delayed": 2}
    best_rank = 0
    recipients: list[str] = []
    for block in _field_blocks(parts[0])[1:] or _field_blocks(parts[0]):
        action = str(block.get("Action", "")).strip().lower()
        # Original-Recipient, where the relay kept it, is the address we sent to;
        # Final-Recipient may be where a forward took the message.
        recipient = _field_value(
            str(block.get("Original-Recipient") or block.get("Final-Recipient") or "")
        )
        if recipient:
            recipients.append(recipient)
        if rank.get(action, 1) <= best_rank:
            continue
        diagnostic = _one_line(_field_value(str(block.get("Diagnostic-Code", "")))) or None
        status = _status_in(str(block.get("Status", ""))) or (
            _status_in(diagnostic) if diagnostic else None
        )
        if action == "failed":
            kind: str | None = _kind_of_status(status, failed=True)
        elif action == "delayed":
            kind = "delayed"
        else:
            kind = None  # delivered, relayed, expanded: nothing went wrong
        best_rank = rank.get(action, 1)
        best = Report(kind, status, diagnostic)
    if best is None:
        return None
    return Report(
        best.kind,
        best.status,
        best.diagnostic,
        tuple(recipients),
        _returned_message_ids(msg),
        _returned_to(msg),
    )


def _arf(msg: Message) -> Report | None:
    parts = [p for p in msg.walk() if p.get_content_type() == "message/feedback-report"]
    if not parts:
        return None
    fields = Message()
    for block in _field_blocks(parts[0]):
        for name, value in block.items():
            fields[name] = value
    feedback = str(fields.get("Feedback-Type", "")).strip().lower()
    # The original To is the recipient an ARF always carries; Original-Rcpt-To is
    # optional. Where a provider redacts the address (Microsoft's JMRP) neither is read.
    returned_to = _returned_to(msg)
    named = [str(v) for v in fields.get_all("Original-Rcpt-To", [])] + list(returned_to)
    recipients = tuple(dict.fromkeys(addr for _, addr in getaddresses(named) if addr))
    kind = None if feedback == "not-spam" else "complaint"
    detail = f"{feedback or 'unknown'} report from {fields.get('User-Agent', 'an unnamed agent')}"
    return Report(
        kind, None, _one_line(detail), recipients, _returned_message_ids(msg), returned_to
    )


def _without_tracebacks(record: logging.LogRecord) -> bool:
    return record.exc_info is None


# flufl.bounce logs the traceback of every detector that fails before re-raising; the
# failure is handled below (the message is left for a person), so the traceback is noise.
logging.getLogger("flufl.bounce").addFilter(_without_tracebacks)


def _heuristic(msg: Message) -> Report | None:
    """A bounce that is no RFC 3464 DSN (old Exim, qmail, some Exchange), by flufl.bounce."""
    from flufl.bounce import all_failures

    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # noqa: BLE001 - see below
        # Some of flufl.bounce's detectors fail on what they did not expect (a raw
        # non-ASCII header, an odd structure); such a message is left for a person.
        return None
    if not temporary and not permanent:
        return None
    failed = bool(permanent)
    recipients = tuple(
        r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r)
        for r in sorted(permanent or temporary)
    )
    text = "\n".join(
        _part_text(p)
        for p in msg.walk()
        if p.get_content_maintype() == "text" and p.get_content_type() != "text/rfc822-headers"
    )
    status = _status_in(text)
    diagnostic = None
    for line in text.splitlines():
        if (status and status in line) or (not status and _BASIC_CODE.search(line)):
            diagnostic = _one_line(line)
            break
    # What flufl.bounce calls temporary failures are delay warnings: the relay goes on
    # trying. A permanent one with a 4.x.x code is a relay that gave up on a soft bounce.
    kind = _kind_of_status(status, failed=True) if failed else "delayed"
    return Report(
        kind, status, diagnostic, recipients, _returned_message_ids(msg), _returned_to(msg)
    )


def read_report(msg: Message) -> Report | None:
    """What a bounce or complaint report says, or None if ``msg`` is neither."""
    return _arf(msg) or _dsn(msg) or _heuristic(msg)


# --- processing the mailbox ----------------------------------------------------------------


class BounceOutcome(Enum):
    HARD = "hard bounce"
    SOFT = "soft bounce"
    POLICY = "refused by policy (5.7.x), address not suppressed"
    DELAYED = "delay warning"
    COMPLAINT = "complaint"
    NO_FAILURE = "report of no failure"
    DELIVERY_GONE = "its delivery is no longer in the store"
    FORGED = "return path with a wrong signature"
    UNKNOWN_DELIVERY = "report of no known delivery"
    RECIPIENT_MISMATCH = "Message-ID of a delivery, but not its recipient (maybe forged)"
    NOT_A_REPORT = "neither a bounce nor a complaint report"

    @property
    def processed(self) -> bool:
        return self not in _LEFT_ALONE


_LEFT_ALONE = {
    BounceOutcome.FORGED,
    BounceOutcome.UNKNOWN_DELIVERY,
    BounceOutcome.RECIPIENT_MISMATCH,
    BounceOutcome.NOT_A_REPORT,
}
_BY_KIND = {
    "hard": BounceOutcome.HARD,
    "soft": BounceOutcome.SOFT,
    "policy": BounceOutcome.POLICY,
    "delayed": BounceOutcome.DELAYED,
    "complaint": BounceOutcome.COMPLAINT,
}


@dataclass(frozen=True)
class BounceResult:
    """What became of one message of the bounce mailbox."""

    key: str
    outcome: BounceOutcome
    delivery_id: int | None = None
    status: str | None = None
    suppressed: str | None = None  # the suppression reason this message added


@dataclass
class BounceReport:
    """One run over the bounce mailbox: a result per unread message, in mailbox order."""

    dry_run: bool = False
    results: list[BounceResult] = field(default_factory=list)

    def count(self, *outcomes: BounceOutcome) -> int:
        return sum(1 for r in self.results if r.outcome in outcomes)

    @property
    def processed(self) -> list[BounceResult]:
        return [r for r in self.results if r.outcome.processed]

    @property
    def left_alone(self) -> list[BounceResult]:
        return [r for r in self.results if not r.outcome.processed]

    def summary(self) -> str:
        would = "would be " if self.dry_run else ""
        suppressed = sum(1 for r in self.results if r.suppressed)
        kinds = ", ".join(
            f"{self.count(outcome)} {outcome.name.lower().replace('_', ' ')}"
            for outcome in BounceOutcome
            if outcome.processed and self.count(outcome)
        )
        return (
            f"{len(self.results)} unread messages: {len(self.processed)} {would}processed"
            f"{f' ({kinds})' if kinds else ''}, {suppressed} addresses {would}suppressed, "
            f"{len(self.left_alone)} left alone"
        )


def process_bounces(
    settings: Settings,
    store: Store,
    mailbox: Mailbox,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> BounceReport:
    """Record every bounce and complaint among the unread messages; report each message.

    A message is processed (and marked so) when it is a report of a delivery found in
    the store. With ``dry_run`` nothing is written: the store answers as it would, then
    rolls back, and the mailbox is only read.
    """
    from datetime import UTC

    now = now or datetime.now(UTC)
    report = BounceReport(dry_run=dry_run)

    def handle(item: tuple[str, Message]) -> tuple[str, bool]:
        key, msg = item
        result = _process_one(settings, store, key, msg, now=now, dry_run=dry_run)
        report.results.append(result)
        return key, result.outcome.processed

    process_unread(mailbox, mailbox.unread_messages(), handle, dry_run=dry_run)
    return report


def _texts(msg: Message) -> Iterator[str]:
    """Every header value and text of ``msg`` and its parts, where a return path can be."""
    for part in msg.walk():
        for value in part.values():
            yield str(value)
        if not part.is_multipart():
            yield _part_text(part)


def _process_one(
    settings: Settings, store: Store, key: str, msg: Message, *, now: datetime, dry_run: bool
) -> BounceResult:
    found = read_report(msg)
    if found is None:
        return BounceResult(key, BounceOutcome.NOT_A_REPORT)
    bounces = settings.bounces
    delivery_id = None
    if bounces.verp:
        try:
            delivery_id = delivery_in_return_path(
                bounces, settings.secret_key, "\n".join(_texts(msg))
            )
        except ForgedReturnPath:
            return BounceResult(key, BounceOutcome.FORGED)
    if delivery_id is None:
        # No signed return path: the Message-ID is known to its reader, so the
        # recipient the report names must be the delivery's address as well.
        candidates = store.deliveries_with_message_ids(found.message_ids)
        if not candidates:
            return BounceResult(key, BounceOutcome.UNKNOWN_DELIVERY)
        delivery_id = next((d for d, address in candidates if found.agrees_with(address)), None)
        if delivery_id is None:
            return BounceResult(key, BounceOutcome.RECIPIENT_MISMATCH)
    if found.kind is None:
        return BounceResult(key, BounceOutcome.NO_FAILURE, delivery_id)
    recorded = store.record_bounce(
        delivery_id,
        found.kind,
        status=found.status,
        diagnostic=found.diagnostic,
        now=now,
        soft_limit=bounces.soft_limit,
        soft_since=now - timedelta(days=bounces.soft_days),
        dry_run=dry_run,
    )
    if recorded is None:
        return BounceResult(key, BounceOutcome.DELIVERY_GONE, delivery_id)
    return BounceResult(key, _BY_KIND[found.kind], delivery_id, found.status, recorded.suppressed)


def open_bounce_mailbox(settings: Settings) -> MaildirMailbox | ImapMailbox:
    """The configured bounce mailbox, open; a ConfigError if there is none."""
    return open_configured(
        settings, settings.bounces, "bounces", BOUNCE_MAILBOX, "Bounces and complaints"
    )
