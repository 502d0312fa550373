"""Which address a connection is rate-limited by: the peer, or the client behind our proxies.

Pure code. Only a trusted proxy's ``X-Forwarded-For`` is believed: anyone else could write
any address there and rotate it to escape the per-address limit. Each proxy appends the
address it saw, so the list is read right to left, skipping our own proxies; the first
address that is not one of them is the client. Entries left of it were written by the
client or its own proxies and prove nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from assistant.core.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``)."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port (a bare v6 address has several colons)
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # no zone id in a key
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d: one client, one bucket.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_ip(peer: str, forwarded_for: Iterable[str], proxies: Sequence[IPNetwork]) -> str:
    """The address to rate-limit: ``peer`` unless it is a trusted proxy, else the right-most
    untrusted address of the ``X-Forwarded-For`` header values (in the order received).

    When every listed address is a trusted proxy, or the header is missing, the left-most
    trusted one is the client (requests from inside). An entry that is not an address stops
    the walk at the last trusted hop: it cannot be a client's address, only a forgery.
    """
    address = parse_address(peer)
    if address is None:
        return peer or "unknown"
    if not proxies or not _trusted(address, proxies):
        return str(address)
    hops = [item for value in forwarded_for for item in value.split(",") if item.strip()]
    for item in reversed(hops):
        hop = parse_address(item)
        if hop is None:
            break
        address = hop
        if not _trusted(hop, proxies):
            break
    return str(address)
