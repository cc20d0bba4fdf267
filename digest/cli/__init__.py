"""The ``digest`` command: a click group in ``base`` and one module per command group.

Importing the package registers every command on :data:`cli`; :func:`main` runs it.
"""

# Each command module registers its commands on `cli` when imported.
from digest.cli import (  # noqa: F401
    backup,
    cluster,
    content,
    dkim,
    editors,
    mailboxes,
    run,
    sending,
    store,
    subscribers,
)
from digest.cli.base import cli, main

__all__ = ["cli", "main"]
