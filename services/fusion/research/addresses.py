"""Which addresses web_fetch may connect to: public ones, and the private ones an operator opened.

A model chooses the URLs it fetches, and a page chooses where it redirects, so a fetch must never reach
what only the panel worker can reach: its own host, the cluster's private network, a cloud's metadata
service. The check is on the addresses a name resolved to (the caller then connects to the address
that passed, so the name cannot resolve differently a moment later). No I/O here.
"""

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from fusion.research.base import ToolError

__all__ = ["AddressGuard", "AllowEntry", "parse_allow_entry", "refusal_reason"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "FUSION_FETCH_ALLOW_HOSTS"


def _networks(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Checked in this order, so the most specific reason wins (a metadata address is also link-local).
_REFUSED: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    (
        "a cloud metadata address",
        _networks("169.254.169.254/32", "169.254.170.2/32", "100.100.100.200/32", "fd00:ec2::254/128"),
    ),
    ('an unspecified ("this network") address', _networks("0.0.0.0/8", "::/128")),
    ("a loopback address", _networks("127.0.0.0/8", "::1/128")),
    ("a private address", _networks("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("a link-local address", _networks("169.254.0.0/16", "fe80::/10")),
    ("a shared (carrier-grade NAT) address", _networks("100.64.0.0/10")),
    ("a multicast address", _networks("224.0.0.0/4", "ff00::/8")),
    (
        "a reserved address",
        _networks(
            "192.0.0.0/24",  # IETF protocol assignments
            "192.0.2.0/24",  # documentation
            "198.18.0.0/15",  # benchmarking
            "198.51.100.0/24",  # documentation
            "203.0.113.0/24",  # documentation
            "240.0.0.0/4",  # future use, and the broadcast address
            "::/8",  # reserved, including the deprecated IPv4-compatible addresses
            "64:ff9b:1::/48",  # local-use NAT64
            "100::/64",  # discard
            "2001::/23",  # IETF protocol assignments
            "2001:db8::/32",  # documentation
            "fec0::/10",  # deprecated site-local
        ),
    ),
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when packets to it reach that IPv4 address:
    IPv4-mapped, 6to4 and well-known NAT64 (Teredo is within 2001::/23, refused as reserved)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why a fetch may not connect to `address` unless it is allowed on purpose ("a loopback address"),
    or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return f"{reason} (as {embedded})" if reason else None
    for reason, networks in _REFUSED:
        if any(address in network for network in networks):
            return reason
    if not address.is_global:
        # Whatever else the standard library knows not to be public, should the table above miss it.
        return "not a public address"
    return None


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """One entry of the allow-list: a host name or a network (an address is a network of one), and the
    one port it opens (any port when None)."""

    name: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def opens(self, host: str, port: int, address: IPAddress) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.name is not None:
            return self.name == _normal_name(host)
        assert self.network is not None
        if address.version != self.network.version and isinstance(address, ipaddress.IPv6Address):
            mapped = _embedded_ipv4(address)
            return mapped is not None and mapped in self.network
        return address in self.network


def _normal_name(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65_535:
        raise ValueError(f"allow-list entry {entry!r}: {text!r} is not a port (1-65535)")
    return int(text)


def _network(text: str, entry: str) -> IPNetwork | None:
    """The network `text` names (an address, or a CIDR range), or None when it names neither."""
    try:
        return ipaddress.ip_network(text)
    except ValueError as error:
        if "/" in text or text.count(":") > 1:
            # Meant as an address or a range, but wrong (host bits set, a bad prefix): say so.
            raise ValueError(f"allow-list entry {entry!r}: {error}") from None
        return None


def parse_allow_entry(entry: str) -> AllowEntry:
    """`entry` as written in FUSION_FETCH_ALLOW_HOSTS: `name`, `address` or `cidr`, each optionally
    followed by `:port`; an IPv6 address or range with a port goes in brackets (`[fd00::/8]:8443`)."""
    text = entry.strip()
    if not text:
        raise ValueError("allow-list entry is empty")
    port: int | None = None
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(
                f"allow-list entry {entry!r}: write an IPv6 address with a port as [address]:port"
            )
        if rest:
            port = _port(rest[1:], entry)
        network = _network(inside, entry)
        if network is None or network.version != 6:
            raise ValueError(f"allow-list entry {entry!r}: only an IPv6 address or range goes in brackets")
        return AllowEntry(network=network, port=port)
    if text.count(":") == 1:
        text, _, port_text = text.partition(":")
        port = _port(port_text, entry)
    network = _network(text, entry)
    if network is not None:
        return AllowEntry(network=network, port=port)
    name = _normal_name(text)
    labels = name.split(".")
    valid = all(label and all(c.isascii() and (c.isalnum() or c in "-_") for c in label) for label in labels)
    if not valid or labels[-1].isdigit():  # all digits: a mistyped address, not a name
        raise ValueError(f"allow-list entry {entry!r} is not a host name, an address or a CIDR range")
    return AllowEntry(name=name, port=port)


class AddressGuard:
    """Decides which address a fetch connects to. `allow` is Settings.fetch_allow_hosts: the private
    hosts a fetch may reach on purpose. Raises ValueError on an entry it cannot read."""

    def __init__(self, allow: Sequence[str]) -> None:
        self._allow = tuple(parse_allow_entry(entry) for entry in allow)

    def check(self, host: str, port: int, addresses: Sequence[str]) -> str:
        """The address to connect to for `host` (as written in the URL) on `port`, given the addresses
        it resolved to. Every address must be public or allowed: if a name resolves to a public and a
        private address, which one a connection would use is not ours to choose, so both must pass.
        Raises ToolError naming the first address refused."""
        if not addresses:
            raise ToolError(f"refused: {host} resolved to no address")
        for text in addresses:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise ToolError(f"refused: {host} resolved to {text!r}, which is not an IP address") from None
            reason = refusal_reason(address)
            if reason is not None and not any(entry.opens(host, port, address) for entry in self._allow):
                named = text if _normal_name(host) == text.lower() else f"{host} ({text})"
                raise ToolError(f"refused: {named} is {reason}; allow it with {ALLOW_SETTING}")
        return addresses[0]
