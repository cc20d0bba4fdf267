"""What the readers' pages of the editors' area say about the store's codes, in its locale.

A subscriber's status, a delivery's state and bounce, a suppression's reason, a consent's
source and an audit log entry's action are codes in the store; the pages show them
through the catalogues, and a code they do not know as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from digest.core.i18n import N_
from digest.store.audit import AuditEntry
from digest.web.admin.words import Words

__all__ = ["ReaderWords"]

_STATUS = {
    "active": N_("active"),
    "unsubscribed": N_("unsubscribed from everything"),
    "bounced": N_("undeliverable"),
    "complained": N_("complained about a message"),
    "suppressed": N_("blocked by the operator"),
    "erased": N_("erased"),
}
_DELIVERY = {
    "sent": N_("sent"),
    "pending": N_("deferred"),
    "sending": N_("being sent"),
    "failed": N_("failed"),
    "skipped": N_("skipped"),
}
_BOUNCE = {
    "delayed": N_("delayed"),
    "soft": N_("bounced (temporary)"),
    "policy": N_("refused by the receiving server"),
    "hard": N_("bounced (address unknown)"),
    "complaint": N_("reported as spam"),
}
_REASON = {
    "unsubscribed": N_("unsubscribed"),
    "hard_bounce": N_("address unknown"),
    "soft_bounce": N_("repeatedly undeliverable"),
    "complaint": N_("complaint"),
    "erased": N_("erased"),
    "operator": N_("blocked by the operator"),
}
_SOURCE = {
    "signup": N_("sign-up form, confirmed by email (double opt-in)"),
    "import": N_("imported by the operator"),
}
_ACTION = {
    "search": N_("searched for the address"),
    "view": N_("viewed the data"),
    "export": N_("downloaded the export"),
    "erase": N_("erased the data"),
}


@dataclass(frozen=True)
class ReaderWords(Words):
    """The words of the readers' pages in one locale, their times in one zone."""

    zone: ZoneInfo = ZoneInfo("UTC")

    def _say(self, table: dict[str, str], code: str | None) -> str:
        if code is None:
            return "–"
        found = table.get(code)
        return self.catalogue.gettext(found) if found else code

    def at(self, value: str | datetime | None) -> str:
        """A stored time (a datetime, or as the export writes it) in the area's zone."""
        if value is None:
            return "–"
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return self.when(moment, self.zone)

    def status(self, code: str) -> str:
        """A subscriber's status, e.g. ``aktiv``."""
        return self._say(_STATUS, code)

    def delivery(self, code: str) -> str:
        """A delivery's state, e.g. ``verschickt``."""
        return self._say(_DELIVERY, code)

    def bounce(self, code: str | None) -> str:
        """What came back after a delivery, e.g. ``unzustellbar (Adresse unbekannt)``."""
        return self._say(_BOUNCE, code)

    def reason(self, code: str) -> str:
        """Why an address is suppressed, e.g. ``abgemeldet``."""
        return self._say(_REASON, code)

    def source(self, code: str) -> str:
        """Where a consent came from, e.g. ``Anmeldeformular …``."""
        return self._say(_SOURCE, code)

    def action(self, entry: AuditEntry, names: Mapping[str, str]) -> str:
        """What an audit log entry records, e.g. ``hat die Daten angesehen``; a
        newsletter by its name in ``names`` (by its id when it is no longer configured)."""
        if entry.action == "unsubscribe":
            newsletter = entry.newsletter or "–"
            return self.catalogue.gettext("unsubscribed from %(newsletter)s") % {
                "newsletter": names.get(newsletter, newsletter)
            }
        return self._say(_ACTION, entry.action)

    def listed(self, values: list[str]) -> str:
        """Categories or regions; none means every one."""
        return ", ".join(values) if values else self.catalogue.gettext("all")
