"""Read the file and the ``DIGEST_*`` environment into :class:`Settings`, checking every key."""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from digest.config.cluster import ClusterSettings
from digest.config.declare import out_of_bounds, quoted, type_name
from digest.config.mailboxes import BounceSettings, UnsubscribeMailboxSettings
from digest.config.newsletters import (
    GERMAN_LAENDER,
    CategorySettings,
    Impressum,
    NewsletterSettings,
    SegmentSettings,
)
from digest.config.settings import ENV_OVERRIDES, SECTIONS, Settings
from digest.config.smtp import DkimSettings, RelaySettings, RetrySettings, SmtpSettings
from digest.config.sources import SelectorSettings, SourceSettings
from digest.config.store import StoreSettings
from digest.config.top import DEMO_SECRET_KEY, is_loopback_url
from digest.config.web import AdminSettings, WebSettings
from digest.core.errors import ConfigError
from digest.core.redact import MASK

__all__ = ["load_settings", "parse_settings"]


class _Reader:
    def __init__(self, path: str | None, from_environment: Mapping[str, str]) -> None:
        self.path = path
        self.from_environment = from_environment  # dotted key -> variable that set it

    def error(self, key: str, problem: str) -> ConfigError:
        if var := self.from_environment.get(key):
            problem = f"{problem} (set by {var})"
        return ConfigError(key, problem, path=self.path)

    def table(
        self, data: Any, section: str, where: str, inherited: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Check one table against its settings; return the values with defaults filled in."""
        if not isinstance(data, dict):
            raise self.error(where or "(top level)", "must be a table")
        settings, _ = SECTIONS[section]
        by_name = {s.name: s for s in settings}
        children = (
            {
                k.rpartition(".")[2]
                for k in SECTIONS
                if k.startswith(f"{section}.") and k.count(".") == section.count(".") + 1
            }
            if section
            else {k for k in SECTIONS if k and "." not in k}
        )
        values: dict[str, Any] = {}
        for key, value in data.items():
            dotted = f"{where}.{key}" if where else key
            if key in children:
                continue
            setting = by_name.get(key)
            if setting is None:
                raise self.error(dotted, f"unknown key{_did_you_mean(key, [*by_name, *children])}")
            expected = setting.type
            ok = isinstance(value, expected) and not (
                isinstance(value, bool) and expected in (int, (int, float))
            )
            if not ok:
                shown = "" if setting.secret else f" {quoted(repr(value))[1:-1]}"
                raise self.error(
                    dotted, f"must be {type_name(expected)}, not {type(value).__name__}{shown}"
                )
            if setting.bounds and (problem := out_of_bounds(value, setting.bounds)):
                raise self.error(dotted, problem)
            if setting.check and (problem := setting.check(value)):
                if setting.secret and value:  # a check that quotes the value is a bug
                    problem = problem.replace(value, MASK)
                raise self.error(dotted, problem)
            values[key] = value
        for setting in settings:
            if setting.name in values:
                continue
            if setting.required:
                raise self.error(
                    f"{where}.{setting.name}" if where else setting.name, "is required"
                )
            default = setting.default
            if default is None and inherited is not None:
                default = inherited.get(setting.name)
            values[setting.name] = default
        return values

    def array(self, data: Any, section: str, where: str) -> list[Any]:
        if not isinstance(data, list):
            raise self.error(where, "must be an array of tables ([[" + section + "]])")
        return data


def _did_you_mean(key: str, known: list[str]) -> str:
    """`` (did you mean 'schedule'?)`` for the known key closest to ``key``, or ''."""
    close = [k for k in known if k.replace("_", "") == key.replace("_", "")]
    close = close or difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_settings(
    data: Mapping[str, Any], *, path: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Validate a parsed TOML document plus environment overrides into :class:`Settings`."""
    data, from_environment = _with_environment(data, os.environ if environ is None else environ)
    reader = _Reader(str(path) if path else None, from_environment)
    top = _read_top(reader, data)
    store = reader.table(data.get("store", {}), "store", "store")
    smtp = _read_smtp(reader, data)
    newsletters = _read_newsletters(reader, data, top)
    mailbox = reader.table(
        data.get("unsubscribe_mailbox", {}), "unsubscribe_mailbox", "unsubscribe_mailbox"
    )
    _check_mailbox(reader, mailbox, "unsubscribe_mailbox")
    bounces = reader.table(data.get("bounces", {}), "bounces", "bounces")
    _check_mailbox(reader, bounces, "bounces")
    web = reader.table(data.get("web", {}), "web", "web")
    base_dir = path.parent if path else Path(".")
    return Settings(
        public_url=top["public_url"].rstrip("/"),
        secret_key=top["secret_key"],
        timezone=top["timezone"],
        locale=top["locale"],
        outbox=Path(top["outbox"])
        if Path(top["outbox"]).is_absolute()
        else base_dir / top["outbox"],
        store=StoreSettings(**store),
        smtp=SmtpSettings(**smtp),
        newsletters=newsletters,
        base_dir=base_dir,
        path=path,
        unsubscribe_mailbox=UnsubscribeMailboxSettings(**mailbox),
        dkim=DkimSettings(**reader.table(data.get("dkim", {}), "dkim", "dkim")),
        bounces=BounceSettings(**bounces),
        web=WebSettings(**web),
        user_agent=top["user_agent"],
        host_delay=top["host_delay"],
        admin=AdminSettings(**reader.table(data.get("admin", {}), "admin", "admin")),
        retry=RetrySettings(**reader.table(data.get("retry", {}), "retry", "retry")),
        cluster=_read_cluster(reader, data, store),
    )


def _read_cluster(
    reader: _Reader, data: Mapping[str, Any], store: Mapping[str, Any]
) -> ClusterSettings:
    cluster = reader.table(data.get("cluster", {}), "cluster", "cluster")
    if cluster["queue"] and not str(store["url"]).startswith("postgresql"):
        raise reader.error(
            "cluster.queue",
            f"is {quoted(cluster['queue'])}, which needs a PostgreSQL store, but store.url "
            "names another database; set store.url to postgresql+psycopg://… or "
            'cluster.queue to ""',
        )
    return ClusterSettings(**cluster)


def _with_environment(
    data: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """``data`` with the ``DIGEST_*`` overrides set, and which variable set which key."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    from_environment: dict[str, str] = {}
    for var, (section, key, kind) in ENV_OVERRIDES.items():
        if var not in environ:
            continue
        raw = environ[var]
        value: Any = raw
        if kind is int:
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(var, f"must be an integer, not {quoted(raw)}") from None
        target = data.setdefault(section, {}) if section else data
        target[key] = value
        from_environment[f"{section}.{key}" if section else key] = var
    return data, from_environment


def _read_top(reader: _Reader, data: Mapping[str, Any]) -> dict[str, Any]:
    top = reader.table(data, "", "")
    if top["secret_key"] == DEMO_SECRET_KEY and not is_loopback_url(top["public_url"]):
        raise reader.error(
            "secret_key",
            f"is the demo value from config.toml, which must not sign links served at "
            f"{top['public_url']}; set DIGEST_SECRET_KEY to a long random string",
        )
    return top


def _read_smtp(reader: _Reader, data: Mapping[str, Any]) -> dict[str, Any]:
    smtp = reader.table(data.get("smtp", {}), "smtp", "smtp")
    smtp["relays"] = tuple(
        RelaySettings(**reader.table(raw, "smtp.relays", f"smtp.relays[{n}]"))
        for n, raw in enumerate(
            reader.array(data.get("smtp", {}).get("relays", []), "smtp.relays", "smtp.relays")
        )
    )
    return smtp


def _read_newsletters(
    reader: _Reader, data: Mapping[str, Any], top: Mapping[str, Any]
) -> tuple[NewsletterSettings, ...]:
    newsletters = []
    seen_ids: set[str] = set()
    for n, raw_nl in enumerate(
        reader.array(data.get("newsletters", []), "newsletters", "newsletters")
    ):
        where = f"newsletters[{n}]"
        values = reader.table(raw_nl, "newsletters", where, inherited=top)
        if values["id"] in seen_ids:
            raise reader.error(f"{where}.id", f"duplicate newsletter id {values['id']!r}")
        seen_ids.add(values["id"])
        newsletters.append(_read_newsletter(reader, raw_nl, values, where))
    return tuple(newsletters)


def _read_newsletter(
    reader: _Reader, raw_nl: Mapping[str, Any], values: Mapping[str, Any], where: str
) -> NewsletterSettings:
    """One newsletter from its checked keys ``values`` and its tables in ``raw_nl``."""
    if "impressum" not in raw_nl:
        raise reader.error(f"{where}.impressum", "is required (§5 DDG)")
    impressum = Impressum(
        **reader.table(raw_nl["impressum"], "newsletters.impressum", f"{where}.impressum")
    )
    categories = _read_categories(reader, raw_nl, where)
    keys = [c.key for c in categories]
    sources = _read_sources(reader, raw_nl, where, keys)
    segments = _read_segments(reader, raw_nl, where, keys, tuple(values["regions"]))
    segment_list_names = {name for seg in segments for name in seg.lists}
    if values["signup_list"] and values["signup_list"] not in segment_list_names:
        raise reader.error(
            f"{where}.signup_list",
            f"no segment draws from list {values['signup_list']!r}, so a sign-up would "
            "receive nothing",
        )
    category_map = {k.casefold(): v for k, v in values["category_map"].items()}
    for name, key in category_map.items():
        if key not in keys:
            raise reader.error(f"{where}.category_map.{name}", f"unknown category {key!r}")
    return NewsletterSettings(
        impressum=impressum,
        categories=categories,
        sources=sources,
        segments=segments,
        **{
            **values,
            "category_map": category_map,
            "regions": tuple(values["regions"]) or GERMAN_LAENDER,
            "regions_listed": bool(values["regions"]),
        },
    )


def _read_categories(
    reader: _Reader, raw_nl: Mapping[str, Any], where: str
) -> tuple[CategorySettings, ...]:
    categories = tuple(
        CategorySettings(**reader.table(c, "newsletters.categories", f"{where}.categories[{i}]"))
        for i, c in enumerate(
            reader.array(
                raw_nl.get("categories", []), "newsletters.categories", f"{where}.categories"
            )
        )
    )
    if not categories:
        raise reader.error(f"{where}.categories", "needs at least one category")
    keys = [c.key for c in categories]
    if len(set(keys)) != len(keys):
        raise reader.error(f"{where}.categories", "category keys must be unique")
    return categories


def _read_sources(
    reader: _Reader, raw_nl: Mapping[str, Any], where: str, keys: list[str]
) -> tuple[SourceSettings, ...]:
    sources = []
    for i, s in enumerate(
        reader.array(raw_nl.get("sources", []), "newsletters.sources", f"{where}.sources")
    ):
        src_where = f"{where}.sources[{i}]"
        src = SourceSettings(**reader.table(s, "newsletters.sources", src_where))
        raw_selectors = s.get("selectors")
        if src.kind == "html" and raw_selectors is None:
            raise reader.error(f"{src_where}.selectors", "is required with kind = 'html'")
        if src.kind != "html" and raw_selectors is not None:
            raise reader.error(f"{src_where}.selectors", "is only read with kind = 'html'")
        if raw_selectors is not None:
            selectors = reader.table(
                raw_selectors, "newsletters.sources.selectors", f"{src_where}.selectors"
            )
            src = dataclasses.replace(src, selectors=SelectorSettings(**selectors))
        if src.default_category not in keys:
            raise reader.error(
                f"{where}.sources[{i}].default_category",
                f"unknown category {src.default_category!r}",
            )
        sources.append(src)
    return tuple(sources)


def _read_segments(
    reader: _Reader,
    raw_nl: Mapping[str, Any],
    where: str,
    keys: list[str],
    regions_setting: tuple[str, ...],
) -> tuple[SegmentSettings, ...]:
    known_regions = {r.casefold(): r for r in (regions_setting or GERMAN_LAENDER)}
    segments = []
    for i, s in enumerate(
        reader.array(raw_nl.get("segments", []), "newsletters.segments", f"{where}.segments")
    ):
        seg = reader.table(s, "newsletters.segments", f"{where}.segments[{i}]")
        unknown = [c for c in seg["categories"] if c not in keys]
        if unknown:
            raise reader.error(
                f"{where}.segments[{i}].categories", f"unknown category {unknown[0]!r}"
            )
        regions = []
        for region in seg["regions"]:
            if region.casefold() not in known_regions:
                raise reader.error(
                    f"{where}.segments[{i}].regions",
                    f"unknown region {region!r} (known: "
                    f"{', '.join(known_regions.values())}; see {where}.regions)",
                )
            regions.append(known_regions[region.casefold()])
        segments.append(
            SegmentSettings(
                seg["name"],
                tuple(seg["lists"]),
                tuple(seg["categories"]),
                tuple(regions),
            )
        )
    return tuple(segments)


def _check_mailbox(reader: _Reader, values: Mapping[str, Any], section: str) -> None:
    if values["maildir"] and values["imap_host"]:
        raise reader.error(
            section,
            "set either maildir (a local Maildir) or imap_host (an IMAP server), not both",
        )
    if values["imap_host"] and not values["imap_username"]:
        raise reader.error(f"{section}.imap_username", "is required with imap_host")


def load_settings(
    path: str | Path = "config.toml", environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the config file at ``path`` (and the environment) into :class:`Settings`."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("--config", f"no such file: {path}") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("(syntax)", str(exc), path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "(syntax)", f"not UTF-8 text (byte {exc.start}): is it a TOML file?", path=str(path)
        ) from None
    return parse_settings(data, path=path, environ=environ)
