"""One-click unsubscribes written together: a group commit.

After a large send, mail providers post their users' one-click unsubscribes in bursts.
Written one transaction each, every POST waits for a commit of its own, and on SQLite
each commit is a flush to disk while holding the database's one write lock: a burst
queues behind the disk. Here the POSTs that arrive while a transaction is being
written wait for the next one, and that one writes all of them: one commit, one flush
for the lot. Each POST is still answered only once its unsubscribe is committed.

A burst is written in transactions of at most ``most`` unsubscribes; the first POST
after a quiet spell is written at once, alone. Should a transaction fail, its
unsubscribes are written again one by one, so that one that cannot be written fails
alone (its POST gets the error page) and the others are answered as usual.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field

from digest.store import Store

__all__ = ["Withdrawals"]

_Item = tuple[int, str, "asyncio.Future[str | None]"]


@dataclass
class _Queue:
    """What waits to be written on one event loop, and the task writing it."""

    pending: list[_Item] = field(default_factory=list)
    writing: asyncio.Task[None] | None = None


class Withdrawals:
    """Unsubscribes through one writer per event loop, many to a transaction."""

    def __init__(self, store: Store, *, most: int = 256) -> None:
        self.store = store
        self.most = most
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )

    async def unsubscribe(self, subscriber_id: int, newsletter: str) -> str | None:
        """:meth:`Store.unsubscribe`, answered once it is committed: the email, or None."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        done: asyncio.Future[str | None] = loop.create_future()
        queue.pending.append((subscriber_id, newsletter, done))
        if queue.writing is None or queue.writing.done():
            queue.writing = loop.create_task(self._write(queue))
        # Shielded: a client that goes away does not take its unsubscribe with it.
        return await asyncio.shield(done)

    async def _write(self, queue: _Queue) -> None:
        loop = asyncio.get_running_loop()
        while queue.pending:
            batch, queue.pending = queue.pending[: self.most], queue.pending[self.most :]
            pairs = [(subscriber_id, newsletter) for subscriber_id, newsletter, _ in batch]
            try:
                emails = await loop.run_in_executor(None, self.store.unsubscribe_many, pairs)
            except Exception:
                await loop.run_in_executor(None, self._one_by_one, batch)
                continue
            for (_, _, done), email in zip(batch, emails, strict=True):
                if not done.done():
                    done.set_result(email)

    def _one_by_one(self, batch: list[_Item]) -> None:
        for subscriber_id, newsletter, done in batch:
            try:
                email = self.store.unsubscribe(subscriber_id, newsletter)
            except Exception as exc:  # that POST's error page
                done.get_loop().call_soon_threadsafe(_settle, done, None, exc)
            else:
                done.get_loop().call_soon_threadsafe(_settle, done, email, None)


def _settle(
    done: asyncio.Future[str | None], email: str | None, error: BaseException | None
) -> None:
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(email)
