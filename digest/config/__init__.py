"""Read ``config.toml`` and ``DIGEST_*`` environment overrides into typed settings.

Every key is declared once as a :class:`Setting` with its type, default and help text, in
the module of its section; the README documents each one (a test checks it). Any problem
is a :class:`~digest.core.errors.ConfigError` that names the key.
"""

from digest.config.declare import Setting, parse_locale
from digest.config.load import load_settings, parse_settings
from digest.config.mailboxes import BounceSettings, MailboxSettings, UnsubscribeMailboxSettings
from digest.config.newsletters import (
    CategorySettings,
    Impressum,
    NewsletterSettings,
    SegmentSettings,
)
from digest.config.reference import README_END, README_START, reference_markdown, update_readme
from digest.config.settings import (
    ENV_OVERRIDES,
    SECTIONS,
    Settings,
    all_setting_names,
    secret_environment,
    secret_values,
)
from digest.config.smtp import DkimSettings, RelaySettings, RetrySettings, SmtpSettings
from digest.config.sources import SelectorSettings, SourceSettings
from digest.config.store import StoreSettings
from digest.config.top import DEFAULT_USER_AGENT, DEMO_SECRET_KEY
from digest.config.web import AdminSettings, WebSettings, rate_limit_item
from digest.core.errors import ConfigError

__all__ = [
    "Setting",
    "SECTIONS",
    "ENV_OVERRIDES",
    "Settings",
    "StoreSettings",
    "SmtpSettings",
    "RelaySettings",
    "RetrySettings",
    "NewsletterSettings",
    "Impressum",
    "CategorySettings",
    "SourceSettings",
    "SelectorSettings",
    "SegmentSettings",
    "UnsubscribeMailboxSettings",
    "DkimSettings",
    "MailboxSettings",
    "BounceSettings",
    "WebSettings",
    "AdminSettings",
    "ConfigError",
    "DEFAULT_USER_AGENT",
    "DEMO_SECRET_KEY",
    "load_settings",
    "rate_limit_item",
    "parse_settings",
    "all_setting_names",
    "parse_locale",
    "secret_values",
    "secret_environment",
    "reference_markdown",
    "update_readme",
    "README_START",
    "README_END",
]
