"""Keep secrets out of every message, log line and traceback digest prints.

What is secret is declared in :mod:`digest.config` (settings with ``secret=True``, and the
password of any URL). This module only knows how to mask: :func:`redact_url` for one URL,
and :class:`Redactor` for any text, given the secret values it was told about. The CLI
keeps one Redactor, feeds it the environment and the loaded settings, and passes every
line it prints, every log record and every traceback through it.
"""

from __future__ import annotations

import base64
import logging
import re
import traceback
from urllib.parse import quote, unquote, urlsplit

__all__ = ["MASK", "Redactor", "redact_url", "url_password", "install_log_redaction"]

MASK = "***"

# scheme://user:password@ in any text. The password stops at "@", "/" or white space,
# so a path with an "@" in it is not mistaken for one; known passwords are masked by
# value as well, whatever they contain.
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:@/?#]*:)(?P<password>[^\s@/]+)(?=@)"
)
# password=... in a query string or a libpq connection string.
_SECRET_PARAMETER = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|sslpassword)=)(?P<value>[^&\s'\"]+)", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and secret query values as ``***``.

    Works on URLs that do not parse (a bad port, a stray bracket) as well; a URL without
    a password comes back unchanged.
    """
    if "://" in url:  # neither pattern matches text without it and without "="
        url = _USERINFO.sub(rf"\g<head>{MASK}", url)
    if "=" in url:
        url = _SECRET_PARAMETER.sub(rf"\g<head>{MASK}", url)
    return url


def url_password(url: str) -> str | None:
    """The password in ``url``'s user info (percent-decoded), if it has one."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        match = _USERINFO.search(url)
        return unquote(match["password"]) if match else None
    userinfo, at, _ = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return None
    return unquote(userinfo.partition(":")[2]) or None


class Redactor:
    """Replaces every secret it was given, and every password in a URL, by ``***``."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, *values: str | None) -> None:
        """Remember secret values, with the forms they take in URLs and SMTP AUTH."""
        for value in values:
            if not value or not value.strip():
                continue
            forms = {value, quote(value, safe=""), quote(value), repr(value)[1:-1]}
            # AUTH LOGIN sends the password in base64; a server may echo it in a reply.
            forms.add(base64.b64encode(value.encode()).decode("ascii"))
            self._secrets |= {form for form in forms if form}
        self._pattern = None

    def add_url(self, url: str | None) -> None:
        """Remember the password in ``url``, if it has one."""
        if url:
            self.add(url_password(url))

    def __call__(self, text: str) -> str:
        """``text`` with every known secret and every URL password masked."""
        if self._secrets:
            if self._pattern is None:
                longest_first = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, longest_first)))
            text = self._pattern.sub(MASK, text)
        return redact_url(text)

    def format_exception(self, exc: BaseException) -> str:
        """The traceback of ``exc``, chained exceptions included, with secrets masked."""
        return self("".join(traceback.format_exception(exc)))


def install_log_redaction(redactor: Redactor) -> None:
    """Mask secrets in every log record from now on, whichever handler writes it.

    A record factory sees each record once, before any handler: its message is formatted
    and masked (uvicorn's access records keep their arguments, each masked, as its
    formatter needs them), and its traceback is formatted and masked into ``exc_text`` (which every
    :class:`logging.Formatter` prints) with ``exc_info`` dropped, so no handler can format
    the raw exception again.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "redactor", None) is redactor:
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = current(*args, **kwargs)
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # uvicorn's access formatter unpacks these (address, method, path, version,
            # status) by position: keep the shape, mask each string.
            record.msg = redactor(str(record.msg))
            record.args = tuple(redactor(a) if isinstance(a, str) else a for a in record.args)
        else:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: keep what is there, masked
                message = f"{record.msg} {record.args}"
            record.msg, record.args = redactor(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redactor.format_exception(record.exc_info[1]).rstrip("\n")
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor(record.stack_info)
        return record

    factory.redactor = redactor  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
