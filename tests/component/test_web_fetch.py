"""web_fetch against the local test site (fusion_testing.test_site) on 127.0.0.1: the site is reached
through the allow-list, and everything else it points to is refused."""

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fusion.research.base import CALLER, CALLER_HEADER, Tool, ToolError, ToolOutput
from fusion.research.fetching import USER_AGENT, Resolver, web_fetch
from fusion.settings import Settings
from fusion_contracts import Source, ToolSpec

from fusion_testing.test_site import (
    BOILERPLATE,
    HOSTILE_TEXT,
    HUGE_BYTES,
    PAGES,
    PDF_FACT,
    PDF_TITLE,
    running_test_site,
)
from tests.component.support import eventually

KESTREL = "/articles/kestrel-bridge"


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with running_test_site() as url:
        yield url


@pytest.fixture(scope="module")
def other_site() -> Iterator[str]:
    """A second site on another port of 127.0.0.1, which the allow-list does not open."""
    with running_test_site() as url:
        yield url


def port_of(url: str) -> int:
    port = httpx.URL(url).port
    assert port is not None
    return port


def names(mapping: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    """A resolver stand-in: these names only (they resolve nowhere else), and a record of the calls."""

    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return mapping[host]

    return resolve


async def fetch(
    url: str,
    *,
    allow: list[str],
    spec: ToolSpec | None = None,
    resolver: Resolver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **settings: Any,
) -> ToolOutput:
    tool = web_fetch(
        Settings(fetch_allow_hosts=allow, **settings), spec, resolver=resolver, transport=transport
    )
    try:
        return await tool.run({"url": url})
    finally:
        await tool.aclose()


def seen(site: str) -> dict[str, Any]:
    """What the site received: its request count, and the path and headers of the last request (the
    site runs in a thread of its own, so a blocking call is fine)."""
    result: dict[str, Any] = httpx.get(f"{site}/last-headers").json()
    return result


def allowing(site: str) -> list[str]:
    return [f"127.0.0.1:{port_of(site)}"]


def test_it_is_a_tool_with_a_url_parameter() -> None:
    tool: Tool = web_fetch(Settings(), None)
    assert tool.name == "web_fetch"
    assert tool.parameters["required"] == ["url"]
    assert tool.parameters["additionalProperties"] is False
    assert tool.parameters["properties"]["url"]["type"] == "string"


async def test_an_article_comes_back_as_its_main_text_with_its_title_and_source(site: str) -> None:
    output = await fetch(site + KESTREL, allow=allowing(site))
    page = PAGES[KESTREL]
    assert output.text.startswith(f"Title: {page.title}\nURL: {site}{KESTREL}\n\n")
    assert all(fact in output.text for fact in page.facts)
    assert BOILERPLATE not in output.text  # the footer is not main text
    assert "Cut:" not in output.text
    assert output.sources == (Source(url=site + KESTREL, title=page.title),)


async def test_every_request_carries_the_caller_header_and_the_user_agent(site: str) -> None:
    await fetch(site + "/articles/amber-orchard", allow=allowing(site))
    last = seen(site)
    assert last["path"] == "/articles/amber-orchard"
    assert last["headers"][CALLER_HEADER.lower()] == CALLER
    assert last["headers"]["user-agent"] == USER_AGENT
    assert last["headers"]["host"] == f"127.0.0.1:{port_of(site)}"


async def test_a_redirect_within_the_allowed_site_is_followed(site: str) -> None:
    output = await fetch(f"{site}/redirect?to=/articles/glass-lighthouse", allow=allowing(site))
    assert f"URL: {site}/articles/glass-lighthouse\n" in output.text
    assert "31 nautical miles" in output.text
    assert output.sources[0].url == f"{site}/articles/glass-lighthouse"


async def test_text_and_pdf_are_read(site: str) -> None:
    notes = await fetch(site + "/notes.txt", allow=allowing(site))
    assert "The Velvet Dusk pear ripens in the second week of October." in notes.text
    pdf = await fetch(site + "/paper.pdf", allow=allowing(site))
    assert PDF_FACT in pdf.text
    assert pdf.sources == (Source(url=site + "/paper.pdf", title=PDF_TITLE),)


async def test_a_hostile_page_comes_back_as_data(site: str) -> None:
    output = await fetch(site + "/hostile", allow=allowing(site))
    assert HOSTILE_TEXT in output.text
    assert "</tool-result>" in output.text
    assert "four metres" in output.text  # the page goes on after the injection


async def test_a_huge_page_is_cut_at_the_byte_limit_quickly(site: str) -> None:
    started = time.monotonic()
    output = await fetch(site + "/huge", allow=allowing(site), fetch_max_bytes=200_000)
    assert time.monotonic() - started < 3.0
    assert "Cut: the page is larger than 200000 bytes" in output.text
    assert "far larger than anyone should read" in output.text
    assert len(output.text) <= 4 * Settings().tool_result_chars + 500
    # The fetch hung up early: the site got to send what the sockets' buffers hold, not the page.
    await eventually(lambda: seen(site)["huge_sent"] is not None)
    assert seen(site)["huge_sent"] < HUGE_BYTES / 4


async def test_the_text_is_capped_for_the_tool_loop(site: str) -> None:
    output = await fetch(site + "/huge", allow=allowing(site), fetch_max_bytes=200_000, tool_result_chars=500)
    assert "Cut: the text is longer than 2000 characters" in output.text
    assert len(output.text.partition("\n\n")[2]) <= 2000


async def test_a_slow_page_times_out_in_about_the_time_allowed(site: str) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"timed out after 1 s"):
        await fetch(site + "/slow", allow=allowing(site), fetch_timeout_s=1.0)
    assert 0.9 < time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/binary", "unsupported content type application/octet-stream"),
        ("/image.png", "unsupported content type image/png"),
        ("/text-with-nul", "binary data, not text/plain"),
        ("/missing", "HTTP 404 Not Found"),
        ("/redirect-loop", r"too many redirects \(more than 5\)"),
    ],
)
async def test_what_is_not_a_readable_page_is_refused(site: str, path: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        await fetch(site + path, allow=allowing(site))


async def test_redirect_loops_stop_at_the_redirect_limit(site: str) -> None:
    before = seen(site)["requests"]
    with pytest.raises(ToolError, match=r"more than 2"):
        await fetch(site + "/redirect-loop", allow=allowing(site), fetch_max_redirects=2)
    assert seen(site)["requests"] - before == 3  # the first request and two redirects


async def test_loopback_is_refused_without_an_allow_list(site: str) -> None:
    before = seen(site)
    with pytest.raises(ToolError) as refused:
        await fetch(site + KESTREL, allow=[])
    assert str(refused.value) == (
        "refused: 127.0.0.1 is a loopback address; allow it with FUSION_FETCH_ALLOW_HOSTS"
    )
    assert seen(site)["requests"] == before["requests"]  # refused before connecting


async def test_a_redirect_to_another_local_port_is_refused(site: str, other_site: str) -> None:
    target = other_site + KESTREL
    before = seen(other_site)
    with pytest.raises(ToolError, match=r"refused: 127\.0\.0\.1 is a loopback address"):
        await fetch(f"{site}/redirect?to={target}", allow=allowing(site))
    assert seen(other_site)["requests"] == before["requests"]
    # The same page is there to fetch, when its port is allowed.
    assert PAGES[KESTREL].facts[0] in (await fetch(target, allow=allowing(other_site))).text


async def test_a_redirect_to_the_metadata_address_is_refused_without_connecting(site: str) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"169\.254\.169\.254 is a cloud metadata address"):
        await fetch(
            f"{site}/redirect?to=http://169.254.169.254/latest/meta-data/",
            allow=allowing(site),
            fetch_timeout_s=10.0,
        )
    assert time.monotonic() - started < 1.0  # a connection attempt would hang until the timeout


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/", "gopher://127.0.0.1:70/"])
async def test_only_http_and_https_are_fetched(url: str) -> None:
    with pytest.raises(ToolError, match="not an http or https URL"):
        await fetch(url, allow=["127.0.0.1"])


