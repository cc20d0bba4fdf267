"""Sources reach public addresses only, unless a source has allow_private.

Real sockets: local HTTP servers (port 0) stand for the addresses a source must not
reach, and a refusal is checked by what those servers did not receive. Where a test
needs a public host, a server on 127.0.0.2 stands in for one: the address check is
told to treat that one address as public, and nothing else changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import httpx
import pytest

from digest.core.errors import SourceError
from digest.sources import addresses
from digest.sources import fetch as fetch_module
from digest.sources.addresses import address_problem
from tests.sources.test_sources_feed import FEED, FeedServer, fetch, respond

STAND_IN_PUBLIC = ipaddress.ip_address("127.0.0.2")


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        running.routes["/feed.xml"] = respond(FEED)
        yield running


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch) -> Iterator[FeedServer]:
    """A server on 127.0.0.2, which the address check takes for a public host."""
    real = addresses.address_problem

    def problem(address: addresses.IPAddress, *, allow_private: bool = False) -> str | None:
        return None if address == STAND_IN_PUBLIC else real(address, allow_private=allow_private)

    monkeypatch.setattr(addresses, "address_problem", problem)
    with FeedServer(str(STAND_IN_PUBLIC)) as running:
        running.routes["/feed.xml"] = respond(FEED)
        yield running


async def refused(url: str) -> str:
    with pytest.raises(SourceError) as caught:
        await fetch(url, allow_private=False)
    return caught.value.reason


async def test_loopback_is_refused_without_allow_private(server: FeedServer) -> None:
    url = f"{server.url}/feed.xml"
    assert await refused(url) == f"refused to fetch {url}: 127.0.0.1 is a loopback address"
    assert server.requests == []


async def test_loopback_by_name_is_refused(server: FeedServer) -> None:
    url = f"http://localhost:{server.port}/feed.xml"
    reason = await refused(url)
    assert reason.startswith(f"refused to fetch {url}: ")
    assert reason.endswith("is a loopback address")
    assert server.requests == []


async def test_loopback_is_fetched_with_allow_private(server: FeedServer) -> None:
    result = await fetch(f"http://localhost:{server.port}/feed.xml", allow_private=True)
    assert len(result.articles) == 1


async def test_public_stand_in_is_fetched(public: FeedServer) -> None:
    assert len((await fetch(f"{public.url}/feed.xml", allow_private=False)).articles) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_redirect_to_loopback_is_refused(
    public: FeedServer, server: FeedServer, host: str
) -> None:
    target = f"http://{host}:{server.port}/feed.xml"
    public.routes["/weiter"] = respond(b"", status=302, content_type="text/plain", Location=target)
    reason = await refused(f"{public.url}/weiter")
    assert reason.startswith(f"refused to fetch {target}: ")
    assert reason.endswith("is a loopback address")
    assert [path for path, _ in public.requests] == ["/weiter"]
    assert server.requests == []


async def test_connection_is_checked_again_when_dns_changes_its_answer(
    server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check before the request is fooled (as by a DNS answer that changes between
    # check and connect); the client's network backend still refuses the connection.
    async def fooled(url: httpx.URL) -> str | None:
        return None

    monkeypatch.setattr(fetch_module, "refusal", fooled)
    url = f"http://localhost:{server.port}/feed.xml"
    reason = await refused(url)
    assert reason.startswith(f"cannot fetch {url}: refused to connect to ")
    assert reason.endswith("which is a loopback address")
    assert server.requests == []


async def test_metadata_address_is_refused_before_connecting() -> None:
    # Nothing listens there on a test machine: a refusal proves no connection was tried
    # (a connection would time out or fail with another reason).
    url = "http://169.254.169.254/latest/meta-data/"
    assert await refused(url) == (
        f"refused to fetch {url}: 169.254.169.254 is the cloud metadata address"
    )
    with pytest.raises(SourceError, match="is the cloud metadata address"):
        await fetch(url, allow_private=True)  # never allowed


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3/feed.xml", "10.1.2.3 is a private address"),
        ("https://192.168.0.1/feed.xml", "192.168.0.1 is a private address"),
        ("http://[::1]:8080/feed.xml", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/feed.xml", "::ffff:7f00:1 is a loopback address"),
        ("http://0.0.0.0/feed.xml", "0.0.0.0 is an unspecified address"),
        ("http://224.0.0.1/feed.xml", "224.0.0.1 is a multicast address"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254 is the cloud metadata address"),
        ("http://2130706433/feed.xml", "127.0.0.1 is a loopback address"),
    ],
)
async def test_non_public_literals_are_refused(url: str, reason: str) -> None:
    assert await refused(url) == f"refused to fetch {httpx.URL(url)}: {reason}"


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("8.8.8.8", None),
        ("2a00:1450:4001:80b::200e", None),
        ("127.0.0.1", "is a loopback address"),
        ("169.254.10.1", "is a link-local address"),
        ("fe80::1", "is a link-local address"),
        ("172.16.5.4", "is a private address"),
        ("fc00::1", "is a private address"),
        ("100.64.0.1", "is a non-public address"),  # carrier-grade NAT
        ("240.0.0.1", "is a reserved address"),
        ("::ffff:10.0.0.1", "is a private address"),
        ("::ffff:8.8.8.8", None),
        ("2002:7f00:1::", "is a loopback address"),  # 6to4 around 127.0.0.1
        ("ff02::1", "is a multicast address"),
        ("169.254.169.254", "is the cloud metadata address"),
    ],
)
def test_address_problem(address: str, problem: str | None) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


# The forbidden addresses in every IPv6 form that carries an IPv4 address: a NAT64
# gateway, a 6to4 or Teredo relay or a dual-stack host delivers the request to it.
CARRIED = {
    "169.254.169.254": [
        "::ffff:a9fe:a9fe",  # IPv4-mapped
        "::a9fe:a9fe",  # IPv4-compatible (deprecated)
        "2002:a9fe:a9fe::1",  # 6to4
        "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo (client address inverted)
        "64:ff9b::a9fe:a9fe",  # NAT64, well-known prefix
        "64:ff9b:1::a9fe:a9fe",  # NAT64, local-use prefix with a /96
        "64:ff9b:1:a9fe:a9:fe00::",  # NAT64, local-use prefix as a /48
    ],
    "168.63.129.16": ["::ffff:a83f:8110", "64:ff9b::a83f:8110", "2002:a83f:8110::"],
    "100.100.100.200": ["64:ff9b::6464:64c8", "::6464:64c8"],
}


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("fec0::1", "is a site-local address"),  # deprecated, but routed inside sites
        ("feff::1", "is a site-local address"),
        ("64:ff9b::7f00:1", "is a loopback address"),
        ("64:ff9b::a00:1", "is a private address"),
        ("64:ff9b::808:808", None),  # a public host behind a NAT64 gateway
        ("2002:a00:1::", "is a private address"),
        ("2002:808:808::", None),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "is a loopback address"),  # Teredo
        ("::7f00:1", "is a reserved address"),  # IPv4-compatible
        ("::808:808", "is a reserved address"),
        ("64:ff9b:1::808:808", "is a reserved address"),
        *[(form, "is the cloud metadata address") for forms in CARRIED.values() for form in forms],
    ],
)
def test_address_problem_of_ipv6_forms(address: str, problem: str | None) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize("form", [form for forms in CARRIED.values() for form in forms])
def test_metadata_in_any_form_is_refused_with_allow_private(form: str) -> None:
    problem = address_problem(ipaddress.ip_address(form), allow_private=True)
    assert problem == "is the cloud metadata address"


async def test_metadata_behind_nat64_is_refused_before_connecting() -> None:
    url = "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/"
    with pytest.raises(SourceError) as caught:
        await fetch(url, allow_private=True, timeout=2)
    assert caught.value.reason == (
        f"refused to fetch {url}: 64:ff9b::a9fe:a9fe is the cloud metadata address"
    )


def test_allow_private_allows_all_but_metadata() -> None:
    for address in ("127.0.0.1", "10.0.0.1", "fe80::1", "::ffff:192.168.1.1", "fec0::1"):
        assert address_problem(ipaddress.ip_address(address), allow_private=True) is None
    metadata = ipaddress.ip_address("169.254.169.254")
    assert address_problem(metadata, allow_private=True) == "is the cloud metadata address"
