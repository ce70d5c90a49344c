"""The `web_search` tool against the search stand-in (fusion_testing.search_standin) on 127.0.0.1: each
API's shape and key, domain filters, result counts, and every way a backend can fail."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fusion.catalog import Catalog
from fusion.research.base import CALLER, CALLER_HEADER, ToolError, ToolOutput
from fusion.research.search import web_search
from fusion_contracts import ToolSpec

from fusion_testing.search_standin import running_search_standin

KEY = "sk-search-test-LEAKY-7d3e91c0"
"""The key the stand-in expects, set in KEY_ENV."""
WRONG_KEY = "sk-search-WRONG-KEY-b41f6e2a99"
"""A distinctive key the stand-in refuses, and quotes back in its 401 body."""
KEY_ENV = "FUSION_TEST_SEARCH_KEY"
HOSTED = ["brave", "tavily", "exa"]
APIS = ["searxng", *HOSTED]

DOCUMENTS = [
    {
        "url": "https://en.wikipedia.org/wiki/Rayleigh_scattering",
        "title": "Rayleigh scattering",
        "content": "Rayleigh scattering of sunlight makes the sky look blue.",
    },
    {
        "url": "https://www.nasa.gov/sky",
        "title": "Why is the sky blue? NASA",
        "content": "Blue light is scattered more than red light by the gases of the sky.",
    },
    {
        "url": "https://spam.test/sky",
        "title": "Sky blue pills",
        "content": "Buy sky blue pills now.",
    },
    {
        "url": "https://www.nasa.gov/sky",
        "title": "Why is the sky blue? (a copy at the same URL)",
        "content": "The same page again, sky blue.",
    },
    *(
        {
            "url": f"https://site{n}.example.com/sunset",
            "title": f"Sunsets {n}",
            "content": f"Sunset number {n}: the sun low, the light red.",
        }
        for n in range(25)
    ),
]


@pytest.fixture(scope="module")
def standin() -> Iterator[str]:
    with running_search_standin(DOCUMENTS, key=KEY) as url:
        yield url


@pytest.fixture(autouse=True)
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def catalog(api: str, base_url: str, **backend: Any) -> Catalog:
    """A catalog whose default search backend is `api`, named after it, keyed by KEY_ENV when hosted."""
    entry: dict[str, Any] = {"api": api, "base_url": base_url, "headers": {"X-Team": "fusion-tests"}}
    if api in HOSTED:
        entry["key_env"] = KEY_ENV
    return Catalog.model_validate(
        {
            "default_preset": "p",
            "providers": {"prov": {"api": "openai", "base_url": "http://prov.test/v1"}},
            "models": {"m": {"provider": "prov", "id": "m"}},
            "presets": {"p": {"panel": [{"model": "m"}], "judge": {"model": "m"}}},
            "search_backends": {api: {**entry, **backend}},
            "default_search_backend": api,
        }
    )


async def search(
    cat: Catalog,
    arguments: dict[str, Any],
    transport: httpx.AsyncBaseTransport | None = None,
    **spec: Any,
) -> ToolOutput:
    tool = web_search(cat, ToolSpec(type="web_search", **spec), transport=transport)
    try:
        return await tool.run(arguments)
    finally:
        await tool.aclose()


async def last(standin: str, api: str) -> dict[str, Any] | None:
    """The last request the stand-in's `api` received, or None."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{standin}/last/{api}")
    return response.json() if response.status_code == 200 else None


def assert_no_key(error: BaseException, key: str) -> None:
    for text in (str(error), repr(error), *map(str, error.args)):
        assert key not in text


# --- Results -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
async def test_results_and_sources_come_back(standin: str, api: str) -> None:
    output = await search(catalog(api, f"{standin}/{api}"), {"query": "Rayleigh scattering sky"})
    assert output.text.startswith(
        "[1] Rayleigh scattering\nhttps://en.wikipedia.org/wiki/Rayleigh_scattering\nRayleigh scattering of"
    )
    assert "\n\n[2] Why is the sky blue? NASA\nhttps://www.nasa.gov/sky\n" in output.text
    assert "<strong>" not in output.text
    assert output.sources[0].title == "Rayleigh scattering"
    # Best match first; NASA's page once although the backend gave its URL twice.
    assert [source.url for source in output.sources] == [
        "https://en.wikipedia.org/wiki/Rayleigh_scattering",
        "https://www.nasa.gov/sky",
        "https://spam.test/sky",
    ]


@pytest.mark.parametrize("api", APIS)
async def test_every_request_carries_the_caller_header_and_the_configured_ones(
    standin: str, api: str
) -> None:
    await search(catalog(api, f"{standin}/{api}"), {"query": "sky"})
    request = await last(standin, api)
    assert request is not None
    assert request["headers"][CALLER_HEADER.lower()] == CALLER
    assert request["headers"]["x-team"] == "fusion-tests"


@pytest.mark.parametrize("api", APIS)
async def test_no_match_is_a_result_saying_so(standin: str, api: str) -> None:
    output = await search(catalog(api, f"{standin}/{api}"), {"query": "zeppelin"})
    assert output.text == "No web results for: zeppelin"
    assert output.sources == ()


