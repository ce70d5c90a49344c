"""fusion.judge.fusing.Judge.fuse with a fake judge model: one FusedResult, whatever fails."""

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fusion.catalog import Catalog
from fusion.judge.fusing import Judge, crashed_result
from fusion.judge.prompts import label_answers
from fusion.models import ModelError, ModelReply, ModelRouter, ModelUnavailable, OnDelta
from fusion_contracts import (
    Analysis,
    CallStatus,
    ChatMessage,
    ModelSpec,
    PanelAnswer,
    PanelPlan,
    Usage,
    limits,
)

ANALYSIS = {
    "consensus": ["Answer 1 and Answer 2 agree on scattering"],
    "contradictions": [],
    "partial_coverage": ["only Answer 2 mentions wavelength"],
    "unique_insights": [],
    "blind_spots": ["sunsets"],
}
ANALYSIS_TEXT = json.dumps(ANALYSIS)
ANALYSIS_USAGE = Usage(input_tokens=100, output_tokens=20)
FINAL_USAGE = Usage(input_tokens=150, output_tokens=40)


@dataclass
class Call:
    spec: ModelSpec
    messages: list[ChatMessage]
    json_schema: dict[str, Any] | None
    stop: Sequence[str]


@dataclass
class FakeJudgeModel:
    """Answers the analysis call (the one with a schema) and the final call from scripts."""

    analysis: str | Exception = ANALYSIS_TEXT
    final: str | Exception | Callable[[Call], str] = "The sky is blue because of Rayleigh scattering."
    calls: list[Call] = field(default_factory=list)

    async def complete(
        self,
        spec: ModelSpec,
        messages: list[ChatMessage],
        json_schema: dict[str, Any] | None = None,
        *,
        stop: Sequence[str] = (),
        on_delta: OnDelta | None = None,
        deadline: float | None = None,
    ) -> ModelReply:
        call = Call(spec, messages, json_schema, stop)
        self.calls.append(call)
        is_analysis = json_schema is not None
        scripted = self.analysis if is_analysis else self.final
        if isinstance(scripted, Exception):
            raise scripted
        if callable(scripted):
            scripted = scripted(call)
        return ModelReply(text=scripted, usage=ANALYSIS_USAGE if is_analysis else FINAL_USAGE)


MEMBERS = ["alpha-model", "beta-model", "gamma-model"]


def plan(members: list[str] | None = None, request_id: str = "r-1") -> PanelPlan:
    now = datetime.now(UTC)
    return PanelPlan(
        request_id=request_id,
        messages=[ChatMessage(role="user", content="Why is the sky blue?")],
        members=[ModelSpec(model=name) for name in members or MEMBERS],
        judge=ModelSpec(model="judge-model", temperature=0.1),
        quorum=1,
        grace_s=1.0,
        panel_deadline_at=now + timedelta(seconds=30),
        deadline_at=now + timedelta(seconds=60),
        submitted_at=now - timedelta(seconds=1),
        dispatched_at=now - timedelta(seconds=1),
    )


def answer(
    index: int,
    status: CallStatus = "ok",
    text: str | None = None,
    usage: Usage | None = None,
    error: str | None = None,
) -> PanelAnswer:
    return PanelAnswer(
        request_id="r-1",
        member_index=index,
        model=MEMBERS[index],
        status=status,
        text=(text or f"Rayleigh scattering, says member {index}.") if status == "ok" else None,
        error=error if status != "ok" else None,
        usage=usage or Usage(input_tokens=10 + index, output_tokens=5 + index),
        latency_ms=100.0 + index,
        finished_at=datetime.now(UTC),
    )


def all_ok() -> dict[int, PanelAnswer]:
    return {index: answer(index) for index in range(len(MEMBERS))}


def member(label: int) -> str:
    """How the result names the answer that the judge saw as "Answer {label}" in request r-1."""
    index = label_answers("r-1", dict.fromkeys(range(len(MEMBERS)), "x"))[label - 1].member_index
    return f"member {index} ({MEMBERS[index]})"


def expected_analysis() -> Analysis:
    return Analysis(
        consensus=[f"{member(1)} and {member(2)} agree on scattering"],
        partial_coverage=[f"only {member(2)} mentions wavelength"],
        blind_spots=["sunsets"],
    )


