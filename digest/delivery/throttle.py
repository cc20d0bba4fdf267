"""Sending no faster than the relay and the receiving domains allow.

:class:`ThrottledTransport` wraps any :class:`~digest.delivery.transport.Transport`: messages
overall per second and per hour (leaky buckets, aiolimiter), and at most so many
messages in flight at once to one recipient domain (large mailbox providers refuse
senders that open many connections at once). A message waits for its turn; nothing
is refused or reordered beyond that.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiolimiter import AsyncLimiter

from digest.config import SmtpSettings
from digest.core.models import Message
from digest.delivery.transport import SendResult, Transport

__all__ = ["ThrottledTransport", "throttled"]


def _domain(address: str) -> str:
    return address.rpartition("@")[2].casefold()


class ThrottledTransport:
    """Hands messages to ``inner`` within the rate and per-domain limits (0: none)."""

    def __init__(
        self,
        inner: Transport,
        *,
        per_second: float = 0,
        per_hour: float = 0,
        per_domain: int = 0,
    ) -> None:
        self.inner = inner
        self._limiters = [
            AsyncLimiter(rate, period)
            for rate, period in ((per_second, 1), (per_hour, 3600))
            if rate > 0
        ]
        self._per_domain = per_domain
        self._domains: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(per_domain)
        )

    async def send(self, message: Message) -> SendResult:
        if self._per_domain:
            async with self._domains[_domain(message.recipient)]:
                return await self._send(message)
        return await self._send(message)

    async def _send(self, message: Message) -> SendResult:
        for limiter in self._limiters:
            await limiter.acquire()
        return await self.inner.send(message)

    async def close(self) -> None:
        await self.inner.close()


def throttled(inner: Transport, settings: SmtpSettings) -> Transport:
    """``inner`` within the limits of ``settings``; ``inner`` itself when there are none."""
    if not (settings.max_per_second or settings.max_per_hour or settings.per_domain_limit):
        return inner
    return ThrottledTransport(
        inner,
        per_second=settings.max_per_second,
        per_hour=settings.max_per_hour,
        per_domain=settings.per_domain_limit,
    )
