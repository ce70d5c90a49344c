"""fusion.gateway.tools.run_tool_loop with a scripted model and a fake fusion (no HTTP, no Kafka)."""

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fusion.gateway.tools import lists_fusion_tool, run_tool_loop
from fusion_contracts import FusedResult, Timings, Usage, UsageSummary
from fusion_contracts.result import ResultStatus

FUSION_TOOL = {"type": "function", "function": {"name": "fusion", "parameters": {"type": "object"}}}
WEATHER_TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
QUESTION = [{"role": "user", "content": "Is P = NP?"}]
FORCED = {"type": "function", "function": {"name": "fusion"}}


def tool_call(call_id: str, arguments: str, name: str = "fusion") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def ask_fusion(call_id: str, question: str = "Is P = NP, really?", **extra: str) -> dict[str, Any]:
    return tool_call(call_id, json.dumps({"question": question, **extra}))


def reply(
    content: str | None = None,
    calls: list[dict[str, Any]] | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "model": "vendor/tool-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }


def fused(
    request_id: str = "fused-1",
    answer: str | None = "The panel says: unknown.",
    status: ResultStatus = "complete",
    error: str | None = None,
) -> FusedResult:
    now = datetime.now(UTC)
    return FusedResult(
        request_id=request_id,
        status=status,
        answer=answer,
        error=error,
        usage=UsageSummary(total=Usage(input_tokens=100, output_tokens=20)),
        timings=Timings(submitted_at=now, completed_at=now, total_ms=1.0),
    )


class ScriptedModel:
    """A model call: answers with the next reply, or with `answer(request)` once the script runs out.
    Records a copy of every request body (the loop keeps appending to its message list)."""

    def __init__(
        self,
        *replies: dict[str, Any],
        answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self._replies = list(replies)
        self._answer = answer
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(copy.deepcopy(body))
        if self._replies:
            return self._replies.pop(0)
        assert self._answer is not None, "the model was called more often than scripted"
        return self._answer(body)


class FakeFuse:
    def __init__(self, *results: FusedResult) -> None:
        self._results = list(results)
        self.questions: list[tuple[str, str | None]] = []

    async def __call__(self, question: str, preset: str | None) -> FusedResult:
        self.questions.append((question, preset))
        if self._results:
            return self._results.pop(0)
        return fused(f"fused-{len(self.questions)}")


def request_body(**extra: Any) -> dict[str, Any]:
    return {"model": "vendor/tool-model", "messages": list(QUESTION), "tools": [FUSION_TOOL], **extra}


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [message for message in body["messages"] if message["role"] == "tool"]


def test_lists_fusion_tool() -> None:
    assert lists_fusion_tool([WEATHER_TOOL, FUSION_TOOL])
    assert not lists_fusion_tool([WEATHER_TOOL])
    assert not lists_fusion_tool(None)
    assert not lists_fusion_tool([{"type": "function"}])


async def test_no_tool_call_is_a_single_model_turn() -> None:
    model = ScriptedModel(reply("I know this one."))
    fuse = FakeFuse()

    result = await run_tool_loop(request_body(temperature=0.3), model, fuse, 4)

    assert len(model.requests) == 1
    assert model.requests[0] == request_body(temperature=0.3)
    assert fuse.questions == []
    assert result["choices"][0]["message"]["content"] == "I know this one."
    assert result["id"] == "chatcmpl-up"
    assert result["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    assert result["fusion"] == {"tool_calls": []}


async def test_a_fusion_call_is_run_and_its_answer_handed_back() -> None:
    call = ask_fusion("call-1", "Is P = NP, given all we know?", preset="deep")
    model = ScriptedModel(reply(None, [call]), reply("With the panel's help: unknown."))
    fuse = FakeFuse(fused("fused-1", "The panel says: unknown."))

    result = await run_tool_loop(request_body(), model, fuse, 4)

    assert fuse.questions == [("Is P = NP, given all we know?", "deep")]
    assert len(model.requests) == 2
    assert model.requests[1]["messages"] == [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call-1", "content": "The panel says: unknown."},
    ]
    assert model.requests[1]["tools"] == [FUSION_TOOL]
    assert result["choices"][0]["message"]["content"] == "With the panel's help: unknown."
    assert result["fusion"] == {
        "tool_calls": [{"tool_call_id": "call-1", "request_id": "fused-1", "status": "complete"}]
    }


async def test_the_callers_message_list_is_not_changed() -> None:
    body = request_body()
    model = ScriptedModel(reply(None, [ask_fusion("call-1")]), reply("done"))
    await run_tool_loop(body, model, FakeFuse(), 4)
    assert body["messages"] == QUESTION


async def test_without_a_preset_the_fusion_runs_the_default() -> None:
    model = ScriptedModel(reply(None, [ask_fusion("call-1", "q?")]), reply("done"))
    fuse = FakeFuse()
    await run_tool_loop(request_body(), model, fuse, 4)
    assert fuse.questions == [("q?", None)]


async def test_several_fusion_calls_in_one_turn_each_get_their_answer() -> None:
    calls = [ask_fusion("call-a", "first?"), ask_fusion("call-b", "second?")]
    model = ScriptedModel(reply(None, calls), reply("both answered"))
    fuse = FakeFuse(fused("fused-a", "answer A"), fused("fused-b", "answer B"))

    result = await run_tool_loop(request_body(), model, fuse, 4)

    assert fuse.questions == [("first?", None), ("second?", None)]
    assert tool_messages(model.requests[1]) == [
        {"role": "tool", "tool_call_id": "call-a", "content": "answer A"},
        {"role": "tool", "tool_call_id": "call-b", "content": "answer B"},
    ]
    assert [entry["request_id"] for entry in result["fusion"]["tool_calls"]] == ["fused-a", "fused-b"]


async def test_usage_sums_the_model_turns_and_the_fusions() -> None:
    model = ScriptedModel(
        reply(
            None, [ask_fusion("call-1")], {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        ),
        reply("done", usage={"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}),
    )
    fuse = FakeFuse(fused())  # 100 in, 20 out

    result = await run_tool_loop(request_body(), model, fuse, 4)

    assert result["usage"] == {"prompt_tokens": 140, "completion_tokens": 27, "total_tokens": 167}


async def test_a_forced_tool_choice_becomes_auto_after_the_first_round() -> None:
    model = ScriptedModel(reply(None, [ask_fusion("call-1")]), reply("done"))

    await run_tool_loop(request_body(tool_choice=FORCED), model, FakeFuse(), 4)

    assert [request["tool_choice"] for request in model.requests] == [FORCED, "auto"]


async def test_the_last_round_forces_an_answer() -> None:
    model = ScriptedModel(
        reply(None, [ask_fusion("call-1")]), reply(None, [ask_fusion("call-2")]), reply("finally")
    )

    result = await run_tool_loop(request_body(tool_choice="auto"), model, FakeFuse(), 3)

    assert [request["tool_choice"] for request in model.requests] == ["auto", "auto", "none"]
    assert result["choices"][0]["message"]["content"] == "finally"
    assert len(tool_messages(model.requests[2])) == 2


async def test_a_single_round_is_the_last_round() -> None:
    model = ScriptedModel(reply("direct"))
    await run_tool_loop(request_body(), model, FakeFuse(), 1)
    assert model.requests[0]["tool_choice"] == "none"


@pytest.mark.parametrize(
    "calls",
    [
        [tool_call("call-w", '{"city": "Paris"}', name="weather")],
        [ask_fusion("call-f"), tool_call("call-w", '{"city": "Paris"}', name="weather")],
    ],
    ids=["only-other", "mixed"],
)
async def test_a_call_to_another_tool_goes_back_to_the_caller(calls: list[dict[str, Any]]) -> None:
    upstream = reply(None, calls)
    model = ScriptedModel(upstream)
    fuse = FakeFuse()

    result = await run_tool_loop(request_body(tools=[FUSION_TOOL, WEATHER_TOOL]), model, fuse, 4)

    assert len(model.requests) == 1
    assert fuse.questions == []
    assert result["choices"] == upstream["choices"]
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    assert result["fusion"] == {"tool_calls": []}


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ("{not json", "the arguments are not valid JSON"),
        ("{}", "the arguments need a non-empty 'question'"),
        ('{"question": "   "}', "the arguments need a non-empty 'question'"),
        ('{"question": 42}', "the arguments need a non-empty 'question'"),
        ('["a question"]', "the arguments need a non-empty 'question'"),
    ],
)
async def test_malformed_arguments_are_explained_without_a_fusion(arguments: str, reason: str) -> None:
    model = ScriptedModel(reply(None, [tool_call("call-1", arguments)]), reply("sorry"))
    fuse = FakeFuse()

    result = await run_tool_loop(request_body(), model, fuse, 4)

    assert fuse.questions == []
    assert tool_messages(model.requests[1]) == [
        {"role": "tool", "tool_call_id": "call-1", "content": f"Fusion was not run: {reason}"}
    ]
    assert result["fusion"] == {"tool_calls": []}


async def test_a_failed_fusion_is_reported_to_the_model() -> None:
    model = ScriptedModel(reply(None, [ask_fusion("call-1")]), reply("The panel could not help."))
    fuse = FakeFuse(fused("fused-x", None, "failed", "no member answered"))

    result = await run_tool_loop(request_body(), model, fuse, 4)

    [message] = tool_messages(model.requests[1])
    assert message["tool_call_id"] == "call-1"
    assert message["content"] == "Fusion could not answer (failed): no member answered"
    assert result["fusion"]["tool_calls"] == [
        {"tool_call_id": "call-1", "request_id": "fused-x", "status": "failed"}
    ]


async def test_a_required_tool_choice_does_not_force_fusion_again_and_again() -> None:
    # `tool_choice: "required"` forces a tool call just as a named function does. Once fusion has run,
    # forcing it again only runs the same question through the panel once more, each round.
    def obedient(body: dict[str, Any]) -> dict[str, Any]:
        if body.get("tool_choice") == "required":
            return reply(None, [ask_fusion(f"call-{len(model.requests)}")])
        return reply("With the panel's help: unknown.")

    model = ScriptedModel(answer=obedient)
    fuse = FakeFuse()

    result = await run_tool_loop(request_body(tool_choice="required"), model, fuse, 4)

    assert result["choices"][0]["message"]["content"] == "With the panel's help: unknown."
    assert len(fuse.questions) == 1


async def test_every_fusion_that_runs_is_handed_back_to_the_model() -> None:
    # A provider that ignores tool_choice "none" on the last round and calls fusion again: that call is
    # not run (nothing could read its answer, so it would be paid for and thrown away); it comes back to
    # the client like a call to any tool the client listed.
    model = ScriptedModel(answer=lambda body: reply(None, [ask_fusion(f"call-{len(model.requests)}")]))
    fuse = FakeFuse()

    result = await run_tool_loop(request_body(), model, fuse, 2)

    delivered = {message["tool_call_id"] for request in model.requests for message in tool_messages(request)}
    assert len(fuse.questions) == len(delivered) == 1
    assert [call["id"] for call in result["choices"][0]["message"]["tool_calls"]] == ["call-2"]
