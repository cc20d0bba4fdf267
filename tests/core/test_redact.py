"""Secrets stay out of messages: URL masking, the redactor, log records, Store.open errors."""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.core.errors import ConfigError, StoreError
from digest.core.redact import MASK, Redactor, install_log_redaction, redact_url, url_password
from digest.store import Store, resolve_store_url

SECRET = "p@ss/w:rd Ü-42"
QUOTED = "p%40ss%2Fw%3Ard%20%C3%9C-42"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://digest:hunter22@db:5432/x", "postgresql+psycopg://digest:***@db:5432/x"),
        ("postgresql+psycopg://digest:hunter22@db:port/x", "postgresql+psycopg://digest:***@db:port/x"),
        (f"postgresql://digest:{QUOTED}@db/x", "postgresql://digest:***@db/x"),
        ("postgresql://u@db/x?sslmode=require&password=hunter22", "postgresql://u@db/x?sslmode=require&password=***"),
        ("https://reader:hunter22@feeds.example/a@b", "https://reader:***@feeds.example/a@b"),
        ("https://example.org/path@2x.png", "https://example.org/path@2x.png"),
        ("sqlite:///digest.db", "sqlite:///digest.db"),
        ("https://user@example.org/", "https://user@example.org/"),
    ],
)  # fmt: skip
def test_redact_url_masks_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_url_password_is_decoded() -> None:
    assert url_password(f"postgresql://digest:{QUOTED}@db/x") == SECRET
    assert url_password("postgresql://digest@db/x") is None
    assert url_password("postgresql://digest:pw@[bad/x") == "pw"


def test_redactor_masks_every_form_of_a_secret() -> None:
    redact = Redactor()
    redact.add(SECRET, "", None, "   ")
    auth = base64.b64encode(SECRET.encode()).decode()
    text = f"a {SECRET} b {QUOTED} c {auth} d {SECRET!r} e mailto://x:other@h/"
    masked = redact(text)
    assert masked == f"a {MASK} b {MASK} c {MASK} d '{MASK}' e mailto://x:***@h/"


@pytest.fixture
def log_redaction() -> Iterator[Redactor]:
    before = logging.getLogRecordFactory()
    redact = Redactor()
    install_log_redaction(redact)
    install_log_redaction(redact)  # once is enough: not wrapped twice
    try:
        yield redact
    finally:
        logging.setLogRecordFactory(before)


def test_log_records_and_their_tracebacks_are_masked(
    log_redaction: Redactor, caplog: pytest.LogCaptureFixture
) -> None:
    log_redaction.add("smtp-secret-1234")
    log = logging.getLogger("digest.test")
    try:
        try:
            raise ConnectionError("login smtp-secret-1234 refused")
        except ConnectionError as exc:
            raise RuntimeError("postgresql://u:db-secret@h/x failed") from exc
    except RuntimeError:
        with caplog.at_level(logging.DEBUG, logger="digest.test"):
            log.debug("password %s for %s", "smtp-secret-1234", "u", exc_info=True)
    [record] = caplog.records
    text = caplog.text
    assert "smtp-secret-1234" not in text and "db-secret" not in text
    assert "password *** for u" in text and "u:***@h" in text
    assert "The above exception was the direct cause" in text  # the chain is kept
    assert record.exc_info is None and record.exc_text


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql+psycopg://digest:hunter22@db:port/x", "has a port that is not a number"),
        ("nosuchdriver://digest:hunter22@db/x", "cannot use 'nosuchdriver://digest:***@db/x'"),
        ("digest:hunter22@db/x", "is not a database URL"),
    ],
)
def test_store_open_refuses_a_bad_url_as_a_config_error(url: str, problem: str) -> None:
    calls = [lambda: Store.open(url)]
    if "driver" not in url:  # resolving only parses; the driver is loaded on open
        calls.append(lambda: resolve_store_url(url, Path(".")))
    for call in calls:
        with pytest.raises(ConfigError) as info:
            call()
        assert info.value.key == "store.url" and info.value.exit_code == 2
        assert problem in str(info.value) and "hunter22" not in str(info.value)


def test_store_that_cannot_connect_names_the_url_without_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://digest:hunter22@127.0.0.1:{port}/x?connect_timeout=5"
    with pytest.raises(StoreError) as info:
        Store.open(url)
    message = str(info.value)
    assert message.startswith(
        f"cannot open the database postgresql+psycopg://digest:***@127.0.0.1:{port}/x"
    )
    assert "hunter22" not in message and "\n" not in message
