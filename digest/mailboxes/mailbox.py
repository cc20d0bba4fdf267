"""Apply the unsubscribe requests that arrive by mail at the List-Unsubscribe mailto address.

Every message carries ``mailto:<sender>?subject=unsubscribe <token>`` (see
:mod:`digest.audience.tokens`). :func:`process_mailbox` reads the unread messages of that
mailbox, headers only, and for each subject with a valid unsubscribe token withdraws the
subscriber it names and marks the message processed. Anything else (no token, a forged
token, one made for another purpose, a subject that cannot be read) is left exactly as
it was: unread, in place, for a person to look at.

Idempotent: a processed message is no longer unread, and unsubscribing twice changes
nothing, so a crash between the two only means the next run finds the subscriber
already unsubscribed and files the message then.

Two mailboxes share that logic: a local Maildir (:class:`MaildirMailbox`) and IMAP
(:class:`ImapMailbox`, a thin layer over imap-tools). No token ever reaches a log line
or the report. The bounce mailbox (:mod:`digest.mailboxes.bounces`) is read through the same two
classes, whole messages instead of headers (:meth:`MaildirMailbox.unread_messages`).
"""

from __future__ import annotations

import contextlib
import email.policy
import imaplib
import mailbox as stdlib_mailbox
import os
import re
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import parseaddr
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar

from digest.audience.tokens import UNSUBSCRIBE, TokenError, read_token
from digest.config import MailboxSettings, Settings
from digest.core.errors import ConfigError, DigestError
from digest.core.redact import MASK
from digest.store import Store

__all__ = [
    "Envelope",
    "Mailbox",
    "MailboxError",
    "MailboxReport",
    "MaildirMailbox",
    "ImapMailbox",
    "Outcome",
    "Result",
    "open_configured",
    "open_mailbox",
    "process_mailbox",
    "process_unread",
    "token_in_subject",
]


UNSUBSCRIBE_MAILBOX = "unsubscribe mailbox"


class MailboxError(DigestError):
    """A mailbox (``name``: which one) could not be opened, read or changed."""

    def __init__(self, where: str, problem: str, name: str = UNSUBSCRIBE_MAILBOX) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{name} {where}: {problem}")


@dataclass(frozen=True)
class Envelope:
    """What the processing needs of one message: its key, raw Subject and sender address."""

    key: str
    subject: str | bytes
    sender: str


class Mailbox(Protocol):
    """An open mailbox: its unread messages and a way to mark some of them processed."""

    def unread(self) -> Iterable[Envelope]: ...

    def unread_messages(self) -> Iterable[tuple[str, Message]]: ...

    def mark_processed(self, keys: Sequence[str]) -> None: ...


R = TypeVar("R")


def process_unread(
    mailbox: Mailbox,
    items: Iterable[R],
    handle: Callable[[R], tuple[str, bool]],
    *,
    dry_run: bool,
) -> None:
    """Call ``handle`` on each unread item; mark those it reports processed (``key, done``).

    Also after a failure: what was applied is filed, the rest stays unread. A dry run
    marks nothing.
    """
    done: list[str] = []
    try:
        for item in items:
            key, processed = handle(item)
            if processed:
                done.append(key)
    finally:
        if done and not dry_run:
            mailbox.mark_processed(done)


class Outcome(Enum):
    UNSUBSCRIBED = "unsubscribed"
    ALREADY_UNSUBSCRIBED = "already unsubscribed"
    UNKNOWN_SUBSCRIBER = "unknown subscriber"
    NO_TOKEN = "no unsubscribe token in the subject"
    INVALID_TOKEN = "invalid token (forged, damaged or not an unsubscribe token)"
    UNREADABLE_SUBJECT = "subject cannot be decoded"

    @property
    def processed(self) -> bool:
        return self in _PROCESSED


_PROCESSED = {Outcome.UNSUBSCRIBED, Outcome.ALREADY_UNSUBSCRIBED, Outcome.UNKNOWN_SUBSCRIBER}


@dataclass(frozen=True)
class Result:
    """What became of one message; ``subscriber_id`` and ``newsletter`` for valid tokens."""

    key: str
    sender: str
    outcome: Outcome
    subscriber_id: int | None = None
    newsletter: str | None = None


