"""fusion.models.openai_compat and fusion.models.registry over httpx.MockTransport (no network)."""

import gzip
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fusion.catalog import Catalog
from fusion.models import (
    ModelCall,
    ModelConfigError,
    ModelError,
    ModelHTTPError,
    ModelResponseError,
    ModelRouter,
    ModelUnavailable,
)
from fusion.models.http import Endpoint
from fusion.models.openai_compat import OpenAICompatModel
from fusion_contracts import ChatMessage, ModelSpec, Usage

KEY_ENV = "FUSION_UNIT_TEST_API_KEY"
SECRET = "sk-unit-test-secret-0123456789"
MESSAGES = [ChatMessage(role="user", content="Why is the sky blue?")]
SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}

Handler = Callable[[httpx.Request], httpx.Response]


def completion(text: Any = "Rayleigh scattering.", usage: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


class Recorder:
    """A MockTransport handler that records requests and answers with a fixed response."""

    def __init__(self, respond: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._respond = respond or (lambda _: httpx.Response(200, json=completion()))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._respond(request)

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.requests[-1].content)
        return data


def catalog() -> Catalog:
    return Catalog.model_validate(
        {
            "default_preset": "p",
            "providers": {
                "schema-provider": {"api": "openai", "base_url": "http://schema.test/v1/"},
                "llama": {
                    "api": "openai",
                    "base_url": "http://llama.test/v1",
                    "structured_output": "json_object",
                },
                "plain": {"api": "openai", "base_url": "http://plain.test/v1", "structured_output": "none"},
                "keyed": {
                    "api": "openai",
                    "base_url": "https://keyed.test/api/v1",
                    "key_env": KEY_ENV,
                    "headers": {"X-Title": "Fusion"},
                },
                "weird": {"api": "grpc-someday", "base_url": "http://weird.test"},
            },
            "models": {
                "big": {"provider": "schema-provider", "id": "vendor/big-model-2025"},
                "small": {"provider": "llama", "id": "smollm2-135m"},
                "plain": {"provider": "plain", "id": "plain-1"},
                "paid": {"provider": "keyed", "id": "vendor/paid"},
                "odd": {"provider": "weird", "id": "odd-1"},
            },
            "presets": {"p": {"panel": [{"model": "big"}], "judge": {"model": "big"}}},
        }
    )


def adapter(recorder: Recorder, structured_output: str = "json_schema") -> OpenAICompatModel:
    endpoint = Endpoint("http://provider.test/v1/", httpx.MockTransport(recorder))
    return OpenAICompatModel(endpoint, "prov", structured_output)


async def test_success_parses_text_and_usage() -> None:
    recorder = Recorder(
        lambda _: httpx.Response(
            200, json=completion("Blue light scatters.", {"prompt_tokens": 17, "completion_tokens": 5})
        )
    )
    reply = await adapter(recorder).complete(ModelCall("m-1", MESSAGES))
    assert reply.text == "Blue light scatters."
    assert reply.usage == Usage(input_tokens=17, output_tokens=5)
    assert str(recorder.requests[0].url) == "http://provider.test/v1/chat/completions"
    assert recorder.requests[0].method == "POST"


@pytest.mark.parametrize("usage", [None, {}, {"prompt_tokens": None, "completion_tokens": None}])
async def test_missing_usage_counts_zero(usage: Any) -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json=completion(usage=usage)))
    reply = await adapter(recorder).complete(ModelCall("m-1", MESSAGES))
    assert reply.usage == Usage()


@pytest.mark.parametrize("usage", ["n/a", {"prompt_tokens": "many"}, {"prompt_tokens": -3}])
async def test_malformed_usage_is_a_model_error_or_ignored_never_a_raw_exception(usage: Any) -> None:
    # A 2xx reply with a usable text but a broken usage block: the adapter may keep the text or
    # raise ModelResponseError, but must not leak a raw ValueError/AttributeError (callers, the judge
    # above all, only handle ModelError and TimeoutError).
    recorder = Recorder(lambda _: httpx.Response(200, json=completion(usage=usage)))
    try:
        reply = await adapter(recorder).complete(ModelCall("m-1", MESSAGES))
    except ModelError:
        return
    assert reply.text == "Rayleigh scattering."


