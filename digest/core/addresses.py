"""Subscriber addresses: the one check every address passes on its way in, and its key.

An address is stored as given (for display and the To header) and found by its key: the
whole address lower-cased, with the domain in its canonical (IDNA, Unicode) form. Two
spellings with the same key are one subscriber, so an unsubscribe reaches every spelling.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac

from email_validator import EmailNotValidError, validate_email

from digest.core.errors import AddressError

__all__ = ["NEEDS_SMTPUTF8", "address_hash", "checked_address", "email_key"]

#: Why an address with a non-ASCII local part is refused when the relay lacks SMTPUTF8.
NEEDS_SMTPUTF8 = (
    "non-ASCII local part needs an SMTPUTF8 relay; set smtp.smtputf8 = true if yours supports it"
)


def checked_address(raw: str, *, smtputf8: bool) -> str:
    """``raw`` as a valid, normalised address the relay will take, or AddressError.

    Without ``smtputf8`` the part before the @ must be ASCII (RFC 5321 without the
    SMTPUTF8 extension cannot carry it); a non-ASCII domain is fine, it goes out as IDNA.
    """
    address = raw.strip()
    if not address:
        raise AddressError(raw, "the address is empty")
    try:
        checked = validate_email(address, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        reason = " ".join(str(exc).split())
        raise AddressError(raw, f"{address!r} is not a valid email address: {reason}") from None
    if checked.smtputf8 and not smtputf8:
        raise AddressError(raw, f"{address!r}: {NEEDS_SMTPUTF8}")
    return checked.normalized


def email_key(address: str) -> str:
    """The key two spellings of one mailbox share: lower-cased, domain canonical.

    Never raises: an address that does not validate (stored before checks existed, or
    typed into a lookup) is keyed by its lower-cased text.
    """
    text = address.strip()
    if text.isascii() and "xn--" not in text.lower():
        return text.lower()  # what validation would give, without its cost
    with contextlib.suppress(EmailNotValidError):
        text = validate_email(text, check_deliverability=False, allow_smtputf8=True).normalized
    local, at, domain = text.rpartition("@")
    return f"{local.lower()}{at}{domain.lower()}" if at else text.lower()


def address_hash(address: str, key: str) -> str:
    """HMAC-SHA256 of the address's :func:`email_key` under ``key``, as 64 hex digits.

    What the suppression list keeps instead of the address: it matches every spelling
    of the mailbox, and without the key it cannot be tested against guessed addresses.
    """
    return hmac.new(key.encode(), email_key(address).encode(), hashlib.sha256).hexdigest()