async def test_a_redirect_to_another_scheme_is_refused(site: str) -> None:
    with pytest.raises(ToolError, match="not an http or https URL"):
        await fetch(f"{site}/redirect?to=file:///etc/passwd", allow=allowing(site))


async def test_the_checked_address_is_the_one_connected_to(site: str) -> None:
    """ "site.test" resolves nowhere but in the resolver stand-in: reaching the site shows the request
    went to the address that was checked, with the name kept in the Host header."""
    port = port_of(site)
    output = await fetch(
        f"http://site.test:{port}{KESTREL}",
        allow=[f"site.test:{port}"],
        resolver=names({"site.test": ["127.0.0.1"]}),
    )
    assert PAGES[KESTREL].facts[0] in output.text
    assert output.sources[0].url == f"http://site.test:{port}{KESTREL}"
    assert seen(site)["headers"]["host"] == f"site.test:{port}"


async def test_a_name_is_resolved_once_per_hop_so_it_cannot_rebind(site: str) -> None:
    """A rebinding name: the allowed address first, a private one on every later lookup. The fetch
    looks it up once and connects to what it checked."""
    calls: list[str] = []
    answers = iter([["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers, ["10.255.255.1"])

    port = port_of(site)
    output = await fetch(f"http://rebind.test:{port}{KESTREL}", allow=allowing(site), resolver=rebinding)
    assert PAGES[KESTREL].facts[0] in output.text
    assert calls == ["rebind.test"]


async def test_a_name_with_any_private_address_is_refused(site: str) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"mixed\.test \(10\.0\.0\.9\) is a private address"):
        await fetch(
            f"http://mixed.test:{port_of(site)}/",
            allow=[],
            resolver=names({"mixed.test": ["93.184.216.34", "10.0.0.9"]}),
        )
    assert time.monotonic() - started < 1.0


async def test_a_name_that_does_not_resolve_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match=r"could not resolve nowhere\.test: Name or service not known"):
        await fetch("http://nowhere.test/", allow=[], resolver=names({}))


async def test_allowed_domains_are_checked_on_every_hop(site: str) -> None:
    port = port_of(site)
    resolver = names({"site.test": ["127.0.0.1"]})
    spec = ToolSpec(type="web_fetch", allowed_domains=["site.test"])
    allow = [f"127.0.0.1:{port}"]
    output = await fetch(f"http://site.test:{port}{KESTREL}", allow=allow, spec=spec, resolver=resolver)
    assert PAGES[KESTREL].title in output.text
    with pytest.raises(ToolError, match=r"127\.0\.0\.1 is not among the allowed domains \(site\.test\)"):
        await fetch(f"{site}{KESTREL}", allow=allow, spec=spec, resolver=resolver)
    hop = f"http://site.test:{port}/redirect?to={site}{KESTREL}"
    with pytest.raises(ToolError, match="not among the allowed domains"):
        await fetch(hop, allow=allow, spec=spec, resolver=resolver)


async def test_excluded_domains_are_refused(site: str) -> None:
    port = port_of(site)
    resolver = names({"site.test": ["127.0.0.1"], "www.site.test": ["127.0.0.1"]})
    spec = ToolSpec(type="web_fetch", excluded_domains=["site.test"])
    with pytest.raises(ToolError, match=r"www\.site\.test is an excluded domain"):
        await fetch(f"http://www.site.test:{port}/", allow=allowing(site), spec=spec, resolver=resolver)
    hop = f"{site}/redirect?to=http://site.test:{port}/"
    with pytest.raises(ToolError, match=r"site\.test is an excluded domain"):
        await fetch(hop, allow=allowing(site), spec=spec, resolver=resolver)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the name site.test only, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=site.test", "-addext", "subjectAltName=DNS:site.test"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_checks_the_certificate_against_the_name_not_the_address(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    trusting = ssl.create_default_context(cafile=str(cert))
    resolver = names({"site.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    with running_test_site(ssl_certfile=cert, ssl_keyfile=key) as tls_site:
        port = port_of(tls_site)

        async def fetch_tls(url: str) -> ToolOutput:
            transport = httpx.AsyncHTTPTransport(verify=trusting, retries=0)
            return await fetch(url, allow=[f"127.0.0.1:{port}"], resolver=resolver, transport=transport)

        output = await fetch_tls(f"https://site.test:{port}{KESTREL}")
        assert PAGES[KESTREL].facts[0] in output.text
        assert output.sources[0].url == f"https://site.test:{port}{KESTREL}"
        # The same server and address, another name: the certificate does not match it.
        with pytest.raises(ToolError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch_tls(f"https://other.test:{port}{KESTREL}")
        with pytest.raises(ToolError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch_tls(f"https://127.0.0.1:{port}{KESTREL}")