async def test_request_body_carries_the_call() -> None:
    recorder = Recorder()
    call = ModelCall("vendor/model-x", MESSAGES, temperature=0.7, top_p=0.9, max_tokens=128, seed=42)
    await adapter(recorder).complete(call)
    body = recorder.body
    assert body["model"] == "vendor/model-x"
    assert body["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert body["temperature"] == 0.7
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 128
    assert body["seed"] == 42
    assert body["stream"] is False
    assert "response_format" not in body


async def test_stop_sequences_are_sent_when_given() -> None:
    recorder = Recorder()
    await adapter(recorder).complete(ModelCall("m", MESSAGES, stop=("<answer-1", "</answer-1")))
    assert recorder.body["stop"] == ["<answer-1", "</answer-1"]
    router_recorder = Recorder()
    router = ModelRouter(catalog(), transport=httpx.MockTransport(router_recorder))
    await router.complete(ModelSpec(model="big"), MESSAGES, stop=["END"])
    await router.complete(ModelSpec(model="big"), MESSAGES)
    await router.aclose()
    assert json.loads(router_recorder.requests[0].content)["stop"] == ["END"]
    assert "stop" not in json.loads(router_recorder.requests[1].content)


async def test_unset_sampling_parameters_are_left_out() -> None:
    recorder = Recorder()
    await adapter(recorder).complete(ModelCall("m", MESSAGES))
    assert set(recorder.body) == {"model", "messages", "stream"}


async def test_router_sends_upstream_id_sampling_and_system_prompt_first() -> None:
    recorder = Recorder()
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    spec = ModelSpec(model="big", temperature=0.3, max_tokens=64, seed=7, system_prompt="Answer in French.")
    conversation = [
        ChatMessage(role="user", content="Hi", name="ann"),
        ChatMessage(role="assistant", content="Hello"),
        ChatMessage(role="user", content="Why is the sky blue?"),
    ]
    reply = await router.complete(spec, conversation)
    await router.aclose()

    assert reply.text == "Rayleigh scattering."
    assert str(recorder.requests[0].url) == "http://schema.test/v1/chat/completions"
    body = recorder.body
    assert body["model"] == "vendor/big-model-2025"
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 64
    assert body["seed"] == 7
    assert body["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi", "name": "ann"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Why is the sky blue?"},
    ]


async def test_router_without_system_prompt_sends_the_messages_unchanged() -> None:
    recorder = Recorder()
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    await router.complete(ModelSpec(model="small"), MESSAGES)
    await router.aclose()
    assert recorder.body["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert recorder.body["model"] == "smollm2-135m"


async def test_structured_output_json_schema() -> None:
    recorder = Recorder()
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    await router.complete(ModelSpec(model="big"), MESSAGES, json_schema=SCHEMA)
    await router.aclose()
    assert recorder.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": SCHEMA},
    }


async def test_structured_output_json_object_with_schema() -> None:
    recorder = Recorder()
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    await router.complete(ModelSpec(model="small"), MESSAGES, json_schema=SCHEMA)
    await router.aclose()
    assert recorder.body["response_format"] == {"type": "json_object", "schema": SCHEMA}


async def test_structured_output_none_sends_no_response_format() -> None:
    recorder = Recorder()
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    await router.complete(ModelSpec(model="plain"), MESSAGES, json_schema=SCHEMA)
    await router.aclose()
    assert "response_format" not in recorder.body


async def test_http_429_carries_status_and_retry_after() -> None:
    recorder = Recorder(
        lambda _: httpx.Response(
            429, headers={"Retry-After": "7"}, json={"error": {"message": "slow down", "code": 429}}
        )
    )
    with pytest.raises(ModelHTTPError) as caught:
        await adapter(recorder).complete(ModelCall("m", MESSAGES))
    assert caught.value.status_code == 429
    assert caught.value.retry_after_s == 7.0
    assert "HTTP 429" in str(caught.value)
    assert "slow down" in str(caught.value)


async def test_http_429_with_an_http_date_retry_after_has_none() -> None:
    recorder = Recorder(
        lambda _: httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, text="busy")
    )
    with pytest.raises(ModelHTTPError) as caught:
        await adapter(recorder).complete(ModelCall("m", MESSAGES))
    assert caught.value.retry_after_s is None


async def test_http_500_is_an_http_error_with_the_body_text() -> None:
    recorder = Recorder(lambda _: httpx.Response(500, text="upstream exploded" + "!" * 1000))
    with pytest.raises(ModelHTTPError) as caught:
        await adapter(recorder).complete(ModelCall("m", MESSAGES))
    assert caught.value.status_code == 500
    assert caught.value.retry_after_s is None
    assert "upstream exploded" in str(caught.value)
    assert len(str(caught.value)) < 400  # the body is cut


@pytest.mark.parametrize("content", [b"not json at all", b'{"choices": [', b"\xff\xfe"])
async def test_malformed_json_body_is_a_response_error(content: bytes) -> None:
    recorder = Recorder(lambda _: httpx.Response(200, content=content))
    with pytest.raises(ModelResponseError, match="malformed JSON"):
        await adapter(recorder).complete(ModelCall("m", MESSAGES))


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x"},
        {"choices": []},
        {"choices": [{"message": {}}]},
        {"choices": [{"text": "legacy"}]},
        {"choices": None},
        [1, 2],
    ],
)
async def test_missing_choices_is_a_response_error(body: Any) -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json=body))
    with pytest.raises(ModelResponseError, match=r"choices\[0\]\.message\.content"):
        await adapter(recorder).complete(ModelCall("m", MESSAGES))


async def test_non_text_content_is_a_response_error() -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json=completion(text=None)))
    with pytest.raises(ModelResponseError, match="not text"):
        await adapter(recorder).complete(ModelCall("m", MESSAGES))


async def test_connection_error_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ModelUnavailable, match="prov unreachable: ConnectError"):
        await adapter(Recorder(refuse)).complete(ModelCall("m", MESSAGES))


