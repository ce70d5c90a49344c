"""The gateway's FastAPI app over httpx.ASGITransport, without Kafka: a fake link stands in for Fusion and
a MockTransport for the providers.

`create_app` builds its own `FusionLink` and `ModelRouter`; the routes reach them through the `Gateway`
it stores in `app.state.gateway`, so the tests swap that gateway's `link` and `models`. ASGITransport
does not run the lifespan, so nothing connects to Kafka. (`/health` reads the original link: its test
sets that link up itself.)
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from fusion.catalog import Catalog, load_catalog
from fusion.gateway import app as gateway_app
from fusion.gateway.answer_stream import RESTART_NOTICE
from fusion.gateway.app import Gateway, create_app
from fusion.gateway.link import FusionLink
from fusion.kafka.tap import Reply
from fusion.models import ModelRouter
from fusion.settings import Settings
from fusion_contracts import (
    AnswerChunk,
    ChatMessage,
    FusedResult,
    FusionProgress,
    FusionRequest,
    MemberOutcome,
    Timings,
    Usage,
    UsageSummary,
)
from fusion_contracts.result import AnswerSource, ResultStatus

from tests.component.support import eventually

OVERLAY = """
replace = true
default_preset = "duo"

[providers.unit]
api = "openai"
base_url = "http://provider.test/v1"

[providers.keyed]
api = "openai"
base_url = "http://keyed.test/v1"
key_env = "FUSION_GATEWAY_COMPONENT_TEST_UNSET_KEY"

[models.alpha]
provider = "unit"
id = "vendor/alpha"

[models.beta]
provider = "unit"
id = "vendor/beta"

[models.toolmodel]
provider = "unit"
id = "vendor/tool-model"

[models.locked]
provider = "keyed"
id = "vendor/locked"

[presets.duo]
panel = [{ model = "alpha" }, { model = "beta" }]
judge = { model = "beta" }

[presets.solo]
panel = [{ model = "alpha" }]
judge = { model = "alpha" }
"""

FUSION_TOOL = {
    "type": "function",
    "function": {"name": "fusion", "parameters": {"type": "object", "properties": {"question": {}}}},
}
ANSWER = "The fused answer: Rayleigh scattering."


def answered(
    request: FusionRequest,
    answer: str | None = ANSWER,
    status: ResultStatus = "complete",
    error: str | None = None,
    source: AnswerSource = "judge",
) -> FusedResult:
    now = datetime.now(UTC)
    return FusedResult(
        request_id=request.request_id,
        status=status,
        release="all",
        answer=answer,
        answer_source=source if answer else None,
        members=[MemberOutcome(index=0, model="alpha", status="ok" if answer else "error", error=error)],
        usage=UsageSummary(total=Usage(input_tokens=30, output_tokens=12)),
        error=error,
        timings=Timings(submitted_at=now, completed_at=now, total_ms=5.0),
        answered=1 if answer else 0,
    )


class FakeLink(FusionLink):
    """Fusion in memory: `respond` gives each request's result (None: it never comes); a streaming
    listener gets `chunks(request)` ahead of it. `hold`, when given, delays every answer until set."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)  # builds a broker it never starts
        self.ready.set()
        self.submitted: list[FusionRequest] = []
        self.forgotten: list[str] = []
        self.respond: Callable[[FusionRequest], FusedResult | None] = answered
        self.chunks: Callable[[FusionRequest], Sequence[AnswerChunk | FusionProgress]] = lambda _: []
        self.hold: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(
        self, request: FusionRequest, listener: "Callable[[Reply], None] | None" = None
    ) -> "asyncio.Future[FusedResult]":
        self.submitted.append(request)
        future: asyncio.Future[FusedResult] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._answer(request, future, listener))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return future

    async def _answer(
        self,
        request: FusionRequest,
        future: "asyncio.Future[FusedResult]",
        listener: "Callable[[Reply], None] | None",
    ) -> None:
        if self.hold is not None:
            await self.hold.wait()
        result = self.respond(request)
        if listener is not None:
            for chunk in self.chunks(request):
                listener(chunk)
            if result is not None:
                listener(result)
        if result is not None and not future.done():
            future.set_result(result)

    def forget(self, request_id: str) -> None:
        self.forgotten.append(request_id)


