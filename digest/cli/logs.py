"""How the CLI writes log lines: each with its UTC time, as text or as one JSON object.

Both formatters write the record as the redacting record factory left it (see
:func:`digest.core.redact.install_log_redaction`): message and traceback are already
masked, so neither formats anything from the raw arguments or exception.
"""

from __future__ import annotations

import json
import logging
import time

__all__ = ["LOG_FORMATS", "log_handler"]

#: ISO 8601 in UTC: one zone for every line, whatever the machine's or a newsletter's.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
LOG_FORMATS = ("text", "json")


def _utc(seconds: float | None) -> time.struct_time:
    return time.gmtime(seconds)


class TextFormatter(logging.Formatter):
    """``2026-12-05T18:30:00Z INFO digest.ops.jobs: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", TIME_FORMAT)
        self.converter = _utc


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and exc_text if any."""

    def __init__(self) -> None:
        super().__init__()
        self.converter = _utc

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, TIME_FORMAT),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_text"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


def log_handler(log_format: str) -> logging.Handler:
    """A handler on stderr writing lines in ``log_format`` (one of :data:`LOG_FORMATS`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    return handler
