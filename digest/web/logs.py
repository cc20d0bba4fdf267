"""Keep the signed tokens of reader links out of every log line.

A token in a link is the reader's key to their subscription; an access log that keeps it
hands that key to whoever reads the log. The path segment after each token prefix is
replaced by ``[token]``, wherever in a log record it appears: message, arguments,
formatted traceback.

``digest serve`` installs this itself, and has uvicorn's loggers write through digest's
own handler (:func:`log_uvicorn_through_root`): one format, UTC times, ``--log-format
json`` for every line. Whoever serves :func:`~digest.web.create_app` with a uvicorn of
their own passes ``log_config=uvicorn_log_config()``, or calls
:func:`install_token_redaction` after configuring logging their own way.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

__all__ = [
    "TOKEN_PREFIXES",
    "REDACTED_PREFIXES",
    "CLICK_PREFIX",
    "TokenRedactingFilter",
    "normalised_path",
    "redact_tokens",
    "install_token_redaction",
    "log_uvicorn_through_root",
    "uvicorn_log_config",
]

#: First path segments whose next segment is a token; shared with the rate limit.
TOKEN_PREFIXES = ("unsubscribe", "preferences", "confirm")
#: Also redacted: a counted article link's token names no reader, but next to the client
#: address in an access log line it would say who opened which article.
CLICK_PREFIX = "r"
REDACTED_PREFIXES = (*TOKEN_PREFIXES, CLICK_PREFIX)

PLACEHOLDER = "[token]"

_TOKEN_SEGMENT = re.compile(
    "(/(?:" + "|".join(REDACTED_PREFIXES) + r")/)[^/]+",
    re.IGNORECASE,  # no route answers /Unsubscribe/..., but its token is still a token
)
#: A path in a log line (with the scheme and host before it, if any), up to its query.
_PATH_IN_TEXT = re.compile(
    r"(?P<origin>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s\"'<>?#]*)?(?P<path>/[^\s\"'<>?#]*)"
)
#: Characters a redacted path keeps as they are; anything else is percent-encoded, so a
#: decoded line break or quote cannot end up in a log line.
_SAFE_IN_PATH = "/[]:@!$&'()*+,;=-._~"
#: Percent-encoding is undone at most this often: routing decodes once, and a path
#: encoded over and over must not make a log line slow.
_DECODINGS = 4
#: A path that starts with "/" and has none of these is its own normalised form.
_UNUSUAL = ("%", "//", "/.")


def normalised_path(path: str) -> str:
    """``path`` as a route would see it at most: percent-decoded (also when encoded more
    than once), without empty and ``.`` segments, ``..`` applied."""
    if path.startswith("/") and not any(mark in path for mark in _UNUSUAL):
        return path  # nothing to decode, no empty, "." or ".." segment: the usual case
    for _ in range(_DECODINGS):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    trailing = "/" if segments and path.endswith("/") else ""
    return "/" + "/".join(segments) + trailing


def _redact_path(match: re.Match[str]) -> str:
    path = normalised_path(match["path"])
    redacted = _TOKEN_SEGMENT.sub(rf"\g<1>{PLACEHOLDER}", path)
    if redacted == path:
        return match[0]  # nothing to hide: the line says what it said
    return (match["origin"] or "") + quote(redacted, safe=_SAFE_IN_PATH)


def redact_tokens(text: str) -> str:
    """The text with the token segment of every reader link replaced by ``[token]``.

    Each path is looked at as the app routes it (:func:`normalised_path`), so that
    ``/%75nsubscribe/…``, ``/unsubscribe%2F…`` or ``/unsubscribe//…`` hide their token
    too; a path with a token is logged in that normalised form.
    """
    return _PATH_IN_TEXT.sub(_redact_path, text)


def _redacted(value: Any) -> Any:
    return redact_tokens(value) if isinstance(value, str) else value


#: Set on a record once its tokens are redacted.
_REDACTED = "_digest_tokens_redacted"


class TokenRedactingFilter(logging.Filter):
    """Rewrites a record in place so that no handler after it sees a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _REDACTED, False):
            return True  # a filter on the logger did it, one on the handler need not
        setattr(record, _REDACTED, True)
        record.msg = _redacted(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {key: _redacted(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            # uvicorn's access formatter unpacks these by position: keep the shape.
            record.args = tuple(_redacted(value) for value in record.args)
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the traceback is redacted once here.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = _redacted(record.exc_text)
        record.stack_info = _redacted(record.stack_info)
        return True


_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def install_token_redaction() -> None:
    """Redact tokens on uvicorn's loggers and on every handler configured so far.

    Filters on a logger only see records logged through that very logger, so the
    handlers of the root logger (where ``digest.*`` records end up) get the filter too.
    Call it after logging is configured; handlers added later are not covered.
    """
    redacting = TokenRedactingFilter()
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        _add_once(logger, redacting)
        for handler in logger.handlers:
            _add_once(handler, redacting)
    for handler in logging.getLogger().handlers:
        _add_once(handler, redacting)


def _add_once(target: logging.Filterer, redacting: TokenRedactingFilter) -> None:
    if not any(isinstance(f, TokenRedactingFilter) for f in target.filters):
        target.addFilter(redacting)


def log_uvicorn_through_root(level: int = logging.INFO) -> None:
    """Send uvicorn's log records to the root logger's handlers, from ``level`` up.

    Its loggers keep no handler of their own and propagate, so its lines (startup,
    errors, the access log) come out formatted like every other line of the process.
    Serve with ``log_config=None`` then, so that uvicorn does not configure them again.
    """
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(level)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with token redaction on each of its handlers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": TokenRedactingFilter}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    return config
