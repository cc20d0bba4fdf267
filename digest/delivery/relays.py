"""Several relays by weight, with failover; and the transport a send opens.

With ``[[smtp.relays]]`` configured, :class:`RelayGroup` keeps one
:class:`~digest.delivery.transport.SmtpPool` per relay (its own connection limit) and hands
each message to a relay chosen at random in proportion to the weights. A relay on
which no session can be opened (it stopped answering, refuses connections) is left
out for :data:`COOL_OFF` and the message goes to another one at once: nothing of it
reached the first relay, so there is no risk of a duplicate. A failure after the
message was on its way is not retried elsewhere; the caller defers it as usual.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace

from digest.config import SmtpSettings
from digest.core.errors import RelayConfigError, SendError, TransportUnavailable
from digest.core.models import Message
from digest.delivery.throttle import throttled
from digest.delivery.transport import SendResult, SmtpPool, Transport

__all__ = ["COOL_OFF", "RelayGroup", "connection_slots", "open_transport"]

#: Seconds a relay that stopped answering is left out before it is tried again.
COOL_OFF = 60.0


@dataclass(eq=False)
class _Relay:
    pool: SmtpPool
    weight: int
    down_until: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.pool.settings.host}:{self.pool.settings.port}"


class RelayGroup:
    """Sends each message through one of several relays, by weight, failing over."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        cool_off: float = COOL_OFF,
        rng: random.Random | None = None,
    ) -> None:
        if not settings.relays:
            raise ValueError("RelayGroup needs at least one relay in settings.relays")
        self.relays = [
            _Relay(
                SmtpPool(
                    replace(
                        settings,
                        host=relay.host,
                        port=relay.port,
                        pool_size=relay.pool_size or settings.pool_size,
                        relays=(),
                    )
                ),
                relay.weight,
            )
            for relay in settings.relays
        ]
        self.cool_off = cool_off
        self._rng = rng or random.Random()

    def _pick(self, tried: set[int]) -> _Relay | None:
        candidates = [r for r in self.relays if id(r) not in tried]
        if not candidates:
            return None
        now = time.monotonic()
        # Relays in their cool-off are used only when no other one is left.
        up = [r for r in candidates if r.down_until <= now] or candidates
        return self._rng.choices(up, weights=[r.weight for r in up])[0]

    async def send(self, message: Message) -> SendResult:
        tried: set[int] = set()
        failures: list[SendError] = []
        while (relay := self._pick(tried)) is not None:
            tried.add(id(relay))
            try:
                result = await relay.pool.send(message)
            except SendError as exc:
                if not exc.unsent:
                    raise  # the relay may have the message: never send it elsewhere too
                relay.down_until = time.monotonic() + self.cool_off
                failures.append(exc)
                continue
            relay.down_until = 0.0
            return result
        reasons = "; ".join(str(f) for f in failures)
        if all(not f.temporary for f in failures):
            raise RelayConfigError(f"no relay could be used: {reasons}", setting="smtp.relays")
        raise TransportUnavailable(f"no relay could be reached: {reasons}")

    async def close(self) -> None:
        for relay in self.relays:
            await relay.pool.close()


def connection_slots(settings: SmtpSettings) -> int:
    """How many messages the transport of ``settings`` can have in flight at once."""
    if not settings.relays:
        return settings.pool_size
    return sum(relay.pool_size or settings.pool_size for relay in settings.relays)


def open_transport(settings: SmtpSettings) -> Transport:
    """The transport for ``settings``: the relay(s), within the configured rate limits."""
    inner: Transport = RelayGroup(settings) if settings.relays else SmtpPool(settings)
    return throttled(inner, settings)
