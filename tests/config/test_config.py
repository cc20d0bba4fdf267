"""config.toml: typed settings, one-line errors naming the key, every key documented."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import pytest

from digest.config import (
    DEMO_SECRET_KEY,
    README_END,
    README_START,
    SECTIONS,
    Setting,
    all_setting_names,
    load_settings,
    parse_locale,
    parse_settings,
    reference_markdown,
    secret_environment,
    secret_values,
)
from digest.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


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
    assert _error(data) == "smtp.hots: unknown key (did you mean 'host'?)"
    data = demo()
    data["newsletters"][0]["sources"][1]["urll"] = "x"
    assert "newsletters[0].sources[1].urll: unknown key (did you mean 'url'?)" in _error(data)
    data = demo()
    data["newsletters"][0]["shedule"] = "0 7 * * mon"
    assert _error(data) == "newsletters[0].shedule: unknown key (did you mean 'schedule'?)"
    data = demo()
    data["newsletters"][0]["segmets"] = []  # a table of its own, not a setting
    assert _error(data) == "newsletters[0].segmets: unknown key (did you mean 'segments'?)"
    data = demo()
    data["smtp"]["frobnicate"] = 1
    assert _error(data) == "smtp.frobnicate: unknown key"


@pytest.mark.parametrize(
    ("nickname", "first", "second"),
    [
        ("@hourly", "2025-05-07 14:00", "2025-05-07 15:00"),
        ("@daily", "2025-05-08 00:00", "2025-05-09 00:00"),
        ("@midnight", "2025-05-08 00:00", "2025-05-09 00:00"),
        ("@weekly", "2025-05-11 00:00", "2025-05-18 00:00"),  # Sundays
        ("@monthly", "2025-06-01 00:00", "2025-07-01 00:00"),
        ("@yearly", "2026-01-01 00:00", "2027-01-01 00:00"),
        ("@Annually", "2026-01-01 00:00", "2027-01-01 00:00"),
    ],
)
def test_crontab_nicknames_are_schedules(nickname: str, first: str, second: str) -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from digest.config.cron import next_runs_of

    data = demo()
    data["newsletters"][0]["schedule"] = nickname
    [newsletter] = parse_settings(data, environ={}).newsletters
    now = datetime(2025, 5, 7, 13, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # a Wednesday
    runs = [next_runs_of(newsletter, now)]
    runs.append(next_runs_of(newsletter, runs[0] + timedelta(seconds=1)))
    assert [f"{run:%Y-%m-%d %H:%M}" for run in runs] == [first, second]


def test_a_nickname_without_a_time_is_refused() -> None:
    data = demo()
    data["newsletters"][0]["schedule"] = "@reboot"
    assert _error(data) == (
        "newsletters[0].schedule: bad cron expression '@reboot': @reboot names no time; "
        "digest runs on a schedule of times"
    )
    data["newsletters"][0]["schedule"] = "@fortnightly"
    assert _error(data).startswith(
        "newsletters[0].schedule: bad cron expression '@fortnightly': unknown nickname"
    )


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
    documented = set(re.findall(r"`([a-z0-9_.]+)`", readme))
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


def _with_newsletter(**values: object) -> dict:
    data = demo()
    data["newsletters"][0].update(values)
    return data


@pytest.mark.parametrize(
    "value",
    [
        "Kommune Digital",
        "news@",
        "news@localhost",
        "news@example.test",
        "jürgen@kommune-digital.example",
        "Kommune Digital <news@kommune-digital.example",
        "Kommune <news@kommune-digital.example> Digital",
        "Müller, Hans <news@kommune-digital.example>",
        "a@kommune-digital.example,b@kommune-digital.example",
        "news@straße.example",
    ],
)
@pytest.mark.parametrize("key", ["sender", "reply_to"])
def test_sender_and_reply_to_must_be_one_valid_address(key: str, value: str) -> None:
    assert _error(_with_newsletter(**{key: value})).startswith(f"newsletters[0].{key}: ")


def test_good_senders_and_an_empty_reply_to_load() -> None:
    for sender in (
        "news@kommune-digital.example",
        '"Müller, Hans" <news@kommune-digital.example>',
        "Kommune Digital <news@bücher.example>",
    ):
        data = _with_newsletter(sender=sender, reply_to="", list_id="")
        [newsletter] = parse_settings(data, environ={}).newsletters
        assert newsletter.sender == sender and newsletter.reply_to == ""
    # The Message-ID and List-Id domain is the ASCII form the From header has.
    assert newsletter.sender_domain == "xn--bcher-kva.example"
    assert newsletter.effective_list_id == "wochenueberblick.xn--bcher-kva.example"


@pytest.mark.parametrize(
    "value", ["Wochenueberblick", "wochen_ueberblick", "wochen überblick", "-kw", "", "a" * 64]
)
def test_newsletter_id_is_a_short_slug(value: str) -> None:
    assert _error(_with_newsletter(id=value)).startswith("newsletters[0].id: must be a short slug")


@pytest.mark.parametrize(
    "value", ["wochenueberblick", "a..b", "<news.example.org>", "news example.org", "x." * 128]
)
def test_list_id_is_a_dotted_name(value: str) -> None:
    assert _error(_with_newsletter(list_id=value)).startswith("newsletters[0].list_id: must")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("http://news.example.org", "must use https://"),
        ("http://10.0.0.1:8000", "must use https://"),
        ("ftp://news.example.org", "must start with https://"),
        ("HTTPS://news.example.org", "must start with https://"),
        ("https://bücher.example", "must be printable ASCII"),
        ("https://news.example.org/a b", "must be printable ASCII"),
        ("https://", "has no host name"),
        ("https://news.example.org:99999", "has a bad port"),
        ("https://user:pw@news.example.org", "must not contain a user name"),
        ("https://news.example.org/?from=mail", "must not have a query"),
    ],
)
def test_public_url_is_https_unless_loopback(value: str, problem: str) -> None:
    assert _error({**demo(), "public_url": value}).startswith(f"public_url: {problem}")


def test_loopback_public_urls_may_use_http() -> None:
    data = demo()  # keeps the demo secret_key, which loopback addresses may use
    for url in ("http://localhost:8000", "http://127.0.0.2:8000", "http://[::1]:8000/digest"):
        assert parse_settings({**data, "public_url": url}, environ={}).public_url == url
    data["public_url"] = "https://news.example.org/digest/"
    data["secret_key"] = "a-long-random-production-secret"
    assert parse_settings(data, environ={}).public_url == "https://news.example.org/digest"


def test_demo_secret_key_is_only_for_loopback() -> None:
    assert demo()["secret_key"] == DEMO_SECRET_KEY
    public = {"DIGEST_PUBLIC_URL": "https://news.example.org"}
    message = _error(demo(), public)
    assert message.startswith("secret_key: is the demo value")
    assert "set DIGEST_SECRET_KEY" in message
    key = "a-long-random-production-secret"
    assert parse_settings(demo(), environ={**public, "DIGEST_SECRET_KEY": key}).secret_key == key


def test_secret_key_needs_16_characters_and_is_never_shown() -> None:
    message = _error({**demo(), "secret_key": "geheim123"})
    assert message.startswith("secret_key: is 9 characters long") and "geheim123" not in message
    message = _error(demo(), {"DIGEST_SECRET_KEY": ""})
    assert message == "secret_key: is empty; set a long random string (set by DIGEST_SECRET_KEY)"
    assert parse_settings({**demo(), "secret_key": "x" * 16}, environ={}).secret_key == "x" * 16


def test_environment_values_are_named_in_errors() -> None:
    message = _error(demo(), {"DIGEST_PUBLIC_URL": "http://news.example.org"})
    assert message.startswith("public_url: must use https://")
    assert message.endswith("(set by DIGEST_PUBLIC_URL)")


def test_segment_regions_are_known_regions_in_canonical_spelling() -> None:
    data = demo()
    data["newsletters"][0]["segments"][1]["regions"] = ["bayern", "BADEN-WÜRTTEMBERG"]
    [newsletter] = parse_settings(data, environ={}).newsletters
    assert newsletter.segment("bayern").regions == ("Bayern", "Baden-Württemberg")

    data["newsletters"][0]["segments"][1]["regions"] = ["Bayern", "Atlantis"]
    message = _error(data)
    assert message.startswith("newsletters[0].segments[1].regions: unknown region 'Atlantis'")
    assert "Bayern" in message

    data = _with_newsletter(regions=["Nord", "Süd"])
    data["newsletters"][0]["segments"][1]["regions"] = ["süd"]
    [newsletter] = parse_settings(data, environ={}).newsletters
    assert newsletter.segment("bayern").regions == ("Süd",)
    data["newsletters"][0]["segments"][1]["regions"] = ["Bayern"]  # not one of these
    assert "unknown region 'Bayern'" in _error(data)


@pytest.mark.parametrize(
    "schedule", ["0 7 1 * mon", "0 7 1-7 * 1", "30 6 13 * fri", "0 7 last * 5"]
)
def test_schedule_restricting_day_of_month_and_weekday_is_refused(schedule: str) -> None:
    message = _error(_with_newsletter(schedule=schedule))
    assert message.startswith("newsletters[0].schedule: ")
    assert "restricts both day of month" in message and "leave the other '*'" in message


@pytest.mark.parametrize("schedule", ["0 7 1 * *", "0 7 * * mon-fri", "0 7 */2 * mon"])
def test_schedule_restricting_one_day_field_is_fine(schedule: str) -> None:
    [newsletter] = parse_settings(_with_newsletter(schedule=schedule), environ={}).newsletters
    assert newsletter.schedule == schedule


def test_config_path_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={})
    assert str(info.value) == f"--config: cannot read {tmp_path}: Is a directory"
    binary = tmp_path / "config.toml"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ConfigError) as info:
        load_settings(binary, environ={})
    assert "not UTF-8 text" in str(info.value) and info.value.exit_code == 2


@pytest.mark.parametrize(
    "locale",
    ["de_DE;rm -rf", "de_DE.UTF-8", "de_DE@euro", "de_de", "DE", "de-DE", "und", " de", "xx_XX"],
)
@pytest.mark.parametrize("where", ["top", "newsletter"])
def test_locale_is_a_plain_identifier_babel_knows(locale: str, where: str) -> None:
    data = demo()
    if where == "top":
        data["locale"] = locale
    else:
        data["newsletters"][0]["locale"] = locale
    message = _error(data)
    key = "locale" if where == "top" else "newsletters[0].locale"
    assert message.startswith(f"{key}: unknown locale {locale!r}"), message


@pytest.mark.parametrize("locale", ["de", "de_DE", "en_GB", "de_AT", "zh_Hant_TW", "es_419"])
def test_plain_locales_load(locale: str) -> None:
    assert parse_settings({**demo(), "locale": locale}, environ={}).locale == locale
    assert str(parse_locale(locale)) == locale


@pytest.mark.parametrize(
    "zone", ["localtime", "Factory", "posixrules", "posix/Europe/Berlin", "../etc/passwd", ""]
)
def test_time_zone_is_an_iana_name(zone: str) -> None:
    assert _error({**demo(), "timezone": zone}).startswith("timezone: unknown time zone")


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires"])
def test_iana_time_zones_load(zone: str) -> None:
    assert parse_settings({**demo(), "timezone": zone}, environ={}).timezone == zone


SECRET = "Tr0ub4dor-and-3"


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("", "secret_key", 271828182845904523),
        ("", "secret_key", [SECRET]),
        ("smtp", "password", 271828182845904523),
        ("smtp", "password", {"value": SECRET}),
    ],
)
def test_a_secret_of_the_wrong_type_is_not_echoed(section: str, key: str, value: object) -> None:
    data = demo()
    (data[section] if section else data)[key] = value
    message = _error(data)
    assert message.startswith(f"{section + '.' if section else ''}{key}: must be a string, not ")
    assert "271828182845904523" not in message and SECRET not in message


def test_passwords_in_urls_are_not_echoed() -> None:
    message = _error({**demo(), "public_url": f"https://editor:{SECRET}@news.example.org"})
    assert message.startswith("public_url: must not contain a user name or password")
    assert SECRET not in message and "editor:***@" in message
    message = _error({**demo(), "public_url": f"http://editor:{SECRET}@news.example.org"})
    assert SECRET not in message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"postgresql+psycopg://digest:{SECRET}@127.0.0.1:notaport/x", "has a port that is not"),
        (f"nosuchdriver://digest:{SECRET}@db/x", "names no database driver"),
        (f"postgresql+nodriver://digest:{SECRET}@db/x", "names no database driver"),
        (f"not a url {SECRET}", "is not a database URL"),
    ],
)
def test_bad_store_url_is_a_config_error_without_its_password(url: str, problem: str) -> None:
    message = _error(demo(), {"DIGEST_STORE_URL": url})
    assert message.startswith(f"store.url: {problem}") and SECRET not in message
    assert message.endswith("(set by DIGEST_STORE_URL)")


def test_repr_of_settings_shows_no_secret() -> None:
    url = f"postgresql+psycopg://digest:{SECRET}@db/x"
    environ = {"DIGEST_STORE_URL": url, "DIGEST_SMTP_PASSWORD": SECRET + "-smtp"}
    data = demo()
    data["newsletters"][0]["sources"][0]["url"] = f"https://reader:{SECRET}-feed@feeds.example/x"
    settings = parse_settings(data, environ={**environ, "DIGEST_SECRET_KEY": SECRET + "-key"})
    shown = repr(settings)
    assert SECRET not in shown and "digest:***@db" in shown and "reader:***@" in shown
    assert settings.store.url == url  # only the repr is masked
    assert secret_values(settings) == {SECRET, SECRET + "-smtp", SECRET + "-key", SECRET + "-feed"}
    assert secret_environment({**environ, "DIGEST_SMTP_HOST": "relay"}) == {
        SECRET,
        SECRET + "-smtp",
    }


def test_subject_template_and_name_are_checked_at_load() -> None:
    message = _error(_with_newsletter(subject="{{ name }"))
    assert message.startswith("newsletters[0].subject: is not a Jinja2 template")
    message = _error(_with_newsletter(name="x" * 101))
    assert message == "newsletters[0].name: is 101 characters long; at most 100"
    message = _error(_with_newsletter(name="Digest\r\nBcc: x@example.org"))
    assert message.startswith("newsletters[0].name: must be one line")


def test_unsubscribe_mailbox_is_maildir_or_imap_and_hides_its_password() -> None:
    settings = parse_settings(demo(), environ={})
    assert not settings.unsubscribe_mailbox.configured
    both = {**demo(), "unsubscribe_mailbox": {"maildir": "mail", "imap_host": "imap.example"}}
    assert _error(both) == (
        "unsubscribe_mailbox: set either maildir (a local Maildir) or imap_host "
        "(an IMAP server), not both"
    )
    imap = {**demo(), "unsubscribe_mailbox": {"imap_host": "imap.example"}}
    assert _error(imap) == "unsubscribe_mailbox.imap_username: is required with imap_host"
    imap["unsubscribe_mailbox"]["imap_username"] = "abmelden@example.org"
    bad = {**demo(), "unsubscribe_mailbox": {"maildir": "mail", "processed": "archive"}}
    assert _error(bad).startswith("unsubscribe_mailbox.processed: must be one of 'move'")
    variable = "DIGEST_UNSUBSCRIBE_MAILBOX_IMAP_PASSWORD"
    settings = parse_settings(imap, environ={variable: SECRET})
    mailbox = settings.unsubscribe_mailbox
    assert (mailbox.imap_port, mailbox.imap_folder, mailbox.processed) == (993, "INBOX", "move")
    assert mailbox.imap_password == SECRET and SECRET not in repr(settings)
    assert SECRET in secret_values(settings)
    assert secret_environment({variable: SECRET}) == {SECRET}


def test_web_rate_limits_are_read_and_checked() -> None:
    settings = parse_settings(demo(), environ={})
    assert (settings.web.rate_limit, settings.web.signup_rate_limit) == ("60/minute", "10/hour")
    chosen = {**demo(), "web": {"rate_limit": "5 per 10 seconds", "signup_rate_limit": "3/day"}}
    settings = parse_settings(chosen, environ={})
    assert (settings.web.rate_limit, settings.web.signup_rate_limit) == (
        "5 per 10 seconds",
        "3/day",
    )
    for value in ("0/hour", "many", "3/fortnight", ""):
        message = _error({**demo(), "web": {"signup_rate_limit": value}})
        assert message.startswith("web.signup_rate_limit: is not a rate limit"), message
    assert _error({**demo(), "web": {"rate_limit": 60}}).startswith(
        "web.rate_limit: must be a string"
    )
    assert _error({**demo(), "web": {"signup_limit": "1/hour"}}).startswith(
        "web.signup_limit: unknown key"
    )


def test_trusted_proxies_and_metrics_from_are_addresses_or_networks() -> None:
    web = parse_settings(demo(), environ={}).web
    assert web.trusted_proxies == web.metrics_from == ("127.0.0.1", "::1")
    assert web.metrics is False
    chosen = {
        **demo(),
        "web": {
            "trusted_proxies": ["10.20.0.0/16", "fd00::/8", "192.0.2.7"],
            "metrics": True,
            "metrics_from": ["10.30.0.9"],
        },
    }
    web = parse_settings(chosen, environ={}).web
    assert web.trusted_proxies == ("10.20.0.0/16", "fd00::/8", "192.0.2.7")
    assert (web.metrics, web.metrics_from) == (True, ("10.30.0.9",))
    for key in ("trusted_proxies", "metrics_from"):
        for value in ("proxy.example.org", "10.0.0.1/8", "10.0.0.0/33", ""):
            message = _error({**demo(), "web": {key: ["127.0.0.1", value]}})
            assert message.startswith(
                f"web.{key}: lists {value!r}, which is not an IP address or network"
            ), message
        assert _error({**demo(), "web": {key: "10.0.0.0/8"}}).startswith(
            f"web.{key}: must be a list, not str"
        )
        assert _error({**demo(), "web": {key: [10]}}) == f"web.{key}: must be a list of strings"


# --- every number has a range ----------------------------------------------------------------


def _config_file(tmp_path: Path, header: str, line: str) -> Path:
    """The shipped config.toml with ``line`` put into the table ``header`` (added if absent)."""
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    key = line.partition("=")[0].strip()
    if f"\n{header}\n" not in text:
        text += f"\n{header}\n{line}\n"
    else:
        start = text.index(f"\n{header}\n") + len(header) + 2
        end = text.find("\n[", start) % (len(text) + 1)
        table, count = re.subn(rf"(?m)^{key} = .*$", line, text[start:end])
        text = text[:start] + (table if count else f"{line}\n{table}") + text[end:]
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("header", "line", "problem"),
    [
        ("[admin]", "session_minutes = 1000000000000", "admin.session_minutes: must be from 1 to "),
        ("[smtp]", "timeout = 1e308", "smtp.timeout: must be from 1 to 900, not 1e+308"),
        ("[smtp]", "port = 0", "smtp.port: must be from 1 to 65535, not 0"),
        (
            "[[newsletters]]",
            "confirm_days = 1000000000000",
            "newsletters[0].confirm_days: must be from 1 to 365, not 1000000000000",
        ),
        (
            "[[newsletters]]",
            "confirm_days = 1e12",
            "newsletters[0].confirm_days: must be an integer",
        ),
        ("[smtp]", "timeout = nan", "smtp.timeout: must be from 1 to 900, not nan"),
        ("[smtp]", "max_per_hour = inf", "smtp.max_per_hour: must be from 0 to 10000000, not inf"),
        ("", "host_delay = -inf", "host_delay: must be from 0 to 60, not -inf"),
        ("[retry]", "max_age_hours = -1", "retry.max_age_hours: must be from 1 to 720, not -1"),
        (
            "[[newsletters]]",
            "collect_every_minutes = -5",
            "newsletters[0].collect_every_minutes: must be from 0 to 10080, not -5",
        ),
    ],
)
def test_absurd_numbers_are_refused_at_load_naming_file_key_and_range(
    tmp_path: Path, header: str, line: str, problem: str
) -> None:
    if header:
        path = _config_file(tmp_path, header, line)
    else:  # a top-level key goes before the first table
        path = tmp_path / "config.toml"
        path.write_text(f"{line}\n" + (ROOT / "config.toml").read_text(encoding="utf-8"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(info.value).startswith(f"{path}: {problem}")
    assert "\n" not in str(info.value)


def test_the_cli_refuses_an_absurd_number_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from digest.cli import main

    path = _config_file(tmp_path, "[admin]", "session_minutes = 1000000000000")
    with pytest.raises(SystemExit) as exited:
        main(["schedules", "--config", str(path)])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {path}: admin.session_minutes: must be from 1 to 10080, not 1000000000000\n"
    )


def test_an_environment_override_out_of_range_is_named() -> None:
    message = _error(demo(), {"DIGEST_SMTP_PORT": "70000"})
    assert message == "smtp.port: must be from 1 to 65535, not 70000 (set by DIGEST_SMTP_PORT)"


def _numeric_settings() -> list[tuple[str, Setting]]:
    return [
        (section, setting)
        for section, (settings, _) in SECTIONS.items()
        for setting in settings
        if setting.type in (int, float, (int, float))
    ]


def _place(data: dict, section: str, key: str, value: object) -> str:
    """Set ``section.key`` in the parsed config; the dotted name an error gives it."""
    table, where = data, ""
    for part in section.split(".") if section else []:
        full = ".".join(p.split("[")[0] for p in [*where.split("."), part] if p)
        if SECTIONS[full][1]:
            if not table.get(part):
                table[part] = [{"host": "relay.example.org"}]  # the only array not in the demo
            table = table[part][0]
            where = f"{where}.{part}[0]" if where else f"{part}[0]"
        else:
            table = table.setdefault(part, {})
            where = f"{where}.{part}" if where else part
    table[key] = value
    return f"{where}.{key}" if where else key


def test_every_number_declares_its_range() -> None:
    numbers = _numeric_settings()
    assert len(numbers) >= 30
    assert [f"{section}.{s.name}" for section, s in numbers if s.bounds is None] == []


@pytest.mark.parametrize(
    ("section", "setting"),
    _numeric_settings(),
    ids=[f"{section}.{s.name}".lstrip(".") for section, s in _numeric_settings()],
)
def test_every_number_refuses_values_outside_its_range(section: str, setting: Setting) -> None:
    assert setting.bounds is not None
    low, high = setting.bounds
    values: list[float] = [high + 1, low - 1, high * 1000 + 1]
    whole = setting.type is int
    if not whole:
        values += [math.nan, math.inf, -math.inf, low - 0.01]
    for value in values:
        if whole:
            value = int(value)
        data = demo()
        key = _place(data, section, setting.name, value)
        message = _error(data)
        assert message.startswith(f"{key}: must be from {low!r} to {high!r}, not "), message
    data = demo()
    _place(data, section, setting.name, int(high) if whole else high)
    parse_settings(data, environ={})  # the bounds themselves are allowed
    data = demo()
    _place(data, section, setting.name, low)
    parse_settings(data, environ={})
