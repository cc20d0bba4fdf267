"""What comes back: bounces and complaints, and unsubscribe requests by mail, read
from a Maildir or IMAP mailbox into the ledger and the suppression list."""

__all__: list[str] = []