@dataclass
class MailboxReport:
    """One run over the mailbox: a result per unread message, in mailbox order."""

    dry_run: bool = False
    results: list[Result] = field(default_factory=list)

    def count(self, *outcomes: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome in outcomes)

    @property
    def processed(self) -> list[Result]:
        return [r for r in self.results if r.outcome.processed]

    @property
    def left_alone(self) -> list[Result]:
        return [r for r in self.results if not r.outcome.processed]

    def summary(self) -> str:
        would = "would be " if self.dry_run else ""
        return (
            f"{len(self.results)} unread messages: {len(self.processed)} {would}processed "
            f"({self.count(Outcome.UNSUBSCRIBED)} {would}unsubscribed, "
            f"{self.count(Outcome.ALREADY_UNSUBSCRIBED)} already unsubscribed, "
            f"{self.count(Outcome.UNKNOWN_SUBSCRIBER)} unknown subscriber), "
            f"{len(self.left_alone)} left alone"
        )


# "unsubscribe <token>", after any number of reply or forward prefixes ("Re:", "AW:",
# "Fwd:", "WG:", "SV:", …). A token is URL-safe base64 and dots (itsdangerous).
_SUBJECT = re.compile(
    r"(?:(?:re|aw|sv|vs|antw|fwd?|wg|tr)\s*(?:\[\d+\])?\s*:\s*)*"
    r"unsubscribe\s+(?P<token>[A-Za-z0-9_.\-]+)",
    re.IGNORECASE,
)


def token_in_subject(subject: str) -> str | None:
    """The token of an ``unsubscribe <token>`` subject (decoded), or None."""
    match = _SUBJECT.fullmatch(" ".join(subject.split()))
    return match["token"] if match else None


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _decoded(subject: str | bytes) -> str:
    """A raw Subject header value with its RFC 2047 encoded words decoded."""
    # Raw 8-bit bytes (undeclared UTF-8, or garbage) arrive as bytes or, from the
    # parser, as surrogate escapes; a token is ASCII, so replacing the rest loses nothing.
    if isinstance(subject, str):
        subject = subject.encode("utf-8", "surrogateescape")
    subject = subject.decode("utf-8", "replace")
    # Unfold first (RFC 5322 2.2.3): a mail client splits a long subject into several
    # encoded words on folded lines, often inside the token, and the whitespace between
    # two encoded words is then dropped in decoding (RFC 2047 6.2), not kept.
    subject = _FOLD.sub("", subject)
    return str(email.policy.default.header_factory("subject", subject))


def process_mailbox(
    settings: Settings, store: Store, mailbox: Mailbox, *, dry_run: bool = False
) -> MailboxReport:
    """Apply each valid unsubscribe token among the unread messages; report every message.

    A message is processed (and marked so) when its token is valid, whether or not the
    subscriber still exists or was already unsubscribed. With ``dry_run`` nothing is
    written: the store and the mailbox are only read.
    """
    report = MailboxReport(dry_run=dry_run)

    def handle(envelope: Envelope) -> tuple[str, bool]:
        result = _process_one(settings, store, envelope, dry_run=dry_run)
        report.results.append(result)
        return result.key, result.outcome.processed

    process_unread(mailbox, mailbox.unread(), handle, dry_run=dry_run)
    return report


def _process_one(settings: Settings, store: Store, envelope: Envelope, *, dry_run: bool) -> Result:
    sender = _printable(envelope.sender)
    try:
        subject = _decoded(envelope.subject)
    except (ValueError, LookupError):
        return Result(envelope.key, sender, Outcome.UNREADABLE_SUBJECT)
    token = token_in_subject(subject)
    if token is None:
        return Result(envelope.key, sender, Outcome.NO_TOKEN)
    try:
        subscriber_id, newsletter = read_token(settings.secret_key, UNSUBSCRIBE, token)
    except TokenError:
        return Result(envelope.key, sender, Outcome.INVALID_TOKEN)
    if store.unsubscribed(subscriber_id, newsletter):
        outcome = Outcome.ALREADY_UNSUBSCRIBED
    elif dry_run or store.unsubscribe(subscriber_id, newsletter) is not None:
        outcome = Outcome.UNSUBSCRIBED
    else:
        outcome = Outcome.UNKNOWN_SUBSCRIBER
    return Result(envelope.key, sender, outcome, subscriber_id, newsletter)


