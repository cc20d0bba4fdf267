"""[unsubscribe_mailbox] and [bounces]: the mailboxes digest reads, and the VERP return path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from digest.config.declare import Setting, one_of, quoted

__all__ = [
    "UNSUBSCRIBE_MAILBOX",
    "BOUNCES",
    "MailboxSettings",
    "UnsubscribeMailboxSettings",
    "BounceSettings",
]

S = Setting


def _mailbox_settings(receives: str, password_variable: str) -> list[Setting]:
    """The keys of a mailbox digest reads: a local Maildir or an IMAP folder."""
    return [
        S(
            "maildir",
            str,
            "",
            f"Local Maildir that receives {receives} (relative to the config file); set "
            "this or `imap_host`, not both. Empty: none.",
        ),
        S(
            "imap_host",
            str,
            "",
            "IMAP server (implicit TLS, certificate verified) of the mailbox that receives "
            f"{receives}; empty: none.",
        ),
        S("imap_port", int, 993, "IMAP port (implicit TLS).", bounds=(1, 65535)),
        S("imap_username", str, "", "IMAP login; required with `imap_host`."),
        S(
            "imap_password",
            str,
            "",
            f"IMAP password; prefer {password_variable}.",
            secret=True,
        ),
        S("imap_folder", str, "INBOX", "IMAP folder to read."),
        S(
            "processed",
            str,
            "move",
            "What happens to a processed message: 'move' (mark seen and move "
            "to `processed_folder`), 'seen' (mark seen, leave in place) or 'delete' (expunges "
            "the folder). In a Maildir, 'move' and 'seen' both file it in cur/ with the S "
            "(seen) flag. Other messages stay unread where they are.",
            one_of("move", "seen", "delete"),
        ),
        S(
            "processed_folder",
            str,
            "digest-processed",
            "IMAP folder for processed messages with `processed = 'move'`; created if missing.",
        ),
        S(
            "interval_minutes",
            int,
            15,
            "`digest run` processes the mailbox this often (and once at start).",
            bounds=(1, 24 * 60),
        ),
    ]


UNSUBSCRIBE_MAILBOX = _mailbox_settings(
    "the mail to the List-Unsubscribe mailto address", "DIGEST_UNSUBSCRIBE_MAILBOX_IMAP_PASSWORD"
)

# A host name of two or more labels, in ASCII (an internationalised one in its xn-- form).
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TOP_LABEL = r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{4,200}}$)(?:{_LABEL}\.)+{_TOP_LABEL}")
# Lower case only: some MTAs lower-case the local part a bounce comes back to.
_PREFIX = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


def _bounce_domain_problem(value: str) -> str | None:
    if value and not _DOMAIN.fullmatch(value):
        return (
            f"{quoted(value)} is not a domain name in lower-case ASCII "
            "(such as 'bounces.example.org'; an umlaut domain in its xn-- form)"
        )
    return None


def _bounce_prefix_problem(value: str) -> str | None:
    if len(value) > 20 or not _PREFIX.fullmatch(value):
        return (
            f"{quoted(value)} must be 1 to 20 lower-case letters, digits, '_' or inner dots "
            "(a '-' follows it in the address)"
        )
    return None


BOUNCES = [
    S(
        "domain",
        str,
        "",
        "Domain of the VERP return path: each message goes out with the envelope sender "
        "`<prefix>-<delivery>-<signature>@<domain>`, so every bounce names the delivery it "
        "concerns and a forged one is recognised. Its MX must deliver to the mailbox below. "
        "Empty: the envelope sender stays the newsletter's sender address.",
        _bounce_domain_problem,
    ),
    S(
        "prefix",
        str,
        "bounce",
        "Start of the return path's local part, before the delivery number.",
        _bounce_prefix_problem,
    ),
    S(
        "soft_limit",
        int,
        3,
        "Soft bounces (4.x.x: mailbox full, server busy) of one address, each on another "
        "delivery, within `soft_days` that put it on the suppression list.",
        bounds=(1, 100),
    ),
    S(
        "soft_days",
        int,
        30,
        "The window, in days, in which `soft_limit` soft bounces are counted.",
        bounds=(1, 365),
    ),
] + _mailbox_settings(
    "the bounces (DSNs) and complaint reports (ARF) sent to the return path",
    "DIGEST_BOUNCES_IMAP_PASSWORD",
)


@dataclass(frozen=True)
class MailboxSettings:
    """A mailbox digest reads: a Maildir or an IMAP folder."""

    maildir: str = ""
    imap_host: str = ""
    imap_port: int = 993
    imap_username: str = ""
    imap_password: str = field(default="", repr=False)
    imap_folder: str = "INBOX"
    processed: str = "move"
    processed_folder: str = "digest-processed"
    interval_minutes: int = 15

    @property
    def configured(self) -> bool:
        return bool(self.maildir or self.imap_host)


@dataclass(frozen=True)
class UnsubscribeMailboxSettings(MailboxSettings):
    """The mailbox behind the List-Unsubscribe mailto address."""


@dataclass(frozen=True)
class BounceSettings(MailboxSettings):
    """The VERP return path and the mailbox its bounces and complaint reports reach."""

    domain: str = ""
    prefix: str = "bounce"
    soft_limit: int = 3
    soft_days: int = 30

    @property
    def verp(self) -> bool:
        """Whether each message goes out with its own signed return path."""
        return bool(self.domain)