# --- Keys ---------------------------------------------------------------------------------------------


async def test_brave_gets_the_key_in_its_token_header(standin: str) -> None:
    await search(catalog("brave", f"{standin}/brave"), {"query": "sky"})
    request = await last(standin, "brave")
    assert request is not None
    assert request["headers"]["x-subscription-token"] == KEY
    assert "authorization" not in request["headers"]
    assert request["params"]["q"] == "sky"


async def test_tavily_gets_the_key_as_a_bearer_token_not_in_the_body(standin: str) -> None:
    await search(catalog("tavily", f"{standin}/tavily"), {"query": "sky"})
    request = await last(standin, "tavily")
    assert request is not None
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(request["body"])


async def test_exa_gets_the_key_in_x_api_key(standin: str) -> None:
    await search(catalog("exa", f"{standin}/exa"), {"query": "sky"})
    request = await last(standin, "exa")
    assert request is not None
    assert request["headers"]["x-api-key"] == KEY
    assert "authorization" not in request["headers"]
    assert KEY not in str(request["body"])


async def test_searxng_gets_no_key(standin: str) -> None:
    await search(catalog("searxng", f"{standin}/searxng"), {"query": "sky"})
    request = await last(standin, "searxng")
    assert request is not None
    assert KEY not in str(request)


@pytest.mark.parametrize("api", HOSTED)
async def test_a_refused_key_never_appears_in_the_error(
    standin: str, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, WRONG_KEY)
    with pytest.raises(
        ToolError, match=rf"^web_search backend '{api}' answered HTTP 401: .*\[redacted\]"
    ) as caught:
        await search(catalog(api, f"{standin}/{api}"), {"query": "sky"})
    assert_no_key(caught.value, WRONG_KEY)
    assert "\n" not in str(caught.value)


async def test_the_standin_does_quote_a_refused_key(standin: str) -> None:
    """What the test above relies on: the refusal holds the key, so only redaction keeps it out."""
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{standin}/brave/res/v1/web/search",
            params={"q": "sky"},
            headers={"X-Subscription-Token": WRONG_KEY},
        )
    assert response.status_code == 401
    assert WRONG_KEY in response.text


@pytest.mark.parametrize("api", HOSTED)
async def test_a_missing_key_env_var_is_named_and_nothing_is_sent(
    standin: str, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await last(standin, api)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ToolError) as caught:
        await search(catalog(api, f"{standin}/{api}"), {"query": "a question never sent"})
    assert str(caught.value) == f"web_search backend '{api}' needs an API key: set {KEY_ENV}"
    assert await last(standin, api) == before


async def test_a_hosted_backend_without_key_env_says_to_name_one(standin: str) -> None:
    with pytest.raises(ToolError, match=r"needs an API key: name its env var in the catalog \(key_env\)"):
        await search(catalog("tavily", f"{standin}/tavily", key_env=None), {"query": "sky"})


# --- Domains ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
async def test_allowed_domains_keep_only_their_results(standin: str, api: str) -> None:
    output = await search(catalog(api, f"{standin}/{api}"), {"query": "sky"}, allowed_domains=["nasa.gov"])
    assert [source.url for source in output.sources] == ["https://www.nasa.gov/sky"]


@pytest.mark.parametrize("api", APIS)
async def test_excluded_domains_drop_their_results(standin: str, api: str) -> None:
    output = await search(
        catalog(api, f"{standin}/{api}"),
        {"query": "sky blue"},
        excluded_domains=["spam.test", "*.wikipedia.org"],
    )
    urls = [source.url for source in output.sources]
    assert urls == ["https://www.nasa.gov/sky"]


@pytest.mark.parametrize("api", ["tavily", "exa"])
async def test_domain_filters_are_also_passed_natively(standin: str, api: str) -> None:
    await search(
        catalog(api, f"{standin}/{api}"),
        {"query": "sunset"},
        allowed_domains=["*.example.com"],
        excluded_domains=["site3.example.com"],
    )
    request = await last(standin, api)
    assert request is not None
    include, exclude = (
        ("include_domains", "exclude_domains") if api == "tavily" else ("includeDomains", "excludeDomains")
    )
    assert request["body"][include] == ["example.com"]
    assert request["body"][exclude] == ["site3.example.com"]


@pytest.mark.parametrize("api", APIS)
async def test_filtering_asks_for_more_so_the_count_still_fits(standin: str, api: str) -> None:
    """Two of the first five sunsets are excluded: asking for five exactly would leave three."""
    output = await search(
        catalog(api, f"{standin}/{api}"),
        {"query": "sunset", "max_results": 5},
        excluded_domains=["site0.example.com", "site1.example.com"],
    )
    assert [source.title for source in output.sources] == [f"Sunsets {n}" for n in range(2, 7)]


