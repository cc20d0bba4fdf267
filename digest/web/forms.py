"""CSRF protection for the reader forms, without a session cookie.

Every form carries a token signed with ``secret_key`` over the path it posts to, with
its time; a POST must bring it back unchanged for the same path within
:data:`FORM_MAX_AGE`. Where the browser sends ``Origin`` (or ``Referer``), it must be
the site's own; ``Origin: null`` counts as another site. Another site can make a browser
post a form, but it can neither read nor forge the token. The one-click unsubscribe POST
is exempt by design (RFC 8058: a mail client posts it without a form).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

__all__ = [
    "CSRF_FIELD",
    "FORM_MAX_AGE",
    "HONEYPOT_FIELD",
    "csrf_token",
    "field_text",
    "form_is_genuine",
]

CSRF_FIELD = "csrf"
#: A visually hidden field people leave empty and form-filling robots do not.
HONEYPOT_FIELD = "website"
#: Seconds a form stays valid after it was shown.
FORM_MAX_AGE = 2 * 3600


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="digest.form")


def csrf_token(secret: str, path: str, bound: str = "") -> str:
    """The hidden field's value for a form that posts to ``path``.

    ``bound`` ties the token to something of the session too (the editors' area passes
    the hash of the session cookie), so a token shown to one login is no use to another.
    """
    token = _serializer(secret).dumps(f"{path}\n{bound}" if bound else path)
    assert isinstance(token, str)
    return token


def _same_origin(request: Request, public_url: str) -> bool:
    ours = urlsplit(public_url)
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value is None:
            continue
        # "null" comes from a sandboxed frame, a data: or file: page, or a page of another
        # site under Referrer-Policy no-referrer: never from our own forms, whose pages
        # send their origin (Referrer-Policy same-origin, see security.py).
        if value == "null":
            return False
        theirs = urlsplit(value)
        return (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)
    return True  # neither sent (privacy settings, an old browser): the token decides


def form_is_genuine(
    request: Request, token: str | None, secret: str, public_url: str, bound: str = ""
) -> bool:
    """True if the POSTed token was made for this path (and ``bound``), from our origin."""
    if not token or not _same_origin(request, public_url):
        return False
    try:
        path = _serializer(secret).loads(token, max_age=FORM_MAX_AGE)
    except BadSignature:
        return False
    expected = f"{request.url.path}\n{bound}" if bound else request.url.path
    return bool(path == expected)


def field_text(value: object) -> str:
    """A form or query value as text, without NUL characters (which PostgreSQL cannot
    store or compare: one in a name or a search would be an error, not an answer)."""
    return value.replace("\x00", "") if isinstance(value, str) else ""
