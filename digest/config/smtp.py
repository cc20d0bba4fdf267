"""[smtp], [[smtp.relays]], [dkim] and [retry]: how messages leave, signed, and are retried."""

from __future__ import annotations

from dataclasses import dataclass, field

from digest.config.declare import REQUIRED, Setting, one_of

__all__ = [
    "SMTP",
    "RELAY",
    "RETRY",
    "DKIM",
    "SmtpSettings",
    "RelaySettings",
    "DkimSettings",
    "RetrySettings",
]


S = Setting
SMTP = [
    S("host", str, "127.0.0.1", "SMTP relay host."),
    S(
        "port",
        int,
        8025,
        "SMTP relay port (25, 587 for STARTTLS, 465 for implicit TLS).",
        bounds=(1, 65535),
    ),
    S(
        "security",
        str,
        "none",
        "'none', 'starttls' or 'tls' (implicit TLS).",
        one_of("none", "starttls", "tls"),
    ),
    S("username", str, "", "Login for SMTP AUTH; empty for none."),
    S("password", str, "", "Password for SMTP AUTH; prefer DIGEST_SMTP_PASSWORD.", secret=True),
    S("timeout", (int, float), 30, "Seconds to wait for any SMTP reply.", bounds=(1, 900)),
    S(
        "pool_size",
        int,
        2,
        "Number of SMTP connections used at once and reused between messages.",
        bounds=(1, 100),
    ),
    S(
        "messages_per_connection",
        int,
        100,
        "Reconnect after this many messages on one connection.",
        bounds=(1, 100_000),
    ),
    S("validate_certs", bool, True, "Verify the server's TLS certificate."),
    S(
        "smtputf8",
        bool,
        False,
        "The relay supports SMTPUTF8 (RFC 6531), so subscribers may have addresses with "
        "non-ASCII characters before the @. While false, the import refuses such addresses "
        "(a non-ASCII domain is fine either way).",
    ),
    S(
        "max_per_second",
        (int, float),
        0,
        "Send at most this many messages a second, over all connections; 0 for no limit.",
        bounds=(0, 10_000),
    ),
    S(
        "max_per_hour",
        (int, float),
        0,
        "Send at most this many messages an hour (the relay's quota); 0 for no limit. "
        "The hour's allowance may go out at the pace of `max_per_second`.",
        bounds=(0, 10_000_000),
    ),
    S(
        "per_domain_limit",
        int,
        0,
        "At most this many messages in flight at once to one recipient domain (large "
        "mail providers refuse senders with many connections at once); 0 for no limit.",
        bounds=(0, 1_000),
    ),
    S(
        "processes",
        int,
        0,
        "Sender processes for a large issue (2,000 messages or more): 0 for one per CPU "
        "core, 1 to send from one process. They share the connections and limits above "
        "and take rows from the ledger, so each message still goes out once.",
        bounds=(0, 64),
    ),
]


RELAY = [
    S("host", str, REQUIRED, "Host of this relay."),
    S("port", int, 25, "Port of this relay.", bounds=(1, 65535)),
    S(
        "weight",
        int,
        1,
        "Share of the messages this relay gets, relative to the other relays' weights.",
        bounds=(1, 1_000),
    ),
    S(
        "pool_size",
        int,
        0,
        "Connections to this relay at once; 0 for `smtp.pool_size`.",
        bounds=(0, 100),
    ),
]


RETRY = [
    S(
        "first_minutes",
        (int, float),
        5,
        "Minutes before the first retry of a recipient whose server deferred the message "
        "(4xx) or whose connection dropped; each further retry waits twice as long, with "
        "up to a quarter added at random so retries spread out.",
        bounds=(0.1, 24 * 60),
    ),
    S(
        "max_minutes",
        (int, float),
        240,
        "Longest wait between two retries of one recipient, in minutes.",
        bounds=(1, 7 * 24 * 60),
    ),
    S(
        "max_attempts",
        int,
        12,
        "Attempts per recipient (the first one included) before the delivery is failed "
        "with the server's last reply.",
        bounds=(1, 100),
    ),
    S(
        "max_age_hours",
        (int, float),
        72,
        "Hours after a server first answered about it that a deferred delivery is given up "
        "and failed with the server's last reply (RFC 5321 suggests 4–5 days); an "
        "unreachable relay does not count.",
        bounds=(1, 30 * 24),
    ),
    S(
        "check_minutes",
        (int, float),
        1,
        "`digest run` looks this often for deferred deliveries of any unfinished issue that "
        "are due, and sends them.",
        bounds=(0.01, 24 * 60),
    ),
]


DKIM = [
    S(
        "key_file",
        str,
        "",
        "PEM file of the private key (RSA 2048 bits or Ed25519; relative to the config "
        "file) that signs every newsletter message (DKIM, relaxed/relaxed); empty: no "
        "signature. `digest dkim keygen` makes one.",
    ),
    S(
        "selector",
        str,
        "digest",
        "DKIM selector: the key is published at `<selector>._domainkey.<domain>`.",
    ),
    S("domain", str, "", "DKIM signing domain (d=); empty: the domain of the sender address."),
]


@dataclass(frozen=True)
class RelaySettings:
    """One of several relays; security, login and timeouts are those of [smtp]."""

    host: str
    port: int = 25
    weight: int = 1
    pool_size: int = 0


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)
    timeout: float
    pool_size: int
    messages_per_connection: int
    validate_certs: bool
    smtputf8: bool = False
    max_per_second: float = 0
    max_per_hour: float = 0
    per_domain_limit: int = 0
    processes: int = 0
    # With relays, messages go to them by weight instead of to host and port.
    relays: tuple[RelaySettings, ...] = ()


@dataclass(frozen=True)
class DkimSettings:
    """The key that signs outgoing newsletters (DKIM); no key file, no signature."""

    key_file: str = ""
    selector: str = "digest"
    domain: str = ""


@dataclass(frozen=True)
class RetrySettings:
    """When deferred deliveries are tried again, and when they are given up."""

    first_minutes: float = 5
    max_minutes: float = 240
    max_attempts: int = 12
    max_age_hours: float = 72
    check_minutes: float = 1
