"""Several relays by weight, with failover, against real aiosmtpd servers."""

from __future__ import annotations

import random
import socket
import tomllib
from dataclasses import replace
from typing import Any

import pytest

from digest.config import RelaySettings, parse_settings
from digest.core.errors import ConfigError, RelayConfigError, TransportUnavailable
from digest.delivery.relays import RelayGroup, open_transport
from digest.delivery.throttle import ThrottledTransport
from digest.delivery.transport import SmtpPool
from tests.delivery.test_transport import message
from tests.smtp_server import RecordingServer


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_messages_go_to_the_relays_by_weight() -> None:
    async with RecordingServer() as heavy, RecordingServer() as light:
        settings = replace(
            heavy.settings(pool_size=1),
            relays=(
                RelaySettings("127.0.0.1", heavy.port, weight=3),
                RelaySettings("127.0.0.1", light.port, weight=1, pool_size=2),
            ),
        )
        group = RelayGroup(settings, rng=random.Random(7))
        try:
            for n in range(80):
                assert (await group.send(message(n))).ok
        finally:
            await group.close()
        assert len(heavy.messages) + len(light.messages) == 80
        assert 45 <= len(heavy.messages) <= 75 and len(light.messages) >= 5
        assert [r.pool.settings.pool_size for r in group.relays] == [1, 2]


async def test_a_relay_that_stops_answering_is_left_out_and_the_other_takes_over() -> None:
    async with RecordingServer() as spare:
        settings = replace(
            spare.settings(timeout=2),
            relays=(
                RelaySettings("127.0.0.1", _closed_port(), weight=100),
                RelaySettings("127.0.0.1", spare.port, weight=1),
            ),
        )
        group = RelayGroup(settings, rng=random.Random(1))
        try:
            for n in range(10):
                assert (await group.send(message(n))).ok
        finally:
            await group.close()
        assert len(spare.messages) == 10
        # the dead relay was tried once, then left out for its cool-off
        dead = group.relays[0]
        assert dead.down_until > 0 and dead.pool.connections_opened == 0


async def test_when_no_relay_answers_the_send_fails() -> None:
    async with RecordingServer() as gone:
        settings = replace(gone.settings(timeout=2), relays=(RelaySettings("127.0.0.1", 1),))
    settings = replace(
        settings, relays=(*settings.relays, RelaySettings("127.0.0.1", _closed_port()))
    )
    group = RelayGroup(settings)
    try:
        with pytest.raises(TransportUnavailable) as info:
            await group.send(message(1))
    finally:
        await group.close()
    assert isinstance(info.value, RelayConfigError) and "smtp.relays" in str(info.value)


async def test_open_transport_picks_pool_group_and_limits(smtp_server: RecordingServer) -> None:
    plain = smtp_server.settings()
    assert isinstance(open_transport(plain), SmtpPool)
    grouped = replace(plain, relays=(RelaySettings("127.0.0.1", smtp_server.port),))
    assert isinstance(open_transport(grouped), RelayGroup)
    limited = open_transport(replace(grouped, per_domain_limit=2))
    assert isinstance(limited, ThrottledTransport) and isinstance(limited.inner, RelayGroup)
    await limited.close()


def _config(smtp: str) -> dict[str, Any]:
    data = tomllib.loads(smtp)
    data["secret_key"] = "test-secret-of-16-chars"
    return data


def test_relays_are_read_from_the_config() -> None:
    table = """
[smtp]
pool_size = 3

[[smtp.relays]]
host = "mx1.example.org"
port = 587
weight = 2

[[smtp.relays]]
host = "mx2.example.org"
"""
    settings = parse_settings(_config(table), environ={})
    assert settings.smtp.relays == (
        RelaySettings("mx1.example.org", 587, 2, 0),
        RelaySettings("mx2.example.org", 25, 1, 0),
    )
    with pytest.raises(ConfigError, match=r"smtp.relays\[1\].weight"):
        parse_settings(
            _config(table.replace('host = "mx2.example.org"', 'host = "x"\nweight = 0')),
            environ={},
        )