class Provider:
    """The upstream model server: answers with `responses` in turn, then with `default`."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.responses: list[Callable[[httpx.Request], httpx.Response]] = []
        self.default: Callable[[httpx.Request], httpx.Response] = lambda _: httpx.Response(
            200, json=upstream_reply("Direct answer.")
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        respond = self.responses.pop(0) if self.responses else self.default
        return respond(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]


def upstream_reply(
    content: str | None, calls: list[dict[str, Any]] | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "vendor/x",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": usage or {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def fusion_call(call_id: str, question: str, preset: str | None = None) -> dict[str, Any]:
    arguments = {"question": question, **({"preset": preset} if preset else {})}
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "fusion", "arguments": json.dumps(arguments)},
    }


@dataclass
class Harness:
    app: FastAPI
    gateway: Gateway
    link: FakeLink
    provider: Provider
    client: httpx.AsyncClient

    async def chat(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.client.post("/v1/chat/completions", json=body, headers=headers)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path: Path = tmp_path_factory.mktemp("catalog") / "catalog.toml"
    path.write_text(OVERLAY, encoding="utf-8")
    return load_catalog(path)


@contextlib.asynccontextmanager
async def harness(
    catalog: Catalog, raise_app_exceptions: bool = True, **settings: Any
) -> AsyncIterator[Harness]:
    config = Settings(instance_id="component", **settings)
    app = create_app(config, catalog)
    gateway: Gateway = app.state.gateway
    link = gateway.link = FakeLink(config)
    provider = Provider()
    gateway.models = ModelRouter(catalog, transport=httpx.MockTransport(provider))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=10) as client:
        try:
            yield Harness(app, gateway, link, provider, client)
        finally:
            await gateway.models.aclose()


def ask(question: str = "Why is the sky blue?", model: str = "fusion", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": question}], **extra}


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def events(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith("text/event-stream")
    return [block for block in response.text.split("\n\n") if block]


def data_of(blocks: list[str]) -> list[dict[str, Any]]:
    """The JSON payloads of `data:` events, after checking the stream ends with [DONE]."""
    assert blocks[-1] == "data: [DONE]"
    return [json.loads(block.removeprefix("data: ")) for block in blocks[:-1] if block.startswith("data: ")]


def tokens(usage: dict[str, Any]) -> dict[str, Any]:
    return {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def contents(chunks: list[dict[str, Any]]) -> list[str]:
    return [
        chunk["choices"][0]["delta"]["content"]
        for chunk in chunks
        if chunk["choices"][0]["delta"].get("content")
    ]


# --- fused completions -------------------------------------------------------------------------


async def test_a_fused_completion(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await h.chat(ask(model="fusion/solo", temperature=0.5))

    assert response.status_code == 200
    body = response.json()
    [request] = h.link.submitted
    assert body["id"] == f"chatcmpl-{request.request_id}"
    assert body["object"] == "chat.completion"
    assert body["model"] == "fusion/solo"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": ANSWER, "annotations": []}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert tokens(body["usage"]) == {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    assert body["fusion"]["status"] == "complete"
    assert body["fusion"]["request_id"] == request.request_id
    assert request.preset == "solo"
    assert request.messages == [ChatMessage(role="user", content="Why is the sky blue?")]
    assert request.judge is not None
    assert request.judge.temperature == 0.5
    assert request.reply_to == h.link.reply_to
    assert request.stream is False
    assert h.link.forgotten == [request.request_id]
    assert h.gateway._in_flight == 0


async def test_each_request_gets_its_own_request_id(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        first, second = await asyncio.gather(h.chat(ask()), h.chat(ask()))
    assert first.status_code == second.status_code == 200
    assert len({request.request_id for request in h.link.submitted}) == 2
    assert first.json()["id"] != second.json()["id"]


async def test_a_failed_fusion_is_a_502_with_the_fusion_summary(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.respond = lambda request: answered(request, None, "failed", "no member answered")
        response = await h.chat(ask())

    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "fusion_failed"
    assert error["message"] == "no member answered"
    assert response.json()["fusion"]["members"][0]["error"] == "no member answered"


async def test_a_rejected_fusion_is_a_400(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.respond = lambda request: answered(
            request, None, "rejected", "quorum 5 is larger than the panel of 2"
        )
        response = await h.chat(ask(fusion={"quorum": 5}))

    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert "quorum 5" in error["message"]


async def test_an_invalid_fused_request_is_a_400_without_a_submission(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await h.chat(ask(fusion={"panel": ["alpha", "nope"]}))
    assert response.status_code == 400
    assert "unknown model 'nope'" in error_of(response)["message"]
    assert h.link.submitted == []


@pytest.mark.parametrize(
    "fusion",
    [
        {"quorom": 2},
        {"panel": [{"model": "alpha", "temprature": 0.2}]},
        {"judge": {"model": "alpha", "x": 1}},
    ],
)
async def test_an_unknown_key_of_the_fusion_object_is_still_a_400(
    catalog: Catalog, fusion: dict[str, Any]
) -> None:
    # Kafka readers ignore unknown fields (docs/kafka-api.md, "Versions"); the HTTP API does not.
    async with harness(catalog) as h:
        response = await h.chat(ask(fusion=fusion))
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"
    assert h.link.submitted == []


async def test_no_result_within_the_deadline_is_a_504(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_app, "WAIT_MARGIN_S", 0.0)
    async with harness(catalog) as h:
        h.link.respond = lambda _: None
        response = await asyncio.wait_for(h.chat(ask(fusion={"deadline_s": 0.05})), 5)

    assert response.status_code == 504
    error = error_of(response)
    assert error["code"] == "deadline_exceeded"
    assert "0.05 s" in error["message"]
    [request] = h.link.submitted
    assert h.link.forgotten == [request.request_id]
    assert h.gateway._in_flight == 0


# --- admission and authentication --------------------------------------------------------------


async def test_over_the_in_flight_limit_is_a_429(catalog: Catalog) -> None:
    async with harness(catalog, gateway_max_in_flight=1) as h:
        with h.gateway.admitted():  # the one slot is taken
            refused = await h.chat(ask())
            refused_stream = await h.chat(ask(stream=True))
            refused_model = await h.chat(ask(model="alpha"))
        admitted = await h.chat(ask())

    for response in (refused, refused_stream, refused_model):
        assert response.status_code == 429
        error = error_of(response)
        assert error["type"] == "rate_limit_error"
        assert error["code"] == "too_many_requests"
    assert admitted.status_code == 200
    assert len(h.link.submitted) == 1
    assert h.provider.requests == []


async def test_a_held_request_counts_against_the_limit(catalog: Catalog) -> None:
    async with harness(catalog, gateway_max_in_flight=1) as h:
        h.link.hold = asyncio.Event()
        first = asyncio.create_task(h.chat(ask()))
        await eventually(lambda: len(h.link.submitted) == 1)
        second = await h.chat(ask())
        h.link.hold.set()
        assert (await first).status_code == 200

    assert second.status_code == 429
    assert h.gateway._in_flight == 0


async def test_a_finished_stream_gives_its_slot_back(catalog: Catalog) -> None:
    async with harness(catalog, gateway_max_in_flight=1) as h:
        streamed = await h.chat(ask(stream=True))
        after = await h.chat(ask())
    assert streamed.status_code == 200
    assert after.status_code == 200
    assert h.gateway._in_flight == 0


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-key", "Basic s3cret-gateway-key", "s3cret-gateway-key", "Bearer "]
)
async def test_a_missing_or_wrong_key_is_a_401(catalog: Catalog, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with harness(catalog, gateway_api_key="s3cret-gateway-key") as h:
        chat = await h.client.post("/v1/chat/completions", json=ask(), headers=headers)
        models = await h.client.get("/v1/models", headers=headers)

    for response in (chat, models):
        assert response.status_code == 401
        error = error_of(response)
        assert error["type"] == "authentication_error"
        assert error["code"] == "invalid_api_key"
        assert "s3cret" not in response.text
    assert h.link.submitted == []


async def test_the_right_key_is_let_in(catalog: Catalog) -> None:
    headers = {"Authorization": "bearer s3cret-gateway-key"}
    async with harness(catalog, gateway_api_key="s3cret-gateway-key") as h:
        chat = await h.client.post("/v1/chat/completions", json=ask(), headers=headers)
        models = await h.client.get("/v1/models", headers=headers)
    assert chat.status_code == 200
    assert models.status_code == 200
    assert "fusion/solo" in {model["id"] for model in models.json()["data"]}


async def test_without_a_configured_key_no_header_is_needed(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await h.chat(ask(), Authorization="Bearer anything")
    assert response.status_code == 200


# --- streamed fusions --------------------------------------------------------------------------


def stream_of(request: FusionRequest, *deltas: tuple[int, str]) -> list[AnswerChunk]:
    return [AnswerChunk(request_id=request.request_id, seq=seq, delta=delta) for seq, delta in deltas]


async def test_a_streamed_fusion_sends_role_deltas_finish_and_done(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.chunks = lambda request: stream_of(
            request, (0, "The fused "), (1, "answer: "), (1, "answer: "), (2, "Rayleigh scattering.")
        )
        response = await h.chat(ask(stream=True))

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    chunks = data_of(events(response))
    [request] = h.link.submitted
    assert request.stream is True
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert contents(chunks) == ["The fused ", "answer: ", "Rayleigh scattering."]  # the redelivery is dropped
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["choices"][0]["delta"] == {}
    assert tokens(final["usage"]) == {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    assert final["fusion"]["status"] == "complete"
    assert {chunk["id"] for chunk in chunks} == {f"chatcmpl-{request.request_id}"}
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert {chunk["model"] for chunk in chunks} == {"fusion"}
    assert h.link.forgotten == [request.request_id]


async def test_progress_events_come_as_chunks_without_choices_when_asked(catalog: Catalog) -> None:
    def told(request: FusionRequest) -> list[AnswerChunk | FusionProgress]:
        return [
            FusionProgress(request_id=request.request_id, event="panel.added", member_index=0, model="alpha"),
            FusionProgress(
                request_id=request.request_id,
                event="panel.completed",
                member_index=0,
                model="alpha",
                text="Blue light scatters.",
                latency_ms=12.0,
            ),
            FusionProgress(request_id=request.request_id, event="analysis.in_progress"),
            *stream_of(request, (0, ANSWER)),
        ]

    async with harness(catalog) as h:
        h.link.chunks = told
        asked = await h.chat(ask(stream=True, fusion={"progress": True}))
        await h.chat(ask(stream=True))
        unstreamed = await h.chat(ask(fusion={"progress": True}))

    first, second, third = h.link.submitted
    assert (first.progress, second.progress, third.progress) == (True, False, False)
    chunks = data_of(events(asked))
    progress = [chunk["fusion_progress"] for chunk in chunks if "fusion_progress" in chunk]
    assert [event["type"] for event in progress] == [
        "response.fusion_call.panel.added",
        "response.fusion_call.panel.completed",
        "response.fusion_call.analysis.in_progress",
    ]
    assert progress[1]["text"] == "Blue light scatters."
    assert progress[1]["model"] == "alpha"
    assert all(chunk["choices"] == [] for chunk in chunks if "fusion_progress" in chunk)
    assert contents([chunk for chunk in chunks if chunk["choices"]]) == [ANSWER]
    assert unstreamed.status_code == 200


async def test_a_result_longer_than_the_stream_sends_the_rest(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.chunks = lambda request: stream_of(request, (0, "The fused "))
        response = await h.chat(ask(stream=True))

    chunks = data_of(events(response))
    assert contents(chunks) == ["The fused ", "answer: Rayleigh scattering."]
    assert "".join(contents(chunks)) == ANSWER


async def test_a_result_that_contradicts_the_stream_follows_a_notice(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.chunks = lambda request: stream_of(request, (0, "The judge began, then "))
        h.link.respond = lambda request: answered(
            request, "Best panel answer.", "partial", source="best_member"
        )
        response = await h.chat(ask(stream=True))

    chunks = data_of(events(response))
    *_, rest = contents(chunks)
    assert "The judge failed" in rest
    assert rest.endswith("\n\nBest panel answer.")
    assert chunks[-1]["fusion"]["status"] == "partial"


async def test_a_failed_streamed_fusion_ends_with_an_error_event(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.link.respond = lambda request: answered(request, None, "failed", "no member answered")
        response = await h.chat(ask(stream=True))

    payloads = data_of(events(response))
    assert payloads[-1]["error"]["code"] == "fusion_failed"
    assert payloads[-1]["fusion"]["status"] == "failed"
    assert all(chunk.get("choices", [{}])[0].get("finish_reason") is None for chunk in payloads)


async def test_a_stream_past_its_deadline_keeps_alive_then_ends_with_504(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_app, "WAIT_MARGIN_S", 0.0)
    monkeypatch.setattr(gateway_app, "KEEPALIVE_S", 0.02)
    async with harness(catalog) as h:
        h.link.respond = lambda _: None
        response = await asyncio.wait_for(h.chat(ask(stream=True, fusion={"deadline_s": 0.15})), 5)

    blocks = events(response)
    assert ": keep-alive" in blocks
    payloads = data_of(blocks)
    assert payloads[-1]["error"]["code"] == "deadline_exceeded"
    [request] = h.link.submitted
    assert h.link.forgotten == [request.request_id]
    assert h.gateway._in_flight == 0


def streamed_text(response: httpx.Response) -> str:
    return "".join(contents(data_of(events(response))))


def attempt(request: FusionRequest, stream_id: str | None, *deltas: tuple[int, str]) -> list[AnswerChunk]:
    """One judge's stream of the answer."""
    return [
        AnswerChunk(request_id=request.request_id, seq=seq, delta=delta, stream_id=stream_id)
        for seq, delta in deltas
    ]


