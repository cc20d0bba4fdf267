"""Message → Delivery: the ledger of an issue driven through a transport (claim,
send, record), by one or several sender processes, within the relays' limits; retries,
the dry run and the status of a send."""

from digest.delivery.deliver import send_issue
from digest.delivery.dryrun import DryRunReport, dry_run
from digest.delivery.planning import audience, current_recipients
from digest.delivery.relays import open_transport
from digest.delivery.report import DeliveryReport, Progress
from digest.delivery.status import format_status, issue_statuses, requeue
from digest.delivery.transport import SendResult, SmtpPool, Transport

__all__ = [
    "DeliveryReport",
    "DryRunReport",
    "Progress",
    "SendResult",
    "SmtpPool",
    "Transport",
    "audience",
    "current_recipients",
    "dry_run",
    "format_status",
    "issue_statuses",
    "open_transport",
    "requeue",
    "send_issue",
]
