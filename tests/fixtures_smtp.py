"""The ``smtp_server`` fixture: a recording aiosmtpd server configured by a marker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.smtp_server import RecordingServer


@pytest.fixture
async def smtp_server(request: pytest.FixtureRequest) -> AsyncIterator[RecordingServer]:
    """A running :class:`RecordingServer`; options from ``@pytest.mark.smtp_server(...)``."""
    marker = request.node.get_closest_marker("smtp_server")
    options = dict(marker.kwargs) if marker else {}
    async with RecordingServer(**options) as server:
        yield server