async def test_a_stream_restarted_by_a_new_judge_is_not_spliced(catalog: Catalog) -> None:
    """A judge took the request over mid-stream and wrote another answer from seq 0 (judges of this
    release's predecessor set no stream id). Before: the second stream's first chunks were dropped as
    redeliveries and its later ones joined to the first stream's text, then the result came after a
    false "judge failed" notice."""
    first = attempt_text = ("The first judge ", "wrote this, ")
    second = ("Another judge ", "wrote something ", "else entirely.")
    async with harness(catalog) as h:
        h.link.chunks = lambda request: [
            *attempt(request, None, *enumerate(first)),
            *attempt(request, None, *enumerate(second)),
        ]
        h.link.respond = lambda request: answered(request, "".join(second))
        response = await h.chat(ask(stream=True))

    text = streamed_text(response)
    assert "judge failed" not in text
    assert text == "".join(attempt_text) + RESTART_NOTICE + "".join(second)
    assert data_of(events(response))[-1]["fusion"]["status"] == "complete"


async def test_a_stream_left_behind_is_dropped_even_when_its_judge_goes_on(catalog: Catalog) -> None:
    """A judge paused past its session timeout streams on beside the one that took over: its chunks,
    under their own stream id, never reach the client after the switch."""
    async with harness(catalog) as h:
        h.link.chunks = lambda request: [
            *attempt(request, "zombie", (0, "Old one, "), (1, "old two, ")),
            *attempt(request, "heir", (0, "New one, ")),
            *attempt(request, "zombie", (2, "old three, ")),
            *attempt(request, "heir", (1, "new two.")),
            *attempt(request, "zombie", (3, "old four.")),
        ]
        h.link.respond = lambda request: answered(request, "New one, new two.")
        response = await h.chat(ask(stream=True))

    text = streamed_text(response)
    assert "old three" not in text
    assert "old four" not in text
    assert text == "Old one, old two, " + RESTART_NOTICE + "New one, new two."


