"""The whole: :class:`Settings`, every section of the file, and the secrets among them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from digest.config.cluster import CLUSTER, ClusterSettings
from digest.config.declare import Setting
from digest.config.mailboxes import (
    BOUNCES,
    UNSUBSCRIBE_MAILBOX,
    BounceSettings,
    UnsubscribeMailboxSettings,
)
from digest.config.newsletters import (
    CATEGORY,
    IMPRESSUM,
    NEWSLETTER,
    SEGMENT,
    NewsletterSettings,
)
from digest.config.smtp import DKIM, RELAY, RETRY, SMTP, DkimSettings, RetrySettings, SmtpSettings
from digest.config.sources import SELECTORS, SOURCE
from digest.config.store import STORE, StoreSettings
from digest.config.top import DEFAULT_USER_AGENT, TOP
from digest.config.web import ADMIN, WEB, AdminSettings, WebSettings
from digest.core.errors import ConfigError
from digest.core.redact import url_password

__all__ = [
    "Settings",
    "SECTIONS",
    "ENV_OVERRIDES",
    "secret_environment",
    "secret_values",
    "all_setting_names",
]


#: Every table of the file: its dotted path, its settings, and whether it is an array.
SECTIONS: dict[str, tuple[list[Setting], bool]] = {
    "": (TOP, False),
    "store": (STORE, False),
    "smtp": (SMTP, False),
    "smtp.relays": (RELAY, True),
    "newsletters": (NEWSLETTER, True),
    "newsletters.impressum": (IMPRESSUM, False),
    "newsletters.categories": (CATEGORY, True),
    "newsletters.sources": (SOURCE, True),
    "newsletters.sources.selectors": (SELECTORS, False),
    "newsletters.segments": (SEGMENT, True),
    "unsubscribe_mailbox": (UNSUBSCRIBE_MAILBOX, False),
    "dkim": (DKIM, False),
    "bounces": (BOUNCES, False),
    "web": (WEB, False),
    "admin": (ADMIN, False),
    "retry": (RETRY, False),
    "cluster": (CLUSTER, False),
}


#: Environment variables that override one key each.
ENV_OVERRIDES: dict[str, tuple[str, str, type]] = {
    "DIGEST_STORE_URL": ("store", "url", str),
    "DIGEST_CLUSTER_QUEUE": ("cluster", "queue", str),
    "DIGEST_WEB_RATE_LIMIT_STORAGE": ("web", "rate_limit_storage", str),
    "DIGEST_SMTP_HOST": ("smtp", "host", str),
    "DIGEST_SMTP_PORT": ("smtp", "port", int),
    "DIGEST_SMTP_USERNAME": ("smtp", "username", str),
    "DIGEST_SMTP_PASSWORD": ("smtp", "password", str),
    "DIGEST_SMTP_SECURITY": ("smtp", "security", str),
    "DIGEST_SECRET_KEY": ("", "secret_key", str),
    "DIGEST_PUBLIC_URL": ("", "public_url", str),
    "DIGEST_UNSUBSCRIBE_MAILBOX_IMAP_PASSWORD": ("unsubscribe_mailbox", "imap_password", str),
    "DIGEST_BOUNCES_IMAP_PASSWORD": ("bounces", "imap_password", str),
}


def _setting(section: str, name: str) -> Setting:
    return next(s for s in SECTIONS[section][0] if s.name == name)


def secret_environment(environ: Mapping[str, str]) -> set[str]:
    """The secrets among the ``DIGEST_*`` overrides in ``environ``, before any is checked."""
    found = set()
    for var, (section, key, _) in ENV_OVERRIDES.items():
        value = environ.get(var)
        if not value:
            continue
        if _setting(section, key).secret:
            found.add(value)
        elif password := url_password(value):
            found.add(password)
    return found


def secret_values(settings: Settings) -> set[str]:
    """Every secret in ``settings``: secret settings and the password of any URL."""
    found: set[str] = set()

    def collect(section: str, values: object) -> None:
        for setting in SECTIONS[section][0]:
            value = getattr(values, setting.name, None)
            if not isinstance(value, str) or not value:
                continue
            if setting.secret:
                found.add(value)
            elif password := url_password(value):
                found.add(password)

    collect("", settings)
    collect("store", settings.store)
    collect("smtp", settings.smtp)
    collect("unsubscribe_mailbox", settings.unsubscribe_mailbox)
    collect("bounces", settings.bounces)
    collect("web", settings.web)
    for newsletter in settings.newsletters:
        collect("newsletters", newsletter)
        for source in newsletter.sources:
            collect("newsletters.sources", source)
    return found


def all_setting_names() -> list[str]:
    """Every documented key as a dotted name, e.g. ``newsletters.sources.url``."""
    names = []
    for section, (settings, _) in SECTIONS.items():
        names += [f"{section}.{s.name}" if section else s.name for s in settings]
    return names


@dataclass(frozen=True)
class Settings:
    public_url: str
    secret_key: str = field(repr=False)
    timezone: str
    locale: str
    outbox: Path
    store: StoreSettings
    smtp: SmtpSettings
    newsletters: tuple[NewsletterSettings, ...]
    base_dir: Path = Path(".")
    path: Path | None = None
    unsubscribe_mailbox: UnsubscribeMailboxSettings = field(
        default_factory=UnsubscribeMailboxSettings
    )
    dkim: DkimSettings = field(default_factory=DkimSettings)
    bounces: BounceSettings = field(default_factory=BounceSettings)
    web: WebSettings = field(default_factory=WebSettings)
    user_agent: str = DEFAULT_USER_AGENT
    host_delay: float = 1.0
    admin: AdminSettings = field(default_factory=AdminSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    def newsletter(self, newsletter_id: str) -> NewsletterSettings:
        for newsletter in self.newsletters:
            if newsletter.id == newsletter_id:
                return newsletter
        known = ", ".join(n.id for n in self.newsletters) or "none configured"
        raise ConfigError(
            "newsletters",
            f"no newsletter {newsletter_id!r} (known: {known})",
            path=str(self.path) if self.path else None,
        )

    def resolve(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path
