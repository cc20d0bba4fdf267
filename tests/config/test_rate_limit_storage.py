"""web.rate_limit_storage: a `limits` storage URI, checked when the config is read; the
warning for a cluster whose replicas would each count in memory."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from digest.config import load_settings, parse_settings, secret_values
from digest.config.web import unshared_counts
from digest.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def demo(**web: Any) -> dict[str, Any]:
    data = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))
    return {**data, "web": web}


def error(data: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, environ=environ or {})
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_default_is_memory() -> None:
    settings = load_settings(ROOT / "config.toml", environ={})
    assert settings.web.rate_limit_storage == "memory://"
    assert unshared_counts(settings.web, settings.cluster.enabled) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("postgresql://db/digest", "is not a rate limit storage URI: 'postgresql://db/digest'"),
        ("127.0.0.1:6379", "is not a rate limit storage URI"),
        ("", "is not a rate limit storage URI: ''"),
        ("memcached://cache:11211", "is 'memcached://cache:11211', a storage that keeps no"),
        ("async+redis://cache:6379", "is an asyncio storage URI"),
    ],
)
def test_a_storage_the_limits_cannot_count_in_is_an_error_naming_the_key(
    value: str, problem: str
) -> None:
    message = error(demo(rate_limit_storage=value))
    assert message.startswith(f"web.rate_limit_storage: {problem}"), message


def test_a_password_in_the_uri_is_never_shown() -> None:
    # Refused (memcached keeps no moving window) with the password masked.
    message = error(demo(rate_limit_storage="memcached://u:geheim-42@cache:11211"))
    assert message.startswith("web.rate_limit_storage: "), message
    assert "geheim-42" not in message and "***" in message, message
    # Accepted, and kept out of the settings' repr.
    settings = parse_settings(demo(rate_limit_storage="redis://:geheim-42@cache:6379/0"))
    assert "geheim-42" not in repr(settings.web)
    # Nor in a log line: the password is one of the secrets every line is masked for.
    environ = {"DIGEST_WEB_RATE_LIMIT_STORAGE": "memory://u:geheim-42@x"}
    settings = parse_settings(demo(), environ=environ)
    assert settings.web.rate_limit_storage == "memory://u:geheim-42@x"
    assert "geheim-42" in secret_values(settings) and "geheim-42" not in repr(settings.web)


def test_redis_without_its_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as on an install without the extra
    message = error(demo(rate_limit_storage="redis://cache:6379/0"))
    assert message == (
        "web.rate_limit_storage: is 'redis://cache:6379/0', which needs the Python package "
        "'redis'; it is not installed (pip install 'digest[cluster]')"
    )


@pytest.mark.skipif(importlib.util.find_spec("redis") is None, reason="needs the redis package")
def test_redis_is_read_without_connecting() -> None:
    # Nothing listens on port 9 (discard): reading the config must not try.
    settings = parse_settings(demo(rate_limit_storage="redis://127.0.0.1:9/0"), environ={})
    assert settings.web.rate_limit_storage == "redis://127.0.0.1:9/0"


def test_a_cluster_counting_in_memory_is_warned_about() -> None:
    environ = {
        "DIGEST_STORE_URL": "postgresql+psycopg://u@db/x",
        "DIGEST_CLUSTER_QUEUE": "procrastinate",
    }
    settings = parse_settings(demo(), environ=environ)
    warning = unshared_counts(settings.web, settings.cluster.enabled)
    assert warning is not None and warning.startswith("web.rate_limit_storage is 'memory://'")
    assert "redis://" in warning
