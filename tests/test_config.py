"""config.toml: typed settings, one-line errors naming the key, every key documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from digest.config import (
    README_END,
    README_START,
    all_setting_names,
    load_settings,
    parse_settings,
    reference_markdown,
)
from digest.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def demo() -> dict:
    return tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))


def test_shipped_config_loads() -> None:
    settings = load_settings(ROOT / "config.toml", environ={})
    [newsletter] = settings.newsletters
    assert newsletter.timezone == "Europe/Berlin" and newsletter.locale == "de_DE"
    assert [c.key for c in newsletter.categories][:2] == ["politik", "verwaltung"]
    assert settings.store.url == "sqlite:///digest.db"


def test_environment_overrides_secrets_and_endpoints() -> None:
    settings = parse_settings(
        demo(),
        environ={
            "DIGEST_STORE_URL": "postgresql+psycopg://u@db/x",
            "DIGEST_SMTP_HOST": "relay",
            "DIGEST_SMTP_PORT": "587",
            "DIGEST_SMTP_USERNAME": "user",
            "DIGEST_SMTP_PASSWORD": "geheim",
        },
    )
    assert settings.store.url == "postgresql+psycopg://u@db/x"
    assert (settings.smtp.host, settings.smtp.port) == ("relay", 587)
    assert (settings.smtp.username, settings.smtp.password) == ("user", "geheim")


def _error(data: dict, environ: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, environ=environ or {})
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


def test_unknown_key_is_named() -> None:
    data = demo()
    data["smtp"]["hots"] = "x"
    assert _error(data) == "smtp.hots: unknown key"
    data = demo()
    data["newsletters"][0]["sources"][1]["urll"] = "x"
    assert "newsletters[0].sources[1].urll: unknown key" in _error(data)


def test_wrong_type_bad_cron_bad_zone() -> None:
    data = demo()
    data["smtp"]["port"] = "25"
    assert _error(data).startswith("smtp.port: must be an integer")
    data = demo()
    data["newsletters"][0]["schedule"] = "0 7 * *"
    assert _error(data).startswith("newsletters[0].schedule: bad cron expression")
    data = demo()
    data["newsletters"][0]["timezone"] = "Europe/Bärlin"
    assert _error(data).startswith("newsletters[0].timezone: unknown time zone")
    data = demo()
    data["newsletters"][0]["max_per_category"] = True
    assert _error(data).startswith("newsletters[0].max_per_category: must be an integer")
    assert _error(demo(), {"DIGEST_SMTP_PORT": "abc"}).startswith("DIGEST_SMTP_PORT")


def test_missing_required_and_bad_references() -> None:
    data = demo()
    del data["newsletters"][0]["impressum"]["responsible"]
    assert _error(data) == "newsletters[0].impressum.responsible: is required"
    data = demo()
    data["newsletters"][0]["segments"][2]["categories"] = ["sport"]
    assert "unknown category 'sport'" in _error(data)


def test_every_key_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_.]+)`", readme))
    missing = [name for name in all_setting_names() if name not in documented]
    assert not missing, f"keys missing from README.md: {missing}"
    start = readme.index("\n", readme.index(README_START)) + 1
    assert readme[start : readme.index(README_END)] == reference_markdown(), (
        "README.md's configuration reference is out of date: run `make readme`"
    )


def test_every_key_in_the_shipped_config_is_commented_or_known() -> None:
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    names = {name.rpartition(".")[2] for name in all_setting_names()}
    used = set(re.findall(r"^([a-z_]+)\s*=", text, flags=re.M))
    assert used <= names