async def test_a_restart_that_repeats_the_answer_continues_without_a_notice(catalog: Catalog) -> None:
    """The judge that took over wrote the same words (in other chunks): the client sees one answer."""
    async with harness(catalog) as h:
        h.link.chunks = lambda request: [
            *attempt(request, "a", (0, "The fused "), (1, "answer: ")),
            *attempt(request, "b", (0, "The fu"), (1, "sed answer: Rayleigh"), (2, " scattering.")),
        ]
        response = await h.chat(ask(stream=True))

    assert streamed_text(response) == ANSWER


async def test_a_gap_in_the_stream_stops_it_and_the_result_fills_in(catalog: Catalog) -> None:
    """A chunk lost (the judge's send failed, or too many queued): before, the text went on past the
    hole, and the result then came again after a false "judge failed" notice."""
    async with harness(catalog) as h:
        h.link.chunks = lambda request: stream_of(request, (0, "The fused "), (2, "Rayleigh scattering."))
        response = await h.chat(ask(stream=True))

    assert contents(data_of(events(response))) == ["The fused ", "answer: Rayleigh scattering."]


async def test_a_stream_whose_body_is_never_read_gives_its_slot_and_its_route_back(catalog: Catalog) -> None:
    """The client went away before the first byte: the server never starts the body, so cleanup in
    the body's generator never ran. Before: the in-flight slot and the reply route leaked for good."""
    async with harness(catalog) as h:
        h.link.hold = asyncio.Event()  # no reply, so nothing but the cleanup ends the request
        sent: list[dict[str, Any]] = []
        gone = asyncio.Event()
        bodies = [json.dumps(ask(stream=True)).encode()]

        async def receive() -> dict[str, Any]:
            if bodies:
                return {"type": "http.request", "body": bodies.pop(), "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))
            if message["type"] == "http.response.start":
                gone.set()
                await asyncio.sleep(3600)  # a client that never reads

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"host", b"gateway.test")],
            "client": ("127.0.0.1", 1234),
            "server": ("gateway.test", 80),
            "state": {},
        }
        await asyncio.wait_for(h.app(scope, receive, send), 5)

    assert gone.is_set()
    [request] = h.link.submitted
    assert request.request_id in h.link.forgotten
    assert h.gateway.in_flight == 0


