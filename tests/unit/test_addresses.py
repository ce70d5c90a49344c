"""Which addresses web_fetch may connect to (fusion.research.addresses): no I/O."""

import ipaddress

import pytest
from fusion.research.addresses import AddressGuard, AllowEntry, parse_allow_entry, refusal_reason
from fusion.research.base import ToolError


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("2001:db8::1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("::127.0.0.1", "reserved"),  # deprecated IPv4-compatible
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_refused_addresses_say_why(address: str, reason: str) -> None:
    found = refusal_reason(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"],
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_the_message_names_the_address_the_reason_and_the_setting() -> None:
    with pytest.raises(ToolError) as refused:
        AddressGuard([]).check("127.0.0.1", 80, ["127.0.0.1"])
    assert str(refused.value) == (
        "refused: 127.0.0.1 is a loopback address; allow it with FUSION_FETCH_ALLOW_HOSTS"
    )
    with pytest.raises(ToolError, match=r"intranet\.example \(10\.0\.0\.7\) is a private address"):
        AddressGuard([]).check("intranet.example", 443, ["10.0.0.7"])


def test_a_public_address_is_the_one_to_connect_to() -> None:
    assert AddressGuard([]).check("example.com", 443, ["93.184.216.34", "2606:2800::1"]) == "93.184.216.34"


def test_any_private_address_among_those_resolved_refuses_the_host() -> None:
    guard = AddressGuard([])
    with pytest.raises(ToolError, match=r"192\.168\.0\.1"):
        guard.check("mixed.example", 80, ["93.184.216.34", "192.168.0.1"])
    with pytest.raises(ToolError, match=r"169\.254\.169\.254"):
        guard.check("mixed.example", 80, ["169.254.169.254", "93.184.216.34"])


def test_no_address_or_a_non_address_is_refused() -> None:
    with pytest.raises(ToolError, match="no address"):
        AddressGuard([]).check("empty.example", 80, [])
    with pytest.raises(ToolError, match="not an IP address"):
        AddressGuard([]).check("odd.example", 80, ["not-an-ip"])


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("wiki.corp", AllowEntry(name="wiki.corp")),
        ("Wiki.Corp.:8080", AllowEntry(name="wiki.corp", port=8080)),
        ("localhost", AllowEntry(name="localhost")),
        ("10.0.0.5", AllowEntry(network=ipaddress.ip_network("10.0.0.5/32"))),
        ("10.0.0.5:8443", AllowEntry(network=ipaddress.ip_network("10.0.0.5/32"), port=8443)),
        ("10.0.0.0/8", AllowEntry(network=ipaddress.ip_network("10.0.0.0/8"))),
        ("192.168.0.0/16:80", AllowEntry(network=ipaddress.ip_network("192.168.0.0/16"), port=80)),
        ("::1", AllowEntry(network=ipaddress.ip_network("::1/128"))),
        ("fd00::/8", AllowEntry(network=ipaddress.ip_network("fd00::/8"))),
        ("[::1]:8080", AllowEntry(network=ipaddress.ip_network("::1/128"), port=8080)),
        ("[fd00::/8]:443", AllowEntry(network=ipaddress.ip_network("fd00::/8"), port=443)),
        ("[fe80::1]", AllowEntry(network=ipaddress.ip_network("fe80::1/128"))),
        ("  127.0.0.1:9000 ", AllowEntry(network=ipaddress.ip_network("127.0.0.1/32"), port=9000)),
    ],
)
def test_allow_entries_are_read(entry: str, parsed: AllowEntry) -> None:
    assert parse_allow_entry(entry) == parsed


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "  ",
        "wiki.corp:",
        "wiki.corp:http",
        "wiki.corp:0",
        "wiki.corp:70000",
        "10.0.0.1/8",  # host bits set
        "10.0.0.0/33",
        "999.1.1.1",
        "fd00::zz",
        "[10.0.0.1]:80",  # brackets are for IPv6
        "[::1]8080",
        "[::1",
        "wiki corp",
        "wiki..corp",
        "http://wiki.corp",
    ],
)
def test_invalid_allow_entries_fail_at_construction(entry: str) -> None:
    with pytest.raises(ValueError, match="allow-list entry"):
        AddressGuard([entry])


def test_a_name_entry_opens_that_name_whatever_it_resolves_to() -> None:
    guard = AddressGuard(["wiki.corp"])
    assert guard.check("wiki.corp", 80, ["10.0.0.7"]) == "10.0.0.7"
    assert guard.check("WIKI.corp.", 8080, ["10.0.0.7", "127.0.0.1"]) == "10.0.0.7"
    with pytest.raises(ToolError, match="private"):
        guard.check("other.corp", 80, ["10.0.0.7"])
    with pytest.raises(ToolError, match="private"):
        guard.check("sub.wiki.corp", 80, ["10.0.0.7"])  # exactly that name, not its subdomains


def test_a_port_opens_that_port_only() -> None:
    guard = AddressGuard(["127.0.0.1:8080", "wiki.corp:443"])
    assert guard.check("127.0.0.1", 8080, ["127.0.0.1"]) == "127.0.0.1"
    assert guard.check("wiki.corp", 443, ["10.0.0.7"]) == "10.0.0.7"
    with pytest.raises(ToolError, match="loopback"):
        guard.check("127.0.0.1", 8081, ["127.0.0.1"])
    with pytest.raises(ToolError, match="private"):
        guard.check("wiki.corp", 80, ["10.0.0.7"])


def test_a_cidr_entry_opens_its_range() -> None:
    guard = AddressGuard(["10.1.0.0/16", "[fd00::/8]:443"])
    assert guard.check("db.internal", 5432, ["10.1.200.3"]) == "10.1.200.3"
    assert guard.check("v6.internal", 443, ["fd00::5"]) == "fd00::5"
    with pytest.raises(ToolError, match=r"10\.2\.0\.1"):
        guard.check("db.internal", 5432, ["10.2.0.1"])
    with pytest.raises(ToolError, match="fd00::5"):
        guard.check("v6.internal", 80, ["fd00::5"])


def test_an_allowed_ipv4_range_covers_its_ipv4_mapped_addresses() -> None:
    guard = AddressGuard(["127.0.0.1"])
    assert guard.check("::ffff:127.0.0.1", 80, ["::ffff:127.0.0.1"]) == "::ffff:127.0.0.1"
    with pytest.raises(ToolError, match="loopback"):
        guard.check("::1", 80, ["::1"])  # IPv6 loopback is another address


def test_the_metadata_address_needs_its_own_entry() -> None:
    with pytest.raises(ToolError, match="metadata"):
        AddressGuard(["10.0.0.0/8", "127.0.0.1"]).check("169.254.169.254", 80, ["169.254.169.254"])
    assert AddressGuard(["169.254.169.254"]).check("169.254.169.254", 80, ["169.254.169.254"])