def _printable(text: str, limit: int = 100) -> str:
    """``text`` safe for a terminal line: control characters replaced, length bounded."""
    shown = "".join(c if c.isprintable() else "?" for c in text)
    return shown if len(shown) <= limit else f"{shown[:limit]}…"


# --- Maildir -------------------------------------------------------------------------------


class MaildirMailbox:
    """A local Maildir: unread means no S (seen) flag; processed moves to cur/ with S.

    Flags live in the file name (``cur/<key>:2,<flags>``); a message is only ever renamed,
    never rewritten. With ``processed = 'delete'`` it is removed instead.
    """

    def __init__(
        self, path: Path, processed: str = "move", name: str = UNSUBSCRIBE_MAILBOX
    ) -> None:
        self.path = path
        self.processed = processed
        where = f"maildir {str(path)!r}"
        try:
            self._box = stdlib_mailbox.Maildir(path, factory=None, create=False)
            self._box.keys()  # a missing new/ or cur/ shows here
        except (stdlib_mailbox.NoSuchMailboxError, FileNotFoundError, NotADirectoryError):
            raise MailboxError(
                where, "no such Maildir (a folder with cur/, new/, tmp/)", name
            ) from None
        except OSError as exc:
            raise MailboxError(where, exc.strerror or str(exc), name) from None

    def __enter__(self) -> MaildirMailbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self._box.close()

    def _subpath(self, key: str) -> str:
        # Maildir._lookup is private but has been there since Python 2; the public flag
        # methods of 3.13 rename in place and never move a message from new/ to cur/.
        subpath: str = self._box._lookup(key)  # type: ignore[attr-defined]
        return subpath

    def _flags(self, subpath: str) -> str:
        info = subpath.rpartition(self._box.colon)[2] if self._box.colon in subpath else ""
        return info[2:] if info.startswith("2,") else ""

    def _unread_keys(self) -> Iterator[str]:
        for key in sorted(self._box.keys()):
            flags = self._flags(self._subpath(key))
            if "S" not in flags and "T" not in flags:  # neither seen nor trashed
                yield key

    def unread(self) -> Iterator[Envelope]:
        parser = BytesHeaderParser(policy=email.policy.compat32)
        for key in self._unread_keys():
            with self._box.get_file(key) as fh:
                headers = parser.parse(fh)  # type: ignore[arg-type]
            subject = headers.get("Subject", "")
            yield Envelope(key, str(subject), parseaddr(str(headers.get("From", "")))[1])

    def unread_messages(self) -> Iterator[tuple[str, Message]]:
        """Each unread message whole, parsed as imap-tools parses it (compat32)."""
        parser = BytesParser(policy=email.policy.compat32)
        for key in self._unread_keys():
            with self._box.get_file(key) as fh:
                yield key, parser.parse(fh)  # type: ignore[arg-type]

    def mark_processed(self, keys: Sequence[str]) -> None:
        for key in keys:
            if self.processed == "delete":
                self._box.discard(key)
                continue
            flags = "".join(sorted(set(self._flags(self._subpath(key))) | {"S"}))
            target = os.path.join("cur", f"{key}{self._box.colon}2,{flags}")
            os.rename(self.path / self._subpath(key), self.path / target)


# --- IMAP ----------------------------------------------------------------------------------


