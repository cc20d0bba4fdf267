"""The names of digest's jobs and queues: stable, as they are stored in the queue's table."""

from __future__ import annotations

TICK = "digest.tick"
RUN_NEWSLETTER = "digest.run_newsletter"
COLLECT_HOST = "digest.collect_host"
PLAN_ISSUE = "digest.plan_issue"
SEND_SLICE = "digest.send_slice"
RETRY_PASS = "digest.retry_pass"
MAILBOX = "digest.mailbox"
MAIL_QUEUE = "digest.mail_queue"
RETRY_STALLED = "digest.retry_stalled"

#: The queues jobs go to: "send" holds the long send slices, "default" the rest; a
#: worker runs every queue unless told otherwise (``digest worker --queues``).
QUEUES = ("default", "send")
