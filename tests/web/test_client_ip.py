"""Pure tests of the address a connection is rate-limited by, and of the options from settings."""

from __future__ import annotations

import pytest

from assistant.bus.ratelimit import Bucket
from assistant.core.config import Settings, parse_networks
from web.client_ip import client_ip, parse_address
from web.service import GatewayOptions

PROXIES = parse_networks("10.0.0.0/8, 192.168.1.7, fd00::/8")


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # Not from a proxy: the header is anyone's to write, so it is ignored.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        # One proxy: the address it appended.
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        # The client's own entries left of the first untrusted address prove nothing.
        ("10.0.0.2", ["1.1.1.1, 198.51.100.1"], "198.51.100.1"),
        # Two proxies, two headers: read right to left across both, in order received.
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1", "192.168.1.7"], "198.51.100.1"),
        # Only proxies listed, or no header: the left-most proxy is the client.
        ("10.0.0.2", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
        ("10.0.0.2", [], "10.0.0.2"),
        # Garbage stops the walk at the last trusted hop.
        ("10.0.0.2", ["198.51.100.1, not-an-ip, 10.9.9.9"], "10.9.9.9"),
        # Ports, brackets, IPv6 and IPv4-mapped peers.
        ("10.0.0.2", ["198.51.100.1:4711"], "198.51.100.1"),
        ("fd00::1", ["[2001:db8::5]:443"], "2001:db8::5"),
        ("::ffff:10.0.0.2", ["2001:db8::5"], "2001:db8::5"),
        ("::ffff:203.0.113.9", [], "203.0.113.9"),
        ("", [], "unknown"),
    ],
)
def test_client_ip(peer: str, forwarded: list[str], expected: str) -> None:
    """The right-most untrusted address behind trusted proxies, else the peer."""
    assert client_ip(peer, forwarded, PROXIES) == expected


def test_without_trusted_proxies_the_peer_counts() -> None:
    """With no proxies configured X-Forwarded-For is never read."""
    assert client_ip("10.0.0.2", ["198.51.100.1"], ()) == "10.0.0.2"


def test_parse_address_refuses_what_is_no_address() -> None:
    """Host names, empty strings and unclosed brackets are not addresses."""
    assert [parse_address(t) for t in ("lb.internal", "", "[::1", " 1.2.3.4 ")] == [
        None,
        None,
        None,
        parse_address("1.2.3.4"),
    ]


def test_gateway_options_from_settings() -> None:
    """ASSISTANT_RATE_IP / RATE_KEY / TRUSTED_PROXIES become the gateway's buckets and proxies."""
    settings = Settings(rate_ip="5/10", rate_key="50/100", trusted_proxies="10.0.0.0/8")
    options = GatewayOptions.from_settings(settings)
    assert (options.ip_bucket, options.key_bucket) == (Bucket(5, 10), Bucket(50, 100))
    assert [str(n) for n in options.trusted_proxies] == ["10.0.0.0/8"]
    defaults = GatewayOptions.from_settings(Settings())
    assert (defaults.ip_bucket, defaults.key_bucket) == (Bucket(20, 60), Bucket(200, 600))