async def test_an_empty_allow_list_searches_nothing(standin: str) -> None:
    before = await last(standin, "brave")
    output = await search(catalog("brave", f"{standin}/brave"), {"query": "sky question"}, allowed_domains=[])
    assert output.sources == ()
    assert await last(standin, "brave") == before


# --- Counts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
async def test_five_results_by_default(standin: str, api: str) -> None:
    output = await search(catalog(api, f"{standin}/{api}"), {"query": "sunset"})
    assert len(output.sources) == 5
    assert output.text.count("\n\n[") == 4


@pytest.mark.parametrize("api", APIS)
async def test_max_results_up_to_twenty(standin: str, api: str) -> None:
    output = await search(catalog(api, f"{standin}/{api}"), {"query": "sunset", "max_results": 20})
    assert len(output.sources) == 20


@pytest.mark.parametrize("api", APIS)
async def test_the_spec_bounds_max_results_and_sets_the_default(standin: str, api: str) -> None:
    cat = catalog(api, f"{standin}/{api}")
    assert len((await search(cat, {"query": "sunset", "max_results": 15}, max_results=3)).sources) == 3
    assert len((await search(cat, {"query": "sunset"}, max_results=8)).sources) == 8


async def test_the_count_asked_of_brave_is_the_count_wanted(standin: str) -> None:
    await search(catalog("brave", f"{standin}/brave"), {"query": "sunset", "max_results": 7})
    request = await last(standin, "brave")
    assert request is not None
    assert request["params"]["count"] == "7"


# --- Failures -----------------------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on: bound once, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("api", APIS)
async def test_a_backend_that_is_down_is_a_tool_error(api: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/{api}"
    with pytest.raises(
        ToolError, match=rf"^web_search backend '{api}' is unreachable \(ConnectError\)$"
    ) as caught:
        await search(catalog(api, url), {"query": "sky"})
    assert_no_key(caught.value, KEY)


async def test_a_slow_backend_is_a_tool_error_in_its_timeout() -> None:
    with running_search_standin(DOCUMENTS, key=KEY, delay_s=3) as slow:
        started = time.monotonic()
        with pytest.raises(ToolError, match=r"^web_search backend 'exa' did not answer within 0.3s$"):
            await search(catalog("exa", f"{slow}/exa", timeout_s=0.3), {"query": "sky"})
        assert time.monotonic() - started < 2


async def test_an_http_error_gives_the_status_and_reason(standin: str) -> None:
    with pytest.raises(
        ToolError, match=r"^web_search backend 'searxng' answered HTTP 404: no route GET /wrong/search$"
    ):
        await search(catalog("searxng", f"{standin}/wrong"), {"query": "sky"})


def replying(status: int, content: bytes, **headers: str) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=content, headers=headers))


async def test_a_reply_that_is_not_json_is_a_tool_error() -> None:
    transport = replying(200, b"<html>a captive portal</html>")
    with pytest.raises(ToolError, match=r"^web_search backend 'tavily' answered with malformed JSON$"):
        await search(catalog("tavily", "http://tavily.test"), {"query": "sky"}, transport)


async def test_a_reply_of_another_shape_is_a_tool_error() -> None:
    transport = replying(200, b'{"results": "none"}')
    with pytest.raises(
        ToolError, match=r"^web_search backend 'exa' answered with an unexpected shape \(.*\)$"
    ):
        await search(catalog("exa", "http://exa.test"), {"query": "sky"}, transport)


async def test_a_huge_reply_is_refused() -> None:
    transport = replying(200, b'{"results": [' + b" " * (5 * 1024 * 1024) + b"]}")
    with pytest.raises(ToolError, match=r"answered with more than \d+ bytes"):
        await search(catalog("searxng", "http://searx.test"), {"query": "sky"}, transport)


async def test_a_redirect_is_not_followed_with_the_key() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://elsewhere.test/steal"})

    with pytest.raises(ToolError, match=r"answered HTTP 302"):
        await search(catalog("brave", "http://brave.test"), {"query": "sky"}, httpx.MockTransport(handler))
    assert seen == ["http://brave.test/res/v1/web/search?q=sky&count=5"]


async def test_a_long_error_body_is_cut_after_the_key_is_taken_out() -> None:
    body = b'{"error": {"detail": "' + b"x" * 190 + KEY.encode() + b'"}}'
    with pytest.raises(ToolError) as caught:
        await search(catalog("brave", "http://brave.test"), {"query": "sky"}, replying(403, body))
    assert_no_key(caught.value, KEY)
    assert_no_key(caught.value, KEY[:8])
    assert str(caught.value).endswith("x" * 10 + "[redacted]")


async def test_a_reply_that_drips_is_bounded_as_a_whole() -> None:
    """Each piece comes well within the timeout; the whole reply does not."""

    async def drip() -> AsyncIterator[bytes]:
        for _ in range(20):
            await asyncio.sleep(0.1)
            yield b" "

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=drip()))
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"^web_search backend 'searxng' did not answer within 0.3s$"):
        await search(catalog("searxng", "http://searx.test", timeout_s=0.3), {"query": "sky"}, transport)
    assert time.monotonic() - started < 1
