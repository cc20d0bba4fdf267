"""Keep source fetches off the machine's own network: no loopback, private or metadata hosts.

A source URL (or a redirect from one) that points at 127.0.0.1, the LAN or a cloud
metadata service would otherwise be fetched, and its answer mailed to every subscriber.
Two checks enforce the rule:

* :func:`refusal` resolves a URL's host before each request (the first and every redirect
  hop) and names the first address that is not public, for a clear error;
* :class:`GuardedBackend`, the network backend of :func:`guarded_transport`, resolves the
  host again when it opens a connection, checks every address and connects to a checked
  address itself, so a DNS answer that changes between the two (DNS rebinding) cannot
  slip through. TLS still verifies the certificate against the host name.

A source with ``allow_private = true`` may reach every address but the metadata
services; :func:`allowing_private` marks the fetch of such a source for the backend,
which sees no per-source settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from contextvars import ContextVar

import httpcore
import httpx

__all__ = [
    "METADATA_ADDRESSES",
    "address_problem",
    "refusal",
    "allowing_private",
    "GuardedBackend",
    "guarded_transport",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud metadata services (AWS, GCP, Azure, OpenStack; AWS over IPv6; Azure's wire server;
#: Alibaba). Most are link-local or private anyway; Azure's is a public address.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "168.63.129.16", "100.100.100.200")
)

_ALLOW_PRIVATE: ContextVar[bool] = ContextVar("digest_allow_private", default=False)


#: Where an IPv6 address carries an IPv4 address that a gateway or tunnel reaches for it.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use prefix
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291, deprecated
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
#: The prefix lengths RFC 6052 allows within the local-use prefix; each puts the IPv4
#: address in another place, and the operator may use any of them.
_NAT64_LOCAL_LENGTHS = (48, 56, 64, 96)


def address_problem(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why ``address`` may not be fetched from, as "is a … address"; None if it may.

    With ``allow_private`` only the metadata addresses are refused. An IPv6 address that
    carries an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64) is refused
    when the IPv4 address is: a translator or tunnel would deliver the request there.
    """
    embedded, translated = _embedded_ipv4(address)
    if address in METADATA_ADDRESSES or any(a in METADATA_ADDRESSES for a in embedded):
        return "is the cloud metadata address"
    if translated:  # as public as the address it carries
        return address_problem(embedded[0], allow_private=allow_private)
    if allow_private:
        return None
    for kind, test in (
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a site-local", getattr(address, "is_site_local", False)),
        ("a multicast", address.is_multicast),
        ("a reserved", address.is_reserved),
        ("a private", address.is_private),
        ("a non-public", not address.is_global),
    ):
        if test:
            return f"is {kind} address"
    return None


def _embedded_ipv4(address: IPAddress) -> tuple[list[ipaddress.IPv4Address], bool]:
    """The IPv4 addresses an IPv6 address may carry, and whether it only translates one.

    IPv4-mapped, 6to4, Teredo and well-known NAT64 addresses stand for the IPv4 address
    they carry; IPv4-compatible and local-use NAT64 ones are not public themselves, so
    only the metadata addresses among those they may carry matter.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return [], False
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped], True
    if address.sixtofour is not None:
        return [address.sixtofour], True
    if address.teredo is not None:
        return [address.teredo[1]], True
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64:
        return [low32], True
    if address in _NAT64_LOCAL:
        return [_rfc6052_ipv4(address, length) for length in _NAT64_LOCAL_LENGTHS], False
    if address in _IPV4_COMPATIBLE and low32 not in _THIS_NETWORK:  # not :: or ::1
        return [low32], False
    return [], False


def _rfc6052_ipv4(address: ipaddress.IPv6Address, prefix_length: int) -> ipaddress.IPv4Address:
    """The IPv4 address behind a NAT64 prefix of ``prefix_length`` bits (RFC 6052 2.2)."""
    bits = int(address)
    # Bits 64-71 (the "u" octet) are always zero and never hold address bits.
    without_u = ((bits >> 64) << 56) | (bits & ((1 << 56) - 1))
    start = prefix_length if prefix_length <= 64 else prefix_length - 8
    return ipaddress.IPv4Address((without_u >> (120 - start - 32)) & 0xFFFFFFFF)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _first_problem(addresses: Iterable[IPAddress]) -> tuple[IPAddress, str] | None:
    allow_private = _ALLOW_PRIVATE.get()
    for address in addresses:
        if (problem := address_problem(address, allow_private=allow_private)) is not None:
            return address, problem
    return None


async def refusal(url: httpx.URL) -> str | None:
    """Why ``url`` may not be fetched, as "127.0.0.1 is a loopback address"; else None.

    A host that does not resolve is left to the request to report.
    """
    try:
        addresses = await resolve(url.host, url.port or (443 if url.scheme == "https" else 80))
    except (OSError, UnicodeError):
        return None
    found = _first_problem(addresses)
    return None if found is None else f"{found[0]} {found[1]}"


@contextlib.contextmanager
def allowing_private(allow: bool) -> Iterator[None]:
    """Within this block (and the tasks it starts), fetches may reach non-public addresses."""
    token = _ALLOW_PRIVATE.set(allow)
    try:
        yield
    finally:
        _ALLOW_PRIVATE.reset(token)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to public addresses it checked."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        found = _first_problem(addresses)
        if found is not None:
            raise httpcore.ConnectError(f"refused to connect to {found[0]}, which {found[1]}")
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not used for sources")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport, with its connection pool on a :class:`GuardedBackend`."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx has no parameter for the network backend; the pool it builds is replaced by
    # the same pool on the guarded backend.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(),
    )
    return transport