class ImapMailbox:
    """A folder on an IMAP server (implicit TLS), through imap-tools.

    Only headers are fetched, with BODY.PEEK so nothing becomes seen by reading; unread
    means without ``\\Seen``. Processed messages get ``\\Seen`` and, as configured, are
    moved or deleted. Every failure is a :class:`MailboxError` naming host and user.
    """

    def __init__(
        self, settings: MailboxSettings, timeout: float = 60, name: str = UNSUBSCRIBE_MAILBOX
    ) -> None:
        from imap_tools import MailBox

        self.settings = settings
        self.name = name
        self.where = f"{settings.imap_username}@{settings.imap_host}:{settings.imap_port}"
        with self._errors("cannot connect"):
            # imaplib's own default context checks no certificate at all.
            self._box = MailBox(
                settings.imap_host,
                settings.imap_port,
                timeout=timeout,
                ssl_context=ssl.create_default_context(),
            )
        user, password = settings.imap_username, settings.imap_password
        try:
            with self._errors("login refused"):
                if user.isascii() and password.isascii():
                    self._box.login(user, password, initial_folder=settings.imap_folder)
                else:
                    self._box.login_utf8(user, password, initial_folder=settings.imap_folder)
        except MailboxError:
            # No __exit__ will run for a mailbox that never opened: close the connection.
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                self._box.client.shutdown()
            raise

    def __enter__(self) -> ImapMailbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType
    ) -> None:
        from imap_tools.errors import ImapToolsError

        # A connection already gone has nothing left to undo.
        with contextlib.suppress(ImapToolsError, imaplib.IMAP4.error, OSError):
            self._box.logout()

    def _errors(self, doing: str) -> _ImapErrors:
        return _ImapErrors(self.where, doing, self.settings.imap_password, self.name)

    def unread(self) -> list[Envelope]:
        from imap_tools import AND

        with self._errors(f"cannot read folder {self.settings.imap_folder!r}"):
            return [
                Envelope(m.uid or "", m.obj.get("Subject", ""), m.from_)
                for m in self._box.fetch(
                    AND(seen=False), headers_only=True, mark_seen=False, bulk=100
                )
            ]

    def unread_messages(self) -> Iterator[tuple[str, Message]]:
        """Each unread message whole; fetched with BODY.PEEK, so it stays unread."""
        from imap_tools import AND

        with self._errors(f"cannot read folder {self.settings.imap_folder!r}"):
            for m in self._box.fetch(AND(seen=False), mark_seen=False, bulk=20):
                yield m.uid or "", m.obj

    def mark_processed(self, keys: Sequence[str]) -> None:
        from imap_tools.errors import MailboxFlagError
        from imap_tools.utils import check_command_status

        uids = ",".join(keys)
        with self._errors("cannot mark processed messages"):
            # A plain UID STORE: imap-tools' flag() also expunges the whole folder.
            result = self._box.client.uid("STORE", uids, "+FLAGS", r"(\Seen)")
            check_command_status(result, MailboxFlagError)
            if self.settings.processed == "move":
                folder = self.settings.processed_folder
                if not self._box.folder.exists(folder):
                    self._box.folder.create(folder)
                self._box.move(list(keys), folder)
            elif self.settings.processed == "delete":
                self._box.delete(list(keys))


class _ImapErrors:
    """Turns imap-tools, imaplib and socket errors into one :class:`MailboxError`."""

    def __init__(self, where: str, doing: str, password: str, name: str) -> None:
        self.where, self.doing, self.password, self.name = where, doing, password, name

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        from imap_tools.errors import ImapToolsError

        if exc is None or not isinstance(exc, ImapToolsError | imaplib.IMAP4.error | OSError):
            return
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if self.password:
            detail = detail.replace(self.password, MASK)
        raise MailboxError(f"IMAP {self.where}", f"{self.doing}: {detail}", self.name) from None


def open_mailbox(settings: Settings) -> MaildirMailbox | ImapMailbox:
    """The configured unsubscribe mailbox, open; a ConfigError if there is none."""
    return open_configured(
        settings,
        settings.unsubscribe_mailbox,
        "unsubscribe_mailbox",
        UNSUBSCRIBE_MAILBOX,
        "Unsubscribing by mail",
    )


def open_configured(
    settings: Settings, config: MailboxSettings, section: str, name: str, readme: str
) -> MaildirMailbox | ImapMailbox:
    """The mailbox ``config`` (the table ``section``) describes, open; a ConfigError if
    it describes none (pointing to the README section ``readme``)."""
    if config.maildir:
        return MaildirMailbox(settings.resolve(config.maildir), config.processed, name)
    if config.imap_host:
        return ImapMailbox(config, name=name)
    raise ConfigError(
        section,
        f"not configured: set maildir or imap_host (see README.md, {readme})",
        path=str(settings.path) if settings.path else None,
    )