async def test_read_timeout_is_a_timeout_error() -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(TimeoutError):
        await adapter(Recorder(stall)).complete(ModelCall("m", MESSAGES))


async def test_api_key_is_sent_as_bearer_and_kept_out_of_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    statuses = iter([401, 200])

    def respond(request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        if status == 401:
            return httpx.Response(401, json={"error": {"message": "invalid credentials"}})
        return httpx.Response(200, json=completion())

    recorder = Recorder(respond)
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    with pytest.raises(ModelHTTPError) as caught:
        await router.complete(ModelSpec(model="paid"), MESSAGES)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    await router.complete(ModelSpec(model="paid"), MESSAGES)
    await router.aclose()

    for request in recorder.requests:
        assert request.headers["Authorization"] == f"Bearer {SECRET}"
        assert request.headers["X-Title"] == "Fusion"
    assert str(recorder.requests[0].url) == "https://keyed.test/api/v1/chat/completions"


@pytest.mark.parametrize("kept", [6, 12, len(SECRET) - 1])
@pytest.mark.parametrize("as_json", [True, False])
async def test_a_key_echoed_across_the_error_length_limit_leaks_no_prefix(
    monkeypatch: pytest.MonkeyPatch, kept: int, as_json: bool
) -> None:
    """The error's detail is cut at 300 characters: the key must be redacted before the cut, or the
    `kept` characters of it ahead of the cut would survive it."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    echoed = "e" * (300 - kept) + SECRET + " is not a valid key"
    body = {"error": {"message": echoed}} if as_json else None

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json=body) if as_json else httpx.Response(401, text=echoed)

    router = ModelRouter(catalog(), transport=httpx.MockTransport(Recorder(respond)))
    with pytest.raises(ModelHTTPError) as caught:
        await router.complete(ModelSpec(model="paid"), MESSAGES)
    await router.aclose()
    message = str(caught.value)
    assert SECRET[:kept] not in message
    assert message.startswith("keyed answered HTTP 401: eeee")
    assert len(message) < 400  # still cut


async def test_api_key_kept_out_of_connection_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection reset", request=request)

    router = ModelRouter(catalog(), transport=httpx.MockTransport(refuse))
    with pytest.raises(ModelUnavailable) as caught:
        await router.complete(ModelSpec(model="paid"), MESSAGES)
    await router.aclose()
    assert SECRET not in str(caught.value)


async def test_no_authorization_header_for_keyless_providers() -> None:
    recorder = Recorder()
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    await router.complete(ModelSpec(model="small"), MESSAGES)
    await router.aclose()
    assert "Authorization" not in recorder.requests[0].headers


async def test_each_call_carries_the_providers_timeouts_and_a_compressed_reply_is_decoded() -> None:
    def gzipped(request: httpx.Request) -> httpx.Response:
        body = gzip.compress(json.dumps(completion("unzipped")).encode())
        return httpx.Response(200, headers={"content-encoding": "gzip"}, content=body)

    recorder = Recorder(gzipped)
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    reply = await router.complete(ModelSpec(model="small"), MESSAGES)
    await router.aclose()
    assert reply.text == "unzipped"
    timeout_s = catalog().providers["llama"].timeout_s
    assert recorder.requests[0].extensions["timeout"] == {
        "connect": 10.0,
        "read": timeout_s,
        "write": timeout_s,
        "pool": timeout_s,
    }
    assert "gzip" in recorder.requests[0].headers["accept-encoding"]


@pytest.mark.parametrize("value", [None, ""])
async def test_provider_needing_an_unset_key_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(KEY_ENV, value)
    recorder = Recorder()
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    with pytest.raises(ModelConfigError, match=KEY_ENV):
        await router.complete(ModelSpec(model="paid"), MESSAGES)
    assert recorder.requests == []
    assert catalog().providers["keyed"].missing_key() == KEY_ENV
    assert catalog().providers["llama"].missing_key() is None


async def test_unknown_model_is_a_config_error_listing_known_models() -> None:
    recorder = Recorder()
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    with pytest.raises(ModelConfigError, match="unknown model 'nope'") as caught:
        await router.complete(ModelSpec(model="nope"), MESSAGES)
    assert "big" in str(caught.value)
    assert recorder.requests == []


async def test_unknown_api_shape_is_a_config_error() -> None:
    router = ModelRouter(catalog(), transport=httpx.MockTransport(Recorder()))
    with pytest.raises(ModelConfigError, match="unknown API shape 'grpc-someday'"):
        await router.complete(ModelSpec(model="odd"), MESSAGES)


async def test_router_reuses_one_adapter_per_provider() -> None:
    recorder = Recorder()
    router = ModelRouter(catalog(), transport=httpx.MockTransport(recorder))
    await router.complete(ModelSpec(model="big"), MESSAGES)
    await router.complete(ModelSpec(model="big", temperature=1.0), MESSAGES)
    await router.complete(ModelSpec(model="small"), MESSAGES)
    assert set(router._adapters) == {"schema-provider", "llama"}
    await router.aclose()
    assert router._adapters == {}
    assert len(recorder.requests) == 3