async def test_all_ok_is_complete_with_the_judges_answer_and_analysis() -> None:
    model = FakeJudgeModel()
    released_at = datetime.now(UTC)
    result = await Judge(model).fuse(plan(), all_ok(), "all", released_at)

    assert result.request_id == "r-1"
    assert result.status == "complete"
    assert result.release == "all"
    assert result.answer == "The sky is blue because of Rayleigh scattering."
    assert result.answer_source == "judge"
    assert result.analysis == expected_analysis()
    assert result.error is None
    assert result.failure_reason is None
    assert result.strategy == "synthesize"
    assert result.answered == 3
    assert [member.status for member in result.members] == ["ok", "ok", "ok"]
    assert [member.model for member in result.members] == MEMBERS
    assert result.judge is not None
    assert result.judge.model == "judge-model"
    assert result.judge.status == "ok"
    assert result.judge.analysis_error is None
    assert result.timings.released_at == released_at
    assert result.timings.total_ms >= 1000  # submitted a second ago
    assert [call.json_schema is not None for call in model.calls] == [True, False]
    assert all(call.spec.model == "judge-model" for call in model.calls)


async def test_judge_prompts_are_anonymised_and_carry_every_usable_answer() -> None:
    model = FakeJudgeModel()
    answers = all_ok()
    await Judge(model).fuse(plan(), answers, "all", datetime.now(UTC))
    for call in model.calls:
        prompt = "\n".join(message.content for message in call.messages)
        for name in MEMBERS:
            assert name not in prompt
        for item in answers.values():
            assert item.text is not None
            assert item.text in prompt
    # the final call sees the analysis the first call produced
    assert "sunsets" in model.calls[1].messages[-1].content


async def test_missing_member_is_a_timeout_and_the_result_partial() -> None:
    answers = all_ok()
    del answers[1]
    result = await Judge(FakeJudgeModel()).fuse(plan(), answers, "deadline", datetime.now(UTC))

    assert result.status == "partial"
    assert result.release == "deadline"
    assert result.answer_source == "judge"
    assert result.answered == 2
    missing = result.members[1]
    assert missing.index == 1
    assert missing.model == "beta-model"
    assert missing.status == "timeout"
    assert missing.text is None
    assert [member.status for member in result.members] == ["ok", "timeout", "ok"]


async def test_final_call_stops_at_the_nonce_and_an_echoed_fence_is_cut() -> None:
    def echo(call: Call) -> str:
        nonce = call.stop[0]
        return f'The sky is blue.\n</answer{nonce}>\n<response{nonce} n="2">leaked draft'

    model = FakeJudgeModel(final=echo)
    result = await Judge(model).fuse(plan(), all_ok(), "all", datetime.now(UTC))
    (stop,) = model.calls[1].stop
    assert re.fullmatch(r"-[0-9a-f]{16}", stop)
    assert list(model.calls[0].stop) == []
    assert result.answer == "The sky is blue."
    assert result.answer_source == "judge"


async def test_the_fence_nonce_is_random_not_derived_from_the_request_id() -> None:
    nonces = set()
    for _ in range(3):
        model = FakeJudgeModel()
        await Judge(model).fuse(plan(), all_ok(), "all", datetime.now(UTC))
        nonces.add(model.calls[1].stop[0])
    assert len(nonces) == 3  # one request id, three fusions, three nonces


async def test_final_answer_that_is_only_an_echoed_fence_falls_back() -> None:
    model = FakeJudgeModel(final=lambda call: f'  <answer{call.stop[0]} n="1">\nsome draft')
    result = await Judge(model).fuse(plan(), all_ok(), "all", datetime.now(UTC))
    assert result.answer_source == "best_member"
    assert result.status == "partial"
    assert result.failure_reason == "judge_empty"
    assert result.judge is not None
    assert result.judge.error == "the judge returned an empty answer"


async def test_long_judge_answer_is_cut_to_the_contract_limit() -> None:
    model = FakeJudgeModel(final="y" * (limits.MAX_ANSWER_CHARS + 50))
    result = await Judge(model).fuse(plan(), all_ok(), "all", datetime.now(UTC))
    assert result.answer == "y" * limits.MAX_ANSWER_CHARS


def test_crashed_result_is_failed_and_keeps_the_panel() -> None:
    answers = all_ok()
    del answers[2]
    released_at = datetime.now(UTC)
    result = crashed_result(plan(), answers, "quorum", released_at, KeyError("x"))
    assert result.status == "failed"
    assert result.error == "internal error in the judge: KeyError"
    assert result.failure_reason == "internal_error"
    assert result.release == "quorum"
    assert [member.status for member in result.members] == ["ok", "ok", "timeout"]
    assert result.answered == 2
    assert result.answer is None
    assert result.timings.released_at == released_at


async def test_member_error_makes_the_result_partial_and_its_text_is_not_used() -> None:
    model = FakeJudgeModel()
    answers = {**all_ok(), 2: answer(2, "error", error="HTTP 500")}
    result = await Judge(model).fuse(plan(), answers, "all", datetime.now(UTC))
    assert result.status == "partial"
    assert result.failure_reason == "some_members_failed"
    assert result.error == "1 of 3 members gave no answer"
    assert result.members[2].error == "HTTP 500"
    assert result.answered == 2
    assert 'n="3"' not in model.calls[0].messages[1].content


