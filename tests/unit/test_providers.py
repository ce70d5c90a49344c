"""Both API shapes through the ModelRouter against httpx.MockTransport: parsing, retries, failures."""

import asyncio
import json
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fusion.catalog import Catalog, load_catalog
from fusion.models import ModelHTTPError, ModelRouter, ModelUnavailable
from fusion.models.resilience import RetryPolicy, with_retries
from fusion.panel_worker.calls import answer_task
from fusion_contracts import ChatMessage, ModelSpec, PanelTask
from fusion_contracts.common import utc_now

Handler = Callable[[httpx.Request], httpx.Response]

OPENAI_OK = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "forty-two"}}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "cost": 0.00042},
}
ANTHROPIC_OK = {
    "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "forty-two"}],
    "usage": {"input_tokens": 13, "output_tokens": 5},
}
SHAPES = {"openai": OPENAI_OK, "anthropic": ANTHROPIC_OK}
FAST_RETRY = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05)
HI = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="6 x 7?")]


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    monkeypatch.setenv("TEST_OAI_KEY", "sk-test-openai")
    monkeypatch.setenv("TEST_ANT_KEY", "sk-test-anthropic")
    path = tmp_path / "catalog.toml"
    path.write_text(
        """
[providers.oai]
api = "openai"
base_url = "https://oai.test/v1"
key_env = "TEST_OAI_KEY"
timeout_s = 0.5

[providers.ant]
api = "anthropic"
base_url = "https://ant.test/v1"
key_env = "TEST_ANT_KEY"
timeout_s = 0.5

[models.openai]
provider = "oai"
id = "gpt-test"
input_usd_per_mtok = "2"
output_usd_per_mtok = "8"

[models.anthropic]
provider = "ant"
id = "claude-test"
input_usd_per_mtok = "3"
output_usd_per_mtok = "15"
"""
    )
    return load_catalog(path)


def router(catalog: Catalog, handler: Handler) -> ModelRouter:
    return ModelRouter(catalog, transport=httpx.MockTransport(handler), retry=FAST_RETRY)


