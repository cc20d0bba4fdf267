"""Per-recipient signed tokens for the links in every message.

A token names one subscriber of one newsletter and is signed with ``secret_key``, with a
separate salt per purpose, so an unsubscribe token cannot be replayed as a preferences
token. The payload (subscriber id and newsletter id, and the reader's locale when it is
not the newsletter's) is readable by whoever holds the token, but cannot be changed or
forged without the key. The locale lets a page about the token speak the reader's
language without asking the store, so it reads the same whether the subscriber still
exists or not. Tokens do not expire: the
unsubscribe link of an old issue must keep working (RFC 8058).

The mailto address of ``List-Unsubscribe`` is the newsletter's own sender address with
the subject ``unsubscribe <token>``: that mailbox exists for every newsletter without
another setting, and the token in the subject says who asks, whichever address the
request is sent from. Whoever reads that mailbox (a person or a filter) passes the
token to :func:`read_token`.

The one token that names no reader is a click link's (:func:`click_url`): it names an
issue, one of its articles (by a short hash of the article's uid) and where the link was
(the digest as mailed, or its archive page). Every reader of an issue gets the same
link for an article, so a followed link says which article was opened, never by whom.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
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
    "read_token_locale",
    "unsubscribe_url",
    "preferences_url",
    "unsubscribe_mailto",
    "CLICK",
    "MAIL",
    "WEB",
    "ClickLink",
    "article_ref",
    "make_click_token",
    "read_click_token",
    "click_url",
]

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
CONFIRM = "confirm"
CLICK = "click"

#: Where a click link was: the digest as mailed, or the issue's page in the archive.
MAIL = "mail"
WEB = "web"
_CHANNEL_LETTERS = {MAIL: "m", WEB: "w"}
_CHANNELS = {letter: channel for channel, letter in _CHANNEL_LETTERS.items()}


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
def make_token(
    secret: str, purpose: str, subscriber_id: int, newsletter_id: str, locale: str | None = None
) -> str:
    """A URL-safe token naming one subscriber of one newsletter, for one purpose; with
    ``locale``, also the language the pages it opens speak.

    What ``URLSafeSerializer.dumps`` makes, less its try at zlib-compressing the payload:
    a payload this short (an id and a newsletter's name) does not get shorter, and the
    try took half the time of each token, two per message. ``loads`` reads either form.
    """
    serializer = _serializer(secret, purpose)
    fields: list[int | str] = [subscriber_id, newsletter_id, *([locale] if locale else [])]
    payload = serializer.serializer.dumps(fields).encode("utf-8")
    return _signer(secret, purpose).sign(base64_encode(payload)).decode("ascii")


def read_token(secret: str, purpose: str, token: str) -> tuple[int, str]:
    """The ``(subscriber_id, newsletter_id)`` a token names; :class:`TokenError` if invalid."""
    subscriber_id, newsletter_id, _locale = read_token_locale(secret, purpose, token)
    return subscriber_id, newsletter_id


# A one-click POST is read twice (its rate-limit budget, then the route): checked once.
# Only valid tokens are remembered (an exception is not), and only the latest few.
@functools.lru_cache(maxsize=256)
def read_token_locale(secret: str, purpose: str, token: str) -> tuple[int, str, str | None]:
    """What :func:`read_token` reads, and the locale the token names (None: the
    newsletter's); :class:`TokenError` if invalid."""
    try:
        payload = _serializer(secret, purpose).loads(token)
    except BadSignature:
        raise TokenError(purpose, "invalid or tampered with") from None
    match payload:
        case [int() as subscriber_id, str() as newsletter_id] if not isinstance(
            subscriber_id, bool
        ):
            return subscriber_id, newsletter_id, None
        case [int() as subscriber_id, str() as newsletter_id, str() as locale] if not isinstance(
            subscriber_id, bool
        ):
            return subscriber_id, newsletter_id, locale
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


def unsubscribe_url(
    settings: Settings, newsletter_id: str, subscriber_id: int, *, locale: str | None = None
) -> str:
    """The one-click unsubscribe link (RFC 8058) of one subscriber; ``locale``: the
    reader's, when it is not the newsletter's."""
    token = make_token(settings.secret_key, UNSUBSCRIBE, subscriber_id, newsletter_id, locale)
    return f"{settings.public_url.rstrip('/')}/unsubscribe/{token}"


def preferences_url(
    settings: Settings, newsletter_id: str, subscriber_id: int, *, locale: str | None = None
) -> str:
    """The link to one subscriber's preference centre; ``locale`` as for
    :func:`unsubscribe_url`."""
    token = make_token(settings.secret_key, PREFERENCES, subscriber_id, newsletter_id, locale)
    return f"{settings.public_url.rstrip('/')}/preferences/{token}"


@functools.lru_cache(maxsize=32)
def _address_of(sender: str) -> str:
    return parseaddr(sender)[1]


def unsubscribe_mailto(settings: Settings, newsletter_id: str, subscriber_id: int) -> str:
    """The mailto URL of ``List-Unsubscribe``: the sender, subject ``unsubscribe <token>``."""
    sender = _address_of(settings.newsletter(newsletter_id).sender)
    token = make_token(settings.secret_key, UNSUBSCRIBE, subscriber_id, newsletter_id)
    return f"mailto:{quote(sender, safe='@+')}?subject={quote(f'unsubscribe {token}')}"


def article_ref(uid: str) -> str:
    """An article's name in a click token: 12 URL-safe characters of the SHA-256 of its uid.

    Short, whatever the uid (often a URL); two articles of one issue sharing one is a
    2^-72 chance.
    """
    return base64.urlsafe_b64encode(hashlib.sha256(uid.encode()).digest()[:9]).decode("ascii")


@dataclass(frozen=True)
class ClickLink:
    """What a click token names: an issue, one of its articles, and the channel."""

    newsletter: str
    issue: str
    article: str  # :func:`article_ref` of the article's uid
    channel: str  # MAIL or WEB


def make_click_token(
    secret: str, newsletter_id: str, issue_key: str, uid: str, channel: str
) -> str:
    """The token of an article's link in one issue, the same for every reader."""
    payload = [newsletter_id, issue_key, article_ref(uid), _CHANNEL_LETTERS[channel]]
    encoded = _serializer(secret, CLICK).serializer.dumps(payload).encode("utf-8")
    return _signer(secret, CLICK).sign(base64_encode(encoded)).decode("ascii")


def read_click_token(secret: str, token: str) -> ClickLink:
    """What a click token names; :class:`TokenError` if it is invalid or was altered."""
    try:
        payload = _serializer(secret, CLICK).loads(token)
    except BadSignature:
        raise TokenError(CLICK, "invalid or tampered with") from None
    match payload:
        case [str() as newsletter_id, str() as issue_key, str() as ref, str() as letter] if (
            letter in _CHANNELS
        ):
            return ClickLink(newsletter_id, issue_key, ref, _CHANNELS[letter])
    raise TokenError(CLICK, "unexpected contents")


def click_url(
    settings: Settings, newsletter_id: str, issue_key: str, uid: str, channel: str
) -> str:
    """The counted link of an article in an issue: ``public_url/r/<token>``."""
    token = make_click_token(settings.secret_key, newsletter_id, issue_key, uid, channel)
    return f"{settings.public_url.rstrip('/')}/r/{token}"
