"""Per-recipient signed tokens for the links in every message.

A token names one subscriber of one newsletter and is signed with ``secret_key``, with a
separate salt per purpose, so an unsubscribe token cannot be replayed as a preferences
token. The payload (subscriber id and newsletter id) is readable by whoever holds the
token, but cannot be changed or forged without the key. Tokens do not expire: the
unsubscribe link of an old issue must keep working (RFC 8058).

The mailto address of ``List-Unsubscribe`` is the newsletter's own sender address with
the subject ``unsubscribe <token>``: that mailbox exists for every newsletter without
another setting, and the token in the subject says who asks, whichever address the
request is sent from. Whoever reads that mailbox (a person or a filter) passes the
token to :func:`read_token`.
"""

from __future__ import annotations

import functools
from email.utils import parseaddr
from urllib.parse import quote

from itsdangerous import (
    BadSignature,
    SignatureExpired,
    Signer,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import base64_encode

from digest.config import Settings
from digest.core.errors import DigestError

__all__ = [
    "UNSUBSCRIBE",
    "PREFERENCES",
    "CONFIRM",
    "make_confirm_token",
    "read_confirm_token",
    "confirm_url",
    "TokenError",
    "make_token",
    "read_token",
    "unsubscribe_url",
    "preferences_url",
    "unsubscribe_mailto",
]

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
CONFIRM = "confirm"


class TokenError(DigestError):
    """A token is malformed, tampered with, or was made for another purpose."""

    def __init__(self, purpose: str, problem: str) -> None:
        self.purpose = purpose
        self.problem = problem
        super().__init__(f"{purpose} token: {problem}")


@functools.lru_cache(maxsize=16)
def _serializer(secret: str, purpose: str) -> URLSafeSerializer:
    if not purpose:
        raise ValueError("a token needs a purpose")
    return URLSafeSerializer(secret, salt=f"digest.{purpose}")


@functools.lru_cache(maxsize=16)
def _signer(secret: str, purpose: str) -> Signer:
    return _serializer(secret, purpose).make_signer()


# A message carries the unsubscribe token twice (the link and the mailto): made once.
@functools.lru_cache(maxsize=8)
def make_token(secret: str, purpose: str, subscriber_id: int, newsletter_id: str) -> str:
    """A URL-safe token naming one subscriber of one newsletter, for one purpose.

    What ``URLSafeSerializer.dumps`` makes, less its try at zlib-compressing the payload:
    a payload this short (an id and a newsletter's name) does not get shorter, and the
    try took half the time of each token, two per message. ``loads`` reads either form.
    """
    serializer = _serializer(secret, purpose)
    payload = serializer.serializer.dumps([subscriber_id, newsletter_id]).encode("utf-8")
    return _signer(secret, purpose).sign(base64_encode(payload)).decode("ascii")


def read_token(secret: str, purpose: str, token: str) -> tuple[int, str]:
    """The ``(subscriber_id, newsletter_id)`` a token names; :class:`TokenError` if invalid."""
    return _read_token(secret, purpose, token)


# A one-click POST is read twice (its rate-limit budget, then the route): checked once.
# Only valid tokens are remembered (an exception is not), and only the latest few.
@functools.lru_cache(maxsize=256)
def _read_token(secret: str, purpose: str, token: str) -> tuple[int, str]:
    try:
        payload = _serializer(secret, purpose).loads(token)
    except BadSignature:
        raise TokenError(purpose, "invalid or tampered with") from None
    match payload:
        case [int() as subscriber_id, str() as newsletter_id] if not isinstance(
            subscriber_id, bool
        ):
            return subscriber_id, newsletter_id
    raise TokenError(purpose, "unexpected contents")


def _timed(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=f"digest.{CONFIRM}")


def make_confirm_token(secret: str, signup_id: int, newsletter_id: str) -> str:
    """The token of a confirmation link: one sign-up, signed with its time."""
    token = _timed(secret).dumps([signup_id, newsletter_id])
    assert isinstance(token, str)
    return token


def read_confirm_token(secret: str, token: str, max_age_seconds: int) -> tuple[int, str]:
    """The ``(signup_id, newsletter_id)`` of a confirmation token younger than
    ``max_age_seconds``; :class:`TokenError` if it is invalid or expired.

    Unlike the other tokens this one expires: the sign-up it names is deleted then.
    """
    try:
        payload = _timed(secret).loads(token, max_age=max_age_seconds)
    except SignatureExpired:
        raise TokenError(CONFIRM, "expired") from None
    except BadSignature:
        raise TokenError(CONFIRM, "invalid or tampered with") from None
    match payload:
        case [int() as signup_id, str() as newsletter_id] if not isinstance(signup_id, bool):
            return signup_id, newsletter_id
    raise TokenError(CONFIRM, "unexpected contents")


def confirm_url(settings: Settings, newsletter_id: str, signup_id: int) -> str:
    """The link in a confirmation mail."""
    token = make_confirm_token(settings.secret_key, signup_id, newsletter_id)
    return f"{settings.public_url.rstrip('/')}/confirm/{token}"


def unsubscribe_url(settings: Settings, newsletter_id: str, subscriber_id: int) -> str:
    """The one-click unsubscribe link (RFC 8058) of one subscriber."""
    token = make_token(settings.secret_key, UNSUBSCRIBE, subscriber_id, newsletter_id)
    return f"{settings.public_url.rstrip('/')}/unsubscribe/{token}"


def preferences_url(settings: Settings, newsletter_id: str, subscriber_id: int) -> str:
    """The link to one subscriber's preference centre."""
    token = make_token(settings.secret_key, PREFERENCES, subscriber_id, newsletter_id)
    return f"{settings.public_url.rstrip('/')}/preferences/{token}"


@functools.lru_cache(maxsize=32)
def _address_of(sender: str) -> str:
    return parseaddr(sender)[1]


def unsubscribe_mailto(settings: Settings, newsletter_id: str, subscriber_id: int) -> str:
    """The mailto URL of ``List-Unsubscribe``: the sender, subject ``unsubscribe <token>``."""
    sender = _address_of(settings.newsletter(newsletter_id).sender)
    token = make_token(settings.secret_key, UNSUBSCRIBE, subscriber_id, newsletter_id)
    return f"mailto:{quote(sender, safe='@+')}?subject={quote(f'unsubscribe {token}')}"
