"""Run the parsing of one source in a child process that is killed at its deadline.

Parsing and sanitizing are CPU-bound, and a feed can be built to make them slow
(feedparser takes seconds on megabytes of markup in one field). A thread cannot be
stopped, so a timeout around one would only stop waiting while it kept burning CPU; a
process can be killed. Children are forked from a fork server that has the parsing
modules imported already, so starting one costs milliseconds, not an interpreter start.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["WorkerTimeout", "WorkerFailed", "run_in_worker"]

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(
    ["digest.sources.feed", "digest.sources.listing", "digest.sources.article", "trafilatura"]
)


class WorkerTimeout(Exception):
    """The child did not finish before its deadline and was killed."""


class WorkerFailed(Exception):
    """The child ended without an answer (killed from outside, out of memory)."""


async def run_in_worker(function: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    """``function(*args)`` in a child process, killed after ``timeout`` seconds.

    ``function`` and its arguments and result must be picklable; an exception it raises
    is re-raised here when it can be pickled.
    """
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child, args=(sender, function, args), daemon=True)
    try:
        process.start()
        sender.close()  # else the pipe would never report the child's end as closed
        if not await _readable(receiver, timeout):
            raise WorkerTimeout
        try:
            ok, value = receiver.recv()
        except (EOFError, OSError):
            raise WorkerFailed from None
    finally:
        process.kill()
        process.join()
        process.close()
        receiver.close()
    if not ok:
        raise value
    return value


async def _readable(connection: Connection, timeout: float) -> bool:
    """Whether ``connection`` has something to read (an answer, or EOF) within ``timeout``."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(connection.fileno(), wake)
    try:
        async with asyncio.timeout(max(timeout, 0)):
            await ready
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(connection.fileno())


def _child(sender: Connection, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        answer: tuple[bool, Any] = (True, function(*args))
    except Exception as exc:
        answer = (False, exc)
    try:
        sender.send(answer)
    except Exception as exc:  # an exception that cannot be pickled
        sender.send((False, WorkerFailed(f"{type(exc).__name__}: {exc}")))
    sender.close()