# --- shutdown ----------------------------------------------------------------------------------


async def test_a_drain_lets_requests_in_flight_finish_and_refuses_new_ones(catalog: Catalog) -> None:
    async with harness(catalog, gateway_drain_s=30) as h:
        h.link.hold = asyncio.Event()
        fused = asyncio.create_task(h.chat(ask()))
        streamed = asyncio.create_task(h.chat(ask(stream=True)))
        await eventually(lambda: len(h.link.submitted) == 2)

        h.gateway.begin_drain()
        refused = await h.chat(ask())
        health = await h.client.get("/health")
        h.link.hold.set()
        done, streamed_done = await fused, await streamed

    assert done.status_code == 200
    assert done.json()["choices"][0]["message"]["content"] == ANSWER
    assert streamed_text(streamed_done) == ANSWER
    assert refused.status_code == 503
    assert error_of(refused)["code"] == "gateway_shutting_down"
    assert health.status_code == 503
    assert health.json()["status"] == "draining"
    assert h.gateway.in_flight == 0


async def test_past_the_drain_time_each_request_gets_a_clear_503(catalog: Catalog) -> None:
    """Instead of a connection cut when the server gives up: a 503 naming the request, or for a
    stream an error event and [DONE]."""
    async with harness(catalog, gateway_drain_s=0.2) as h:
        h.link.respond = lambda _: None  # the fusions outlive the drain
        fused = asyncio.create_task(h.chat(ask()))
        streamed = asyncio.create_task(h.chat(ask(stream=True)))
        await eventually(lambda: len(h.link.submitted) == 2)
        h.gateway.begin_drain()
        stopped, stream_stopped = await asyncio.wait_for(asyncio.gather(fused, streamed), 5)

    assert stopped.status_code == 503
    error = error_of(stopped)
    assert error["code"] == "gateway_shutting_down"
    assert (
        h.link.submitted[0].request_id in error["message"]
        or h.link.submitted[1].request_id in error["message"]
    )
    payloads = data_of(events(stream_stopped))
    assert payloads[-1]["error"]["code"] == "gateway_shutting_down"
    assert sorted(h.link.forgotten) == sorted(request.request_id for request in h.link.submitted)
    assert h.gateway.in_flight == 0


# --- pass-through ------------------------------------------------------------------------------


