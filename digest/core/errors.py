"""One exception tree for digest, rooted in :class:`DigestError`.

Each exception keeps the facts it reports as attributes, so callers can act on them
without parsing the message. The CLI turns any ``DigestError`` into one line on stderr.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = [
    "DigestError",
    "for_editors",
    "ConfigError",
    "StoreError",
    "SourceError",
    "SourceStatusError",
    "ComposeError",
    "RenderError",
    "ImportRowError",
    "AddressError",
    "SendError",
    "SendTimeout",
    "TransportUnavailable",
    "SenderRefused",
]


E = TypeVar("E", bound="DigestError")


class DigestError(Exception):
    """Base of every error digest reports to its user.

    The message is English, for the command line and the log. An error an editor may
    meet in the editors' area also carries what to tell them (:func:`for_editors`).
    """

    exit_code = 1
    #: A message id with ``%(name)s`` placeholders, and their values; None: not said.
    editors_text: tuple[str, dict[str, object]] | None = None


def for_editors(error: E, text: str, **values: object) -> E:
    """``error``, carrying ``text`` (a message id, filled from ``values``) for editors."""
    error.editors_text = (text, values)
    return error


class ConfigError(DigestError, ValueError):
    """A key in the configuration is unknown, missing or has a wrong value."""

    exit_code = 2

    def __init__(self, key: str, problem: str, *, path: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{key}: {problem}")


class StoreError(DigestError):
    """The database could not be opened, migrated or written."""


class SourceError(DigestError):
    """A source could not be fetched or parsed."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"source {source!r}: {reason}")


class SourceStatusError(SourceError):
    """A source's server answered with an HTTP status other than success or a redirect."""

    def __init__(self, source: str, reason: str, status: int) -> None:
        self.status = status
        super().__init__(source, reason)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.source, self.reason, self.status))


class ComposeError(DigestError):
    """An issue could not be composed (e.g. an unknown week or newsletter)."""


class RenderError(DigestError):
    """A template failed to load, parse or render."""

    def __init__(self, template: str, problem: str, line: int | None = None) -> None:
        self.template = template
        self.problem = problem
        self.line = line
        where = f"{template}, line {line}" if line else template
        super().__init__(f"template {where}: {problem}")


class ImportRowError(DigestError, ValueError):
    """One row of a subscriber import is invalid."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


class AddressError(DigestError, ValueError):
    """An email address cannot be taken: invalid, or more than the relay can carry."""

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        self.problem = problem
        super().__init__(problem)


class SendError(DigestError):
    """A message could not be handed to the mail server."""

    #: True when nothing of the message reached the server (no session could be
    #: opened), so another relay may take it without any risk of a duplicate.
    unsent: bool = False

    def __init__(self, message: str, *, code: int | None = None, reply: str = "") -> None:
        self.code = code
        self.reply = reply
        super().__init__(message)

    @property
    def temporary(self) -> bool:
        """True when a later attempt may succeed (4xx replies, lost connections)."""
        return self.code is None or 400 <= self.code < 500


class SendTimeout(SendError, TimeoutError):
    """The mail server did not answer in time."""


class TransportUnavailable(SendError, ConnectionError):
    """No connection to the mail server could be made or kept."""


class RelayConfigError(TransportUnavailable):
    """The relay cannot be used as configured: refused connection, failed login, no
    STARTTLS, an invalid certificate. Not temporary: ``setting`` names what to check."""

    def __init__(self, message: str, *, setting: str, code: int | None = None, reply: str = ""):
        self.setting = setting
        super().__init__(f"{message}; check {setting}", code=code, reply=reply)

    @property
    def temporary(self) -> bool:
        return False


class SenderRefused(SendError):
    """The server refuses our side of the exchange (MAIL FROM, relaying, policy 5.7.x).

    Nothing is wrong with the recipient: the run stops and their delivery stays pending.
    """


class EditorialError(DigestError):
    """An editor's request that cannot be carried out: an unknown editor, a bad value."""


class IssueReadOnly(EditorialError):
    """An issue that has gone out (or is going out) cannot be edited or approved again."""


class NotApproved(DigestError):
    """An issue of a newsletter with ``review = "required"`` that no editor approved."""
