"""Files written for the operator that hold personal data: readable by their owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable and writable by its owner only (0600).

    A new file is created 0600 whatever the umask. An existing regular file of ours is
    emptied and set to 0600 before anything is written to it: what it holds from now on
    is personal data. Anything else (a terminal, a pipe, /dev/stdout, a file of another
    user we may write) is written as it is. OSError if the file cannot be written.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "wb") as out:
        found = os.fstat(descriptor)
        if (
            stat.S_ISREG(found.st_mode)
            and found.st_uid == os.geteuid()
            and stat.S_IMODE(found.st_mode) != 0o600
        ):
            os.fchmod(descriptor, 0o600)
        out.write(data)