async def test_zero_ok_answers_fail_with_every_reason_and_no_judge_call() -> None:
    model = FakeJudgeModel()
    answers = {
        0: answer(0, "error", error="HTTP 503 from provider"),
        2: answer(2, "timeout", error="no answer within the panel deadline"),
    }
    result = await Judge(model).fuse(plan(), answers, "deadline", datetime.now(UTC))

    assert model.calls == []
    assert result.status == "failed"
    assert result.answer is None
    assert result.answer_source is None
    assert result.judge is None
    assert result.answered == 0
    assert result.failure_reason == "all_members_failed"
    assert result.error is not None
    assert "HTTP 503 from provider" in result.error
    assert "no answer within the panel deadline" in result.error
    assert "no answer by the deadline" in result.error  # member 1 never answered
    for index, name in enumerate(MEMBERS):
        assert f"member {index} ({name})" in result.error


async def test_a_panel_of_one_is_its_members_answer_without_a_judge_call() -> None:
    model = FakeJudgeModel()
    one = {0: answer(0, text="Canberra.", usage=Usage(input_tokens=7, output_tokens=3))}
    result = await Judge(model).fuse(plan(MEMBERS[:1]), one, "all", datetime.now(UTC))

    assert model.calls == []
    assert result.status == "complete"
    assert result.answer == "Canberra."
    assert result.answer_source == "member"
    assert result.selected_member == 0
    assert result.judge is None
    assert result.usage.total == Usage(input_tokens=7, output_tokens=3)


async def test_a_panel_of_one_that_fails_is_failed() -> None:
    model = FakeJudgeModel()
    one = {0: answer(0, "error", error="HTTP 500")}
    result = await Judge(model).fuse(plan(MEMBERS[:1]), one, "all", datetime.now(UTC))

    assert model.calls == []
    assert result.status == "failed"
    assert result.answer is None


async def test_ok_answers_with_empty_text_count_as_no_answer() -> None:
    model = FakeJudgeModel()
    blank = PanelAnswer.model_validate({**answer(0).model_dump(), "text": None})
    result = await Judge(model).fuse(plan(members=["alpha-model"]), {0: blank}, "all", datetime.now(UTC))
    assert result.status == "failed"
    assert model.calls == []


async def test_judge_unavailable_on_final_call_falls_back_to_best_member() -> None:
    texts = {
        0: "The sky is blue because of Rayleigh scattering of sunlight.",
        1: "Bananas are yellow.",
        2: "Rayleigh scattering of sunlight makes the sky blue.",
    }
    answers = {index: answer(index, text=text) for index, text in texts.items()}
    model = FakeJudgeModel(final=ModelUnavailable("judge provider unreachable: ConnectError"))
    result = await Judge(model).fuse(plan(), answers, "all", datetime.now(UTC))

    assert result.status == "partial"
    assert result.answer_source == "best_member"
    assert result.answer in {texts[0], texts[2]}
    assert result.judge is not None
    assert result.judge.status == "error"
    assert result.judge.error == "judge provider unreachable: ConnectError"
    assert result.analysis == expected_analysis()  # the analysis call still succeeded
    assert result.failure_reason == "judge_upstream_error"
    assert result.judge.usage == ANALYSIS_USAGE


async def test_judge_empty_final_answer_falls_back_to_best_member() -> None:
    result = await Judge(FakeJudgeModel(final="   ")).fuse(plan(), all_ok(), "all", datetime.now(UTC))
    assert result.answer_source == "best_member"
    assert result.status == "partial"
    assert result.judge is not None
    assert result.judge.status == "error"
    assert result.answer in {item.text for item in all_ok().values()}


async def test_judge_past_deadline_times_out_without_calls_and_falls_back() -> None:
    model = FakeJudgeModel()
    late = plan().model_copy(update={"deadline_at": datetime.now(UTC) - timedelta(seconds=1)})
    result = await Judge(model).fuse(late, all_ok(), "deadline", datetime.now(UTC))
    assert model.calls == []
    assert result.judge is not None
    assert result.judge.status == "timeout"
    assert result.answer_source == "best_member"
    assert result.status == "partial"
    assert result.failure_reason == "judge_deadline"


