"""The jobs the CLI, the scheduler and the web app call (one per command), the
schedule that runs them, the mail sent outside an issue (review requests, the sign-up
queue), and the demo."""

# The stage's modules are its public surface: callers import from them by name.
__all__ = ["demo", "jobs", "mail_queue", "review_mail", "schedule"]
