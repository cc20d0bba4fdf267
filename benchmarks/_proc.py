"""What the benchmarks read of processes from /proc: CPU time, and a free port to serve on."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int | str, *, waited_children: bool = False) -> float:
    """CPU seconds (user and system) process ``pid`` has used so far; 0 once it is gone
    (or where /proc is missing). ``waited_children``: with those of its children that
    ended and that it waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the name: state, ppid, …; utime and stime are the 14th and 15th fields of
    # the line, cutime and cstime the 16th and 17th.
    ticks = int(fields[11]) + int(fields[12])
    if waited_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user and system) of a process and its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu_seconds(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return total


def postgres_cpu() -> float:
    """CPU seconds of the local PostgreSQL: its live processes, and the ended backends
    its postmaster waited for; 0 where /proc is missing."""
    total = 0.0
    for process in Path("/proc").glob("[0-9]*"):
        try:
            if process.joinpath("comm").read_text().strip() != "postgres":
                continue
            postmaster = b"\0-D\0" in process.joinpath("cmdline").read_bytes()
        except OSError:
            continue
        total += cpu_seconds(process.name, waited_children=postmaster)
    return total