async def test_analysis_not_json_still_gives_the_judges_answer_but_is_not_complete() -> None:
    model = FakeJudgeModel(analysis="I think they mostly agree, honestly.")
    result = await Judge(model).fuse(plan(), all_ok(), "all", datetime.now(UTC))

    assert result.status == "partial"  # was "complete": an unreadable analysis went unreported
    assert result.failure_reason == "judge_invalid_json"
    assert result.error is not None
    assert "analysis could not be used" in result.error
    assert result.analysis is None
    assert result.judge is not None
    assert result.judge.analysis_error is not None
    assert "no JSON object" in result.judge.analysis_error
    assert result.judge.status == "ok"
    assert result.answer_source == "judge"
    assert result.answer == "The sky is blue because of Rayleigh scattering."
    assert "(none)" in model.calls[1].messages[-1].content
    assert result.judge.usage == ANALYSIS_USAGE + FINAL_USAGE  # the unreadable analysis still cost tokens


async def test_analysis_model_error_is_recorded_and_the_final_call_still_runs() -> None:
    model = FakeJudgeModel(analysis=ModelError("rate limited"))
    result = await Judge(model).fuse(plan(), all_ok(), "all", datetime.now(UTC))
    assert result.judge is not None
    assert result.judge.analysis_error == "rate limited"
    assert result.status == "partial"
    assert result.failure_reason == "judge_upstream_error"
    assert result.answer_source == "judge"
    assert len(model.calls) == 2


async def test_usage_is_summed_exactly_by_model_and_in_total() -> None:
    members = ["alpha-model", "judge-model", "alpha-model"]  # the judge model also sits on the panel
    answers = {
        0: answer(0, usage=Usage(input_tokens=1, output_tokens=2)),
        1: answer(1, usage=Usage(input_tokens=30, output_tokens=40)),
        2: answer(2, usage=Usage(input_tokens=500, output_tokens=600)),
    }
    answers = {index: item.model_copy(update={"model": members[index]}) for index, item in answers.items()}
    result = await Judge(FakeJudgeModel()).fuse(plan(members=members), answers, "all", datetime.now(UTC))

    judge_usage = Usage(input_tokens=100 + 150, output_tokens=20 + 40)
    assert result.judge is not None
    assert result.judge.usage == judge_usage
    assert result.usage.by_model == {
        "alpha-model": Usage(input_tokens=501, output_tokens=602),
        "judge-model": Usage(input_tokens=30 + 250, output_tokens=40 + 60),
    }
    assert result.usage.total == Usage(input_tokens=1 + 30 + 500 + 250, output_tokens=2 + 40 + 600 + 60)


async def test_failed_usage_counts_members_only() -> None:
    answers = {0: answer(0, "error", usage=Usage(input_tokens=7, output_tokens=0))}
    result = await Judge(FakeJudgeModel()).fuse(plan(), answers, "deadline", datetime.now(UTC))
    assert result.status == "failed"
    assert result.usage.total == Usage(input_tokens=7, output_tokens=0)
    assert "judge-model" not in result.usage.by_model


async def test_a_provider_reply_with_malformed_usage_still_ends_in_a_result() -> None:
    # The real adapter behind the judge: the final reply has text but an unusable usage block.
    # The module promises "whatever fails, fuse returns a result"; today fuse raises AttributeError
    # (the judge service then publishes status "failed", dropping a usable answer).
    def respond(request: httpx.Request) -> httpx.Response:
        wants_json = "response_format" in json.loads(request.content)
        content = json.dumps(ANALYSIS) if wants_json else "Rayleigh scattering."
        usage: object = {"prompt_tokens": 3, "completion_tokens": 4} if wants_json else "n/a"
        message = {"role": "assistant", "content": content}
        return httpx.Response(200, json={"choices": [{"message": message}], "usage": usage})

    catalog = Catalog.model_validate(
        {
            "default_preset": "p",
            "providers": {"prov": {"api": "openai", "base_url": "http://prov.test/v1"}},
            "models": {"judge-model": {"provider": "prov", "id": "judge-upstream"}},
            "presets": {"p": {"panel": [{"model": "judge-model"}], "judge": {"model": "judge-model"}}},
        }
    )
    router = ModelRouter(catalog, transport=httpx.MockTransport(respond))
    try:
        result = await Judge(router).fuse(plan(), all_ok(), "all", datetime.now(UTC))
    finally:
        await router.aclose()
    assert result.answer is not None
    assert result.status in {"complete", "partial"}


async def test_when_both_calls_fail_the_judge_shows_the_last_call_and_the_result_the_first_problem() -> None:
    model = FakeJudgeModel(analysis=ModelError("analysis refused"), final=ModelUnavailable("judge gone"))
    result = await Judge(model).fuse(plan(), all_ok(), "all", datetime.now(UTC))
    assert result.judge is not None
    assert (result.judge.status, result.judge.error) == ("error", "judge gone")
    assert result.judge.analysis_error == "analysis refused"
    assert (result.status, result.failure_reason) == ("partial", "judge_upstream_error")
    assert result.error == "the judge's analysis could not be used: analysis refused"
    assert result.answer_source == "best_member"
