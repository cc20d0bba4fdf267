"""Rate limits and per-domain concurrency, against a real aiosmtpd server."""

from __future__ import annotations

import asyncio

import pytest

from digest.delivery.throttle import ThrottledTransport, throttled
from digest.delivery.transport import SmtpPool
from tests.delivery.test_transport import message
from tests.smtp_server import RecordingServer


@pytest.mark.smtp_server(delay=0.05)
async def test_at_most_n_messages_at_once_to_one_domain(smtp_server: RecordingServer) -> None:
    pool = SmtpPool(smtp_server.settings(pool_size=6))
    transport = ThrottledTransport(pool, per_domain=2)
    try:
        sends = [message(n, f"leser{n}@gross.example") for n in range(8)]
        sends += [message(n, f"leser{n}@klein.example") for n in range(8, 12)]
        results = await asyncio.gather(*(transport.send(m) for m in sends))
    finally:
        await transport.close()
    assert all(r.ok for r in results) and len(smtp_server.messages) == 12
    assert smtp_server.handler.peak_in_data["gross.example"] == 2
    assert smtp_server.handler.peak_in_data["klein.example"] == 2
    # without the limit the same pool has more at once to one domain
    unlimited = SmtpPool(smtp_server.settings(pool_size=6))
    try:
        await asyncio.gather(*(unlimited.send(message(n, f"x{n}@offen.example")) for n in range(8)))
    finally:
        await unlimited.close()
    assert smtp_server.handler.peak_in_data["offen.example"] > 2


async def test_messages_per_second_are_spread_out(smtp_server: RecordingServer) -> None:
    settings = smtp_server.settings(pool_size=4, max_per_second=10)
    transport = throttled(SmtpPool(settings), settings)
    assert isinstance(transport, ThrottledTransport)
    try:
        await asyncio.gather(*(transport.send(message(n)) for n in range(25)))
    finally:
        await transport.close()
    times = smtp_server.handler.received_at
    assert len(times) == 25
    # a bucket of 10 goes at once, the other 15 at 10 a second: never faster than that
    assert times[-1] - times[0] >= 1.3


def test_no_limits_no_wrapper(smtp_server: RecordingServer) -> None:
    pool = SmtpPool(smtp_server.settings())
    assert throttled(pool, pool.settings) is pool
