"""The aiohttp transport under httpx, against the stand-in model server over real sockets."""

import socket

import httpx
import pytest
from fusion.models.transport import AiohttpTransport


def a_client(base_url: str, timeout_s: float = 10.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, transport=AiohttpTransport(max_connections=8), timeout=timeout_s
    )


async def test_a_completion_round_trips_with_its_headers_and_body(standin: str) -> None:
    async with a_client(f"{standin}/v1/") as client:
        response = await client.post(
            "chat/completions",
            json={"model": "sleep-1", "messages": [{"role": "user", "content": "hello"}]},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["total_tokens"] > 0


async def test_a_stream_arrives_as_server_sent_events(standin: str) -> None:
    async with a_client(f"{standin}/v1/") as client:
        payload = {"model": "sleep-1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with client.stream("POST", "chat/completions", json=payload) as response:
            lines = [line async for line in response.aiter_lines() if line.startswith("data:")]
    assert response.status_code == 200
    assert len(lines) >= 3
    assert lines[-1] == "data: [DONE]"


async def test_an_error_status_keeps_its_body(standin: str) -> None:
    async with a_client(f"{standin}/v1/") as client:
        response = await client.post("chat/completions", json={"model": "fail-429", "messages": []})
    assert response.status_code == 429
    assert "stand-in failure 429" in response.json()["error"]["message"]


async def test_many_calls_share_a_bounded_pool(standin: str) -> None:
    async with a_client(f"{standin}/v1/") as client:
        replies = [
            await client.post(
                "chat/completions",
                json={"model": "sleep-1", "messages": [{"role": "user", "content": str(i)}]},
            )
            for i in range(30)
        ]
    assert [reply.status_code for reply in replies] == [200] * 30


async def test_a_closed_port_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once the socket is closed
    async with a_client(f"http://127.0.0.1:{port}/v1/") as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("chat/completions", json={})


async def test_a_server_that_stalls_is_a_read_timeout(standin: str) -> None:
    async with a_client(f"{standin}/v1/", timeout_s=0.5) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("chat/completions", json={"model": "stall", "messages": []})


def test_no_proxy_is_honoured_and_proxies_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    transport = AiohttpTransport(max_connections=1)
    assert transport._proxy_for(httpx.URL("https://api.example/v1")) == "http://proxy.example:3128"
    assert transport._proxy_for(httpx.URL("https://internal.example/v1")) is None
    monkeypatch.delenv("HTTPS_PROXY")
    assert transport._proxy_for(httpx.URL("https://api.example/v1")) == "http://proxy.example:3128"