async def test_any_catalog_model_is_passed_through(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await h.chat(ask("direct", model="alpha", temperature=0.1, logit_bias={"1": 2}))

    assert response.status_code == 200
    assert response.json() == upstream_reply("Direct answer.")
    [sent] = h.provider.bodies()
    assert str(h.provider.requests[0].url) == "http://provider.test/v1/chat/completions"
    assert sent == {
        "model": "vendor/alpha",
        "messages": [{"role": "user", "content": "direct"}],
        "temperature": 0.1,
        "logit_bias": {"1": 2},
        "stream": False,
    }
    assert h.link.submitted == []


OPENAI_FIELDS = {  # a request field of OpenAI's chat completions each, as a client may send them
    "temperature": 0.3,
    "top_p": 0.9,
    "max_tokens": 50,
    "max_completion_tokens": 60,
    "n": 2,
    "stop": ["\n\n"],
    "seed": 7,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.2,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "response_format": {"type": "json_object"},
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning_effort": "low",
    "user": "end-user-1",
    "safety_identifier": "user-hash",
    "prompt_cache_key": "cache-1",
    "modalities": ["text"],
    "prediction": {"type": "content", "content": "draft"},
    "verbosity": "low",
    "web_search_options": {"search_context_size": "low"},
}
OUTSIDE_THE_CATALOG = {  # what would reach models, endpoints or options the catalog does not offer
    "models": ["anthropic/claude-opus-4", "openai/o3-pro"],  # OpenRouter: fallbacks to any model
    "provider": {"order": ["any-host"], "allow_fallbacks": True},  # OpenRouter: provider routing
    "route": "fallback",
    "transforms": ["middle-out"],
    "plugins": [{"id": "web"}],
    "api_base": "http://attacker.test/v1",  # proxies that take a base URL, or a key, from the body
    "base_url": "http://attacker.test/v1",
    "api_key": "sk-someone-elses",
    "extra_headers": {"X-Upstream": "elsewhere"},
    "extra_body": {"model": "vendor/not-in-the-catalog"},
    "store": True,  # these act on the operator's account rather than on the answer
    "metadata": {"k": "v"},
    "service_tier": "priority",
}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_pass_through_forwards_only_openai_chat_completion_fields(
    catalog: Catalog, stream: bool
) -> None:
    messages = [
        {"role": "system", "content": "Be brief.", "provider": "elsewhere"},
        {"role": "user", "content": [{"type": "text", "text": "direct"}], "name": "ann", "model": "x"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    body = {"model": "alpha", "messages": messages, "stream": stream, **OPENAI_FIELDS, **OUTSIDE_THE_CATALOG}
    async with harness(catalog) as h:
        if stream:
            h.provider.default = lambda _: httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=b"data: [DONE]\n\n"
            )
        response = await h.chat(body)

    assert response.status_code == 200, response.text
    [request] = h.provider.requests
    assert str(request.url) == "http://provider.test/v1/chat/completions"
    sent = json.loads(request.content)
    assert sent == {
        **OPENAI_FIELDS,
        "model": "vendor/alpha",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "direct"}], "name": "ann"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
    }


async def test_the_tool_loop_forwards_only_openai_chat_completion_fields(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.provider.responses = [
            lambda _: httpx.Response(200, json=upstream_reply(None, [fusion_call("call-1", "q?")])),
            lambda _: httpx.Response(200, json=upstream_reply("Answered.")),
        ]
        response = await h.chat(ask("q", model="toolmodel", tools=[FUSION_TOOL], **OUTSIDE_THE_CATALOG))

    assert response.status_code == 200, response.text
    bodies = h.provider.bodies()
    assert len(bodies) == 2
    for sent in bodies:
        assert sent["model"] == "vendor/tool-model"
        assert not set(sent) & set(OUTSIDE_THE_CATALOG)


async def test_a_streamed_pass_through_relays_the_providers_bytes(catalog: Catalog) -> None:
    raw = (
        b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
        b": provider comment\n\n"
        b"data: [DONE]\n\n"
    )
    async with harness(catalog) as h:
        h.provider.default = lambda _: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=raw
        )
        response = await h.chat(ask(model="beta", stream=True, stream_options={"include_usage": True}))

    assert response.status_code == 200
    assert response.content == raw
    [sent] = h.provider.bodies()
    assert sent["stream"] is True
    assert sent["model"] == "vendor/beta"
    assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_error_status_is_passed_on(catalog: Catalog, stream: bool) -> None:
    async with harness(catalog) as h:
        h.provider.default = lambda _: httpx.Response(429, json={"error": {"message": "slow down"}})
        response = await h.chat(ask(model="alpha", stream=stream))

    assert response.status_code == 429
    error = error_of(response)
    assert error["code"] == "upstream_error"
    assert "slow down" in error["message"]
    assert h.gateway._in_flight == 0


async def test_an_unreachable_provider_is_a_502(catalog: Catalog) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with harness(catalog) as h:
        h.provider.default = refuse
        response = await h.chat(ask(model="alpha"))
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_error"


async def test_a_provider_timeout_is_a_504(catalog: Catalog) -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with harness(catalog) as h:
        h.provider.default = stall
        response = await h.chat(ask(model="alpha"))
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_timeout"


async def test_a_provider_timeout_on_a_streamed_pass_through_is_a_504_too(catalog: Catalog) -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with harness(catalog, raise_app_exceptions=False) as h:
        h.provider.default = stall
        response = await h.chat(ask(model="alpha", stream=True))

    assert h.gateway._in_flight == 0
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_timeout"


