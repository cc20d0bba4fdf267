"""What comes back: bounces and complaints, and unsubscribe requests by mail, read
from a Maildir or IMAP mailbox into the ledger and the suppression list."""

# The stage's modules are its public surface: callers import from them by name.
__all__ = ["bounces", "mailbox"]
