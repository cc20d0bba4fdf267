"""Several machines sharing the work through a queue: Procrastinate on the store's PostgreSQL.

Off unless ``[cluster] queue = "procrastinate"``; without it nothing here is imported and
digest runs on one machine as ever (``digest run``, ``digest send``). With it the schedule
is a tick job, and collecting, planning, sending, retries, mailbox polls and confirmation
mails are coarse jobs that ``digest worker`` processes on any machine run (see
``docs/operations.md``, "Several machines"). The delivery ledger stays the only
authority on who was sent: a job run twice sends nobody twice.

Modules: ``app`` (the Procrastinate app, the task names and how to defer them),
``tasks`` (what each job does), ``worker`` (``digest worker``), ``tick`` (the schedule),
``sending`` (an issue's plan and send slices), ``chores`` (collecting a host's sources,
mailbox passes, the mail queue), ``schema`` (``digest migrate``'s part).
"""