async def test_an_unknown_model_is_a_404_listing_the_models(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await h.chat(ask(model="gpt-17"))
        streamed = await h.chat(ask(model="gpt-17", stream=True))

    for result in (response, streamed):
        assert result.status_code == 404
        error = error_of(result)
        assert error["type"] == "not_found_error"
        assert error["code"] == "model_not_found"
        assert error["param"] == "model"
        assert "unknown model 'gpt-17'" in error["message"]
        assert (
            "available: fusion, fusion/duo, fusion/solo, alpha, beta, locked, toolmodel" in error["message"]
        )
        assert "alpha" in error["message"]
    assert h.provider.requests == []
    assert h.gateway._in_flight == 0


async def test_a_provider_without_its_key_is_a_503(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSION_GATEWAY_COMPONENT_TEST_UNSET_KEY", raising=False)
    async with harness(catalog) as h:
        response = await h.chat(ask(model="locked"))
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "provider_not_configured"
    assert "FUSION_GATEWAY_COMPONENT_TEST_UNSET_KEY" in error["message"]


# --- fusion as a tool --------------------------------------------------------------------------


async def test_a_model_calls_fusion_as_a_tool(catalog: Catalog) -> None:
    call = fusion_call("call-1", "Is P = NP, given what is known?", preset="solo")
    async with harness(catalog) as h:
        h.provider.responses = [
            lambda _: httpx.Response(200, json=upstream_reply(None, [call])),
            lambda _: httpx.Response(200, json=upstream_reply("With the panel's help: unknown.")),
        ]
        response = await h.chat(ask("Is P = NP?", model="toolmodel", tools=[FUSION_TOOL]))

    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "With the panel's help: unknown."
    [fused] = h.link.submitted
    assert fused.preset == "solo"
    assert fused.messages == [ChatMessage(role="user", content="Is P = NP, given what is known?")]
    assert fused.reply_to == h.link.reply_to
    assert body["fusion"]["tool_calls"] == [
        {"tool_call_id": "call-1", "request_id": fused.request_id, "status": "complete"}
    ]
    assert tokens(body["usage"]) == {"prompt_tokens": 44, "completion_tokens": 18, "total_tokens": 62}
    first, second = h.provider.bodies()
    assert first["model"] == second["model"] == "vendor/tool-model"
    assert "fusion" not in first
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call-1", "content": ANSWER}


async def test_a_streamed_tool_request_is_answered_as_a_stream(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        h.provider.responses = [
            lambda _: httpx.Response(200, json=upstream_reply(None, [fusion_call("call-1", "q?")])),
            lambda _: httpx.Response(200, json=upstream_reply("Answered.")),
        ]
        response = await h.chat(ask("q", model="toolmodel", tools=[FUSION_TOOL], stream=True))

    chunks = data_of(events(response))
    assert contents(chunks) == ["Answered."]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len(chunks[-1]["fusion"]["tool_calls"]) == 1
    assert all(body["stream"] is False for body in h.provider.bodies())


async def test_a_fused_request_listing_the_fusion_tool_is_a_400(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await h.chat(ask(tools=[FUSION_TOOL]))
    assert response.status_code == 400
    assert error_of(response)["param"] == "tools"
    assert h.link.submitted == []


async def test_a_tool_call_naming_an_unknown_preset_is_explained_to_the_model(catalog: Catalog) -> None:
    # The preset comes from the model's tool call, not from the client: a bad one is the model's
    # mistake, to be told in the tool result like malformed arguments are, not a 400 to the client.
    async with harness(catalog) as h:
        h.provider.responses = [
            lambda _: httpx.Response(200, json=upstream_reply(None, [fusion_call("call-1", "q?", "nope")])),
            lambda _: httpx.Response(200, json=upstream_reply("I could not ask the panel.")),
        ]
        response = await h.chat(ask("q", model="toolmodel", tools=[FUSION_TOOL]))

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "I could not ask the panel."
    tool_message = h.provider.bodies()[1]["messages"][-1]
    assert tool_message["role"] == "tool"
    assert "nope" in tool_message["content"]


# --- idempotency -------------------------------------------------------------------------------


async def test_an_idempotency_key_runs_the_fusion_once(catalog: Catalog) -> None:
    body = ask("only once, please")
    async with harness(catalog) as h:
        h.link.hold = asyncio.Event()
        first = asyncio.create_task(h.chat(body, **{"Idempotency-Key": "k-1"}))
        second = asyncio.create_task(h.chat(body, **{"Idempotency-Key": "k-1"}))
        await eventually(lambda: len(h.link.submitted) == 1)
        await asyncio.sleep(0.05)
        h.link.hold.set()
        responses = [await first, await second]
        third = await h.chat(body, **{"Idempotency-Key": "k-1"})
        reused = await h.chat(ask("something else"), **{"Idempotency-Key": "k-1"})
        other_key = await h.chat(body, **{"Idempotency-Key": "k-2"})

    assert [response.status_code for response in responses] == [200, 200]
    assert responses[0].json() == responses[1].json() == third.json()
    assert sorted(response.headers["idempotent-replayed"] for response in responses) == ["false", "true"]
    assert third.headers["idempotent-replayed"] == "true"
    assert reused.status_code == 409
    assert error_of(reused)["code"] == "idempotency_key_reused"
    assert other_key.status_code == 200
    assert len(h.link.submitted) == 2  # k-1 once, k-2 once


async def test_an_idempotent_server_error_is_run_again(catalog: Catalog) -> None:
    outcomes: list[ResultStatus] = ["failed", "complete"]
    body = ask("retry me")

    def respond(request: FusionRequest) -> FusedResult:
        status = outcomes.pop(0)
        if status == "failed":
            return answered(request, None, "failed", "no member answered")
        return answered(request)

    async with harness(catalog) as h:
        h.link.respond = respond
        failed = await h.chat(body, **{"Idempotency-Key": "k-5xx"})
        retried = await h.chat(body, **{"Idempotency-Key": "k-5xx"})

    assert failed.status_code == 502
    assert failed.headers["idempotent-replayed"] == "false"
    assert retried.status_code == 200
    assert retried.headers["idempotent-replayed"] == "false"
    assert len(h.link.submitted) == 2


async def test_an_idempotent_client_error_is_replayed(catalog: Catalog) -> None:
    body = ask(fusion={"panel": ["nope"]})
    async with harness(catalog) as h:
        first = await h.chat(body, **{"Idempotency-Key": "k-400"})
        again = await h.chat(body, **{"Idempotency-Key": "k-400"})
    assert first.status_code == again.status_code == 400
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json() == again.json()


async def test_an_idempotent_stream_is_replayed_as_a_stream(catalog: Catalog) -> None:
    body = ask(stream=True)
    async with harness(catalog) as h:
        first = await h.chat(body, **{"Idempotency-Key": "k-s"})
        again = await h.chat(body, **{"Idempotency-Key": "k-s"})

    assert first.text == again.text
    chunks = data_of(events(first))
    assert contents(chunks) == [ANSWER]
    assert chunks[-1]["fusion"]["status"] == "complete"
    assert len(h.link.submitted) == 1
    assert h.link.submitted[0].stream is False  # answered whole, then replayed as events


# --- metrics -----------------------------------------------------------------------------------


async def test_metrics_count_requests_results_and_errors(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        await h.chat(ask())
        await h.chat(ask(stream=True))
        await h.chat(ask(model="gpt-17"))
        metrics = (await h.client.get("/metrics")).text

    assert 'fusion_gateway_requests_total{kind="fusion",stream="false"} 1.0' in metrics
    assert 'fusion_gateway_requests_total{kind="fusion",stream="true"} 1.0' in metrics
    assert 'fusion_gateway_requests_total{kind="model",stream="false"} 1.0' in metrics
    assert 'fusion_gateway_results_total{status="complete"} 2.0' in metrics
    assert 'fusion_gateway_errors_total{status="404"} 1.0' in metrics
    assert "fusion_gateway_in_flight 0.0" in metrics


async def test_health_fails_while_the_reply_topic_is_not_read_and_only_then(catalog: Catalog) -> None:
    """Connected, but with no reader of its reply topic no result can reach a client: /health says
    so, and an orchestrator restarts the gateway."""
    app = create_app(Settings(instance_id="component"), catalog)
    link: FusionLink = app.state.gateway.link  # the one /health reads
    link.ready.set()  # connected, as after start-up; its reply tap was never started
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        stuck = await client.get("/health")
        link.replies = cast(Any, SimpleNamespace(alive=True))  # a reader that runs
        healthy = await client.get("/health")
    await app.state.gateway.models.aclose()

    assert stuck.status_code == 503
    assert stuck.json()["status"] == "stuck"
    assert healthy.status_code == 200
    assert healthy.json()["status"] == "ok"


@pytest.mark.parametrize("header", ["X-Fusion-Caller", "x-fusion-caller"])
async def test_a_call_from_a_fusion_service_is_refused_as_a_loop(catalog: Catalog, header: str) -> None:
    async with harness(catalog) as h:
        fused = await h.client.post("/v1/chat/completions", json=ask(), headers={header: "panel-worker"})
        passed = await h.client.post(
            "/v1/chat/completions", json=ask(model="alpha"), headers={header: "fusion"}
        )
        plain = await h.chat(ask())

    for response in (fused, passed):
        assert response.status_code == 403
        error = error_of(response)
        assert error["code"] == "fusion_loop"
        assert "Fusion cannot call itself" in error["message"]
    assert plain.status_code == 200
    assert h.gateway._in_flight == 0


# --- OpenRouter's fusion shapes on chat completions ---------------------------------------------


async def test_openrouter_shapes_fuse_on_chat_completions(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        slug = await h.chat(ask(model="openrouter/fusion"))
        plugin = await h.chat(
            ask(model="alpha", plugins=[{"id": "fusion", "analysis_models": ["alpha", "beta"]}])
        )
        tool = await h.chat(
            ask(
                model="fusion",
                tools=[{"type": "openrouter:fusion", "parameters": {"analysis_models": ["beta", "beta"]}}],
            )
        )
        other_plugin = await h.chat(ask(model="fusion/duo", plugins=[{"id": "web"}]))

    for response in (slug, plugin, tool, other_plugin):
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == ANSWER
    by_slug, by_plugin, by_tool, by_other = h.link.submitted
    assert by_slug.preset == "duo"  # the catalog's default preset, as plain `fusion`
    assert [m.model for m in by_plugin.panel or []] == ["alpha", "beta"]
    assert by_plugin.judge is not None
    assert by_plugin.judge.model == "alpha"  # the request's own model analyses, as on OpenRouter
    assert [m.model for m in by_tool.panel or []] == ["beta", "beta"]
    assert by_other.preset == "duo"


async def test_a_bad_fusion_plugin_is_a_400(catalog: Catalog) -> None:
    async with harness(catalog) as h:
        response = await h.chat(ask(model="fusion", plugins=[{"id": "fusion", "analysis_models": "alpha"}]))
    assert response.status_code == 400
    assert error_of(response)["param"] == "plugins"