def scripted(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """Answers with `responses` in turn, the last one again and again."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses[min(len(seen), len(responses)) - 1]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


def task(shape: str, seconds: float) -> PanelTask:
    now = utc_now()
    return PanelTask(
        request_id="r-1",
        member_index=0,
        member=ModelSpec(model=shape),
        messages=HI,
        deadline_at=now + timedelta(seconds=seconds),
        dispatched_at=now,
    )


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
async def test_success_parses_text_usage_and_cost(catalog: Catalog, shape: str) -> None:
    handler, seen = scripted(httpx.Response(200, json=SHAPES[shape]))

    reply = await router(catalog, handler).complete(
        ModelSpec(model=shape, max_tokens=50, temperature=0.1), HI
    )

    assert reply.text == "forty-two"
    body = json.loads(seen[0].content)
    if shape == "openai":
        assert (reply.usage.input_tokens, reply.usage.output_tokens) == (11, 7)
        assert reply.cost_usd == Decimal("0.00042")  # reported by the provider, taken as is
        assert seen[0].url.path == "/v1/chat/completions"
        assert seen[0].headers["authorization"] == "Bearer sk-test-openai"
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    else:
        assert (reply.usage.input_tokens, reply.usage.output_tokens) == (13, 5)
        assert reply.cost_usd == (Decimal(3) * 13 + Decimal(15) * 5) / Decimal(1_000_000)  # priced
        assert seen[0].url.path == "/v1/messages"
        assert seen[0].headers["x-api-key"] == "sk-test-anthropic"
        assert seen[0].headers["anthropic-version"] == "2023-06-01"
        assert body["system"] == "Be brief."
        assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "6 x 7?"}]}]
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.1


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
async def test_429_waits_for_retry_after_then_succeeds(catalog: Catalog, shape: str) -> None:
    limited = httpx.Response(429, headers={"Retry-After": "0.3"}, json={"error": {"message": "slow down"}})
    handler, seen = scripted(limited, httpx.Response(200, json=SHAPES[shape]))
    started = time.monotonic()

    reply = await router(catalog, handler).complete(ModelSpec(model=shape), HI)

    assert reply.text == "forty-two"
    assert len(seen) == 2
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
async def test_500_then_success(catalog: Catalog, shape: str) -> None:
    handler, seen = scripted(
        httpx.Response(500, json={"error": {"message": "boom"}}), httpx.Response(200, json=SHAPES[shape])
    )

    reply = await router(catalog, handler).complete(ModelSpec(model=shape), HI)

    assert reply.text == "forty-two"
    assert len(seen) == 2


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
async def test_a_client_error_is_not_retried(catalog: Catalog, shape: str) -> None:
    handler, seen = scripted(httpx.Response(400, json={"error": {"message": "bad input"}}))

    with pytest.raises(ModelHTTPError) as caught:
        await router(catalog, handler).complete(ModelSpec(model=shape), HI)

    assert caught.value.status_code == 400
    assert "bad input" in str(caught.value)
    assert len(seen) == 1


@pytest.mark.parametrize(("shape", "key"), [("openai", "sk-test-openai"), ("anthropic", "sk-test-anthropic")])
async def test_a_key_echoed_across_the_error_length_limit_is_redacted_whole(
    catalog: Catalog, shape: str, key: str
) -> None:
    echoed = "e" * 295 + key + " is not valid"  # the 300-character limit falls inside the key
    handler, _ = scripted(httpx.Response(401, json={"error": {"type": "auth", "message": echoed}}))

    with pytest.raises(ModelHTTPError) as caught:
        await router(catalog, handler).complete(ModelSpec(model=shape), HI)

    assert key[:5] not in str(caught.value)


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
async def test_retries_stop_at_the_last_attempt_with_the_last_error(catalog: Catalog, shape: str) -> None:
    handler, seen = scripted(httpx.ConnectError("refused"))

    with pytest.raises(ModelUnavailable, match="unreachable"):
        await router(catalog, handler).complete(ModelSpec(model=shape), HI)

    assert len(seen) == FAST_RETRY.attempts


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
async def test_a_provider_timeout_is_a_timeout(catalog: Catalog, shape: str) -> None:
    handler, _ = scripted(httpx.ReadTimeout("slow"))

    with pytest.raises(TimeoutError):
        await router(catalog, handler).complete(ModelSpec(model=shape), HI)


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
async def test_malformed_json_marks_the_member_error_with_a_clear_reason(
    catalog: Catalog, shape: str
) -> None:
    handler, _ = scripted(httpx.Response(200, content=b"<html>oops", headers={"content-type": "text/html"}))

    answer = await answer_task(task(shape, 5), router(catalog, handler), "w")

    assert answer.status == "error"
    assert answer.error is not None
    assert "malformed JSON" in answer.error


async def test_a_stalled_provider_in_a_panel_task_is_a_timeout_at_the_deadline(catalog: Catalog) -> None:
    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200, json=OPENAI_OK)

    models = ModelRouter(catalog, transport=httpx.MockTransport(stall), retry=FAST_RETRY)
    started = time.monotonic()

    answer = await answer_task(task("openai", 0.3), models, "w")

    assert answer.status == "timeout"
    assert time.monotonic() - started < 1.0


async def test_retries_never_sleep_past_the_deadline() -> None:
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        raise ModelHTTPError("busy", 429, retry_after_s=5.0)

    started = time.monotonic()
    with pytest.raises(ModelHTTPError):
        await with_retries(failing, RetryPolicy(attempts=5), deadline=time.monotonic() + 1.0)

    assert calls == 1  # the 5 s Retry-After would end past the deadline: the error comes back at once
    assert time.monotonic() - started < 0.5


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=4.0)

    full = [policy.backoff(attempt, 0.999999) for attempt in range(5)]
    assert full == pytest.approx([0.5, 1, 2, 4, 4], rel=1e-3)
    assert policy.backoff(3, 0.0) == 0.0
    assert policy.backoff(3, 0.5) == pytest.approx(2.0)


async def test_the_provider_concurrency_limit_is_shared_by_all_calls(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        """
[providers.narrow]
api = "openai"
base_url = "https://narrow.test/v1"
max_concurrency = 2

[models.m]
provider = "narrow"
id = "m"
"""
    )
    running = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return httpx.Response(200, json=OPENAI_OK)

    models = ModelRouter(load_catalog(path), transport=httpx.MockTransport(handler))
    await asyncio.gather(*(models.complete(ModelSpec(model="m"), HI) for _ in range(8)))

    assert peak == 2


async def test_the_provider_rate_limit_spaces_requests(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        """
[providers.slow]
api = "openai"
base_url = "https://slow.test/v1"
rate_limit_per_s = 20

[models.m]
provider = "slow"
id = "m"
"""
    )
    handler, seen = scripted(httpx.Response(200, json=OPENAI_OK))
    models = ModelRouter(load_catalog(path), transport=httpx.MockTransport(handler))
    started = time.monotonic()

    await asyncio.gather(*(models.complete(ModelSpec(model="m"), HI) for _ in range(6)))

    assert len(seen) == 6
    assert time.monotonic() - started >= 5 / 20 * 0.95  # six starts at 20 per second span 0.25 s
