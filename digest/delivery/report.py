"""What a send run reports: who of the audience got no message and why, and one count
per kind of outcome (shared by the send, its helper processes and the dry run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

__all__ = ["AudienceCounts", "DeliveryReport", "Progress"]

#: Called with (messages finished, messages known in all) as a send goes.
Progress = Callable[[int, int], None]


@dataclass(kw_only=True)
class AudienceCounts:
    """Who of an issue's audience gets no message in this run, and why.

    A send and a dry run (:func:`digest.delivery.dryrun.dry_run`) count these the same way.
    """

    already_sent: int = 0  # sent in an earlier run
    refused_before: int = 0  # refused for good in an earlier run, not retried
    skipped_before: int = 0  # skipped in an earlier run
    unsubscribed_since: int = 0  # in the issue's ledger, no longer subscribed
    subscribed_after: int = 0  # subscribed after the issue went out: not in its ledger
    skipped: int = 0  # nothing in the issue for their interests

    def audience_parts(self) -> list[str]:
        parts = []
        if self.already_sent:
            parts.append(f"{self.already_sent} already sent before")
        if self.refused_before:
            parts.append(f"{self.refused_before} refused in an earlier run (not retried)")
        if self.skipped_before:
            parts.append(f"{self.skipped_before} skipped in an earlier run")
        if self.unsubscribed_since:
            parts.append(f"{self.unsubscribed_since} unsubscribed since the issue went out")
        if self.subscribed_after:
            parts.append(
                f"{self.subscribed_after} subscribed after the issue went out "
                "(they get the next one)"
            )
        if self.skipped:
            parts.append(f"{self.skipped} skipped (nothing for their interests)")
        return parts


@dataclass
class DeliveryReport(AudienceCounts):
    """The outcome of one send run, one count per kind of outcome."""

    newsletter: str
    issue_key: str
    recipients: int = 0
    planned: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    resumed: int = 0
    in_flight: int = 0
    variants: int = 0
    stopped: str | None = None
    failures: list[str] = field(default_factory=list)
    gave_up: int = 0  # deferred too often or too long: failed with their last reply
    policy: int = 0  # refused by policy at RCPT (5.7.x): deferred, never suppressed
    waiting: int = 0  # deferred by an earlier run, not due yet: not tried in this run
    left: int = 0  # rows not finished after this run (due, waiting or being sent)
    unplanned: bool = False  # stopped before every recipient had a row: more to send
    not_reached: bool = False  # stopped as no server could be reached (rows stay due)
    due: int = 0  # rows left that any run may send now (not deferred, not being sent)
    next_retry: datetime | None = None
    zone: tzinfo = UTC  # in which next_retry is shown
    sent_by: list[int] = field(default_factory=list)  # per sender process, when several
    seconds: float = 0.0  # how long the run took (0: not measured)

    @property
    def finished(self) -> bool:
        """Nothing of the issue is left to send (every row sent, failed or skipped)."""
        return self.left == 0 and not self.unplanned

    def summary(self) -> str:
        parts = [f"{self.sent} sent"]
        if self.failed:
            parts.append(f"{self.failed} refused")
        if self.gave_up:
            parts.append(f"{self.gave_up} of them given up after retries")
        if self.deferred:
            parts.append(f"{self.deferred} deferred (temporary failure, retried automatically)")
        if self.policy:
            parts.append(f"{self.policy} of them refused by policy (5.7.x; not suppressed)")
        if self.waiting:
            parts.append(f"{self.waiting} deferred earlier, not due yet")
        parts += self.audience_parts()
        if self.resumed:
            parts.append(f"{self.resumed} resumed after an interruption")
        if self.in_flight:
            parts.append(f"{self.in_flight} being sent by another run, left to it")
        text = (
            f"{self.newsletter} {self.issue_key}: {', '.join(parts)}; "
            f"{self.recipients} recipients, {self.variants} distinct variants"
        )
        if len(self.sent_by) > 1:
            text += (
                f"; {len(self.sent_by)} sender processes "
                f"({' + '.join(str(n) for n in self.sent_by)} sent)"
            )
        if self.not_reached:
            text += f"; relay not reached ({self.stopped}); {self.due} readers still due"
        elif self.stopped:
            text += f"; stopped: {self.stopped}"
        if self.unplanned:
            text += "; not every recipient planned yet (the next run goes on)"
        if self.left and not (self.not_reached and self.left == self.due):
            text += f"; {self.left} left"
            if self.next_retry is not None:
                when = self.next_retry.astimezone(self.zone)
                text += f", next retry due {when:%Y-%m-%d %H:%M:%S %Z}"
        if self.seconds > 0:
            text += f"; took {self.duration()}"
            tried = self.sent + self.failed + self.deferred
            if tried:
                text += f", {tried / self.seconds:.1f} messages/s"
        return text

    def duration(self) -> str:
        """``seconds`` as ``12.3 s`` or, from a minute on, ``1:02:03``."""
        if self.seconds < 60:
            return f"{self.seconds:.1f} s"
        return str(timedelta(seconds=round(self.seconds)))
