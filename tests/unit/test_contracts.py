"""The message contracts: validation limits, JSON round trips, the answers topic's union."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fusion.kafka.codec import decode
from fusion_contracts import (
    Analysis,
    AnswerRef,
    AnswersMessage,
    ChatMessage,
    Contradiction,
    Coverage,
    FusedResult,
    FusionRequest,
    Insight,
    ModelSpec,
    PanelAnswer,
    PanelPlan,
    Policy,
    ReplyTo,
    Stance,
    Usage,
    limits,
)
from pydantic import TypeAdapter, ValidationError

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

_ANSWERS: TypeAdapter[PanelPlan | PanelAnswer] = TypeAdapter(AnswersMessage)


def request_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": "r-1",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
    }
    data.update(overrides)
    return data


def specs(count: int) -> list[dict[str, Any]]:
    return [{"model": f"m{index}"} for index in range(count)]


def test_minimal_request_is_valid_with_defaults() -> None:
    request = FusionRequest.model_validate(request_data())
    assert request.schema_version == 1
    assert request.preset is None
    assert request.panel is None
    assert request.policy == Policy()
    assert request.policy.deadline_s == limits.DEFAULT_DEADLINE_S
    assert request.submitted_at.tzinfo is not None


def test_request_id_defaults_to_a_fresh_id() -> None:
    data = request_data()
    del data["request_id"]
    first, second = FusionRequest.model_validate(data), FusionRequest.model_validate(data)
    assert first.request_id
    assert first.request_id != second.request_id


def test_empty_messages_rejected() -> None:
    with pytest.raises(ValidationError, match="messages"):
        FusionRequest.model_validate(request_data(messages=[]))


@pytest.mark.parametrize("content", ["", "   ", "\n\t"])
def test_blank_content_rejected(content: str) -> None:
    with pytest.raises(ValidationError, match="must not be empty"):
        FusionRequest.model_validate(request_data(messages=[{"role": "user", "content": content}]))


def test_request_without_a_user_message_rejected() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(ValidationError, match="at least one user message"):
        FusionRequest.model_validate(request_data(messages=messages))


def test_eight_panel_members_accepted_nine_rejected() -> None:
    assert len(FusionRequest.model_validate(request_data(panel=specs(8))).panel or []) == 8
    with pytest.raises(ValidationError, match="panel"):
        FusionRequest.model_validate(request_data(panel=specs(limits.MAX_PANEL_MEMBERS + 1)))


def test_empty_panel_rejected() -> None:
    with pytest.raises(ValidationError, match="panel"):
        FusionRequest.model_validate(request_data(panel=[]))


def test_quorum_larger_than_explicit_panel_rejected() -> None:
    with pytest.raises(ValidationError, match="quorum 3 is larger than the panel of 2"):
        FusionRequest.model_validate(request_data(panel=specs(2), policy={"quorum": 3}))


def test_quorum_equal_to_explicit_panel_accepted() -> None:
    request = FusionRequest.model_validate(request_data(panel=specs(2), policy={"quorum": 2}))
    assert request.policy.quorum == 2


def test_quorum_without_panel_is_checked_later_against_the_preset() -> None:
    request = FusionRequest.model_validate(request_data(policy={"quorum": 8}))
    assert request.policy.quorum == 8


def test_preset_and_panel_together_rejected() -> None:
    with pytest.raises(ValidationError, match="not both"):
        FusionRequest.model_validate(request_data(preset="local", panel=specs(1)))


@pytest.mark.parametrize("deadline_s", [0.0, -1.0, limits.MAX_DEADLINE_S + 0.001, 10_000.0])
def test_deadline_out_of_range_rejected(deadline_s: float) -> None:
    with pytest.raises(ValidationError, match="deadline_s"):
        FusionRequest.model_validate(request_data(policy={"deadline_s": deadline_s}))


@pytest.mark.parametrize("deadline_s", [0.001, limits.MAX_DEADLINE_S])
def test_deadline_bounds_accepted(deadline_s: float) -> None:
    request = FusionRequest.model_validate(request_data(policy={"deadline_s": deadline_s}))
    assert request.policy.deadline_s == deadline_s


def test_prompt_at_the_limit_accepted_over_it_rejected() -> None:
    half = limits.MAX_PROMPT_CHARS // 2
    at_limit = [{"role": "system", "content": "s" * half}, {"role": "user", "content": "u" * half}]
    assert FusionRequest.model_validate(request_data(messages=at_limit))
    over = [{"role": "system", "content": "s" * half}, {"role": "user", "content": "u" * (half + 1)}]
    with pytest.raises(ValidationError, match=f"the limit is {limits.MAX_PROMPT_CHARS}"):
        FusionRequest.model_validate(request_data(messages=over))


def test_unknown_field_rejected() -> None:
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        FusionRequest.model_validate(request_data(temperature=0.5))


def test_unknown_nested_field_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        FusionRequest.model_validate(request_data(policy={"deadline_s": 10, "deadlne": 5}))


@pytest.mark.parametrize("version", [0, 2, "1x"])
def test_wrong_schema_version_rejected(version: object) -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        FusionRequest.model_validate(request_data(schema_version=version))


@pytest.mark.parametrize("request_id", ["", "-starts-with-dash", "has space", "a/b", "x" * 129])
def test_bad_request_id_rejected(request_id: str) -> None:
    with pytest.raises(ValidationError, match="request_id"):
        FusionRequest.model_validate(request_data(request_id=request_id))


def test_request_is_immutable() -> None:
    request = FusionRequest.model_validate(request_data())
    with pytest.raises(ValidationError, match="frozen"):
        request.preset = "local"  # type: ignore[misc]


def test_valid_request_round_trips_through_json() -> None:
    request = FusionRequest(
        request_id="req-42",
        messages=[
            ChatMessage(role="system", content="Answer briefly."),
            ChatMessage(role="user", content="Why is the sky blue?", name="ann"),
        ],
        panel=[ModelSpec(model="a", temperature=0.3, max_tokens=100, seed=1), ModelSpec(model="b")],
        judge=ModelSpec(model="j", system_prompt="You judge."),
        policy=Policy(quorum=1, grace_s=0.5, deadline_s=30.0, judge_share=0.4),
        reply_to=ReplyTo(topic="custom.replies", partition=2),
        submitted_at=NOW,
        metadata={"user": "ann"},
    )
    decoded = FusionRequest.model_validate_json(request.model_dump_json())
    assert decoded == request
    assert decoded.reply_to is not None
    assert decoded.reply_to.topic == "custom.replies"
    assert decoded.submitted_at == NOW


def test_reply_to_topic_must_be_a_kafka_name() -> None:
    with pytest.raises(ValidationError, match="reply_to"):
        FusionRequest.model_validate(request_data(reply_to={"topic": "bad topic!"}))


def test_usage_adds_and_totals() -> None:
    total = Usage(input_tokens=3, output_tokens=4) + Usage(input_tokens=10, output_tokens=20)
    assert total == Usage(input_tokens=13, output_tokens=24)
    assert total.total_tokens == 37


def plan_dict() -> dict[str, Any]:
    return {
        "kind": "plan",
        "request_id": "r-1",
        "messages": [{"role": "user", "content": "hi"}],
        "members": [{"model": "a"}, {"model": "b"}],
        "judge": {"model": "j"},
        "quorum": 2,
        "grace_s": 1.0,
        "panel_deadline_at": NOW.isoformat(),
        "deadline_at": NOW.isoformat(),
        "submitted_at": NOW.isoformat(),
        "dispatched_at": NOW.isoformat(),
    }


def answer_dict() -> dict[str, Any]:
    return {
        "kind": "answer",
        "request_id": "r-1",
        "member_index": 1,
        "model": "b",
        "status": "ok",
        "text": "blue because of Rayleigh scattering",
        "latency_ms": 12.5,
        "finished_at": NOW.isoformat(),
    }


def test_answers_union_decodes_a_plan_by_kind() -> None:
    decoded = _ANSWERS.validate_python(plan_dict())
    assert isinstance(decoded, PanelPlan)
    assert [member.model for member in decoded.members] == ["a", "b"]


def test_answers_union_decodes_an_answer_by_kind() -> None:
    decoded = _ANSWERS.validate_python(answer_dict())
    assert isinstance(decoded, PanelAnswer)
    assert decoded.member_index == 1
    assert decoded.usage == Usage()


def test_answers_union_round_trips_both_kinds_through_json() -> None:
    plan = PanelPlan.model_validate(plan_dict())
    answer = PanelAnswer.model_validate(answer_dict())
    assert _ANSWERS.validate_json(plan.model_dump_json()) == plan
    assert _ANSWERS.validate_json(answer.model_dump_json()) == answer


def test_answers_union_rejects_unknown_or_missing_kind() -> None:
    with pytest.raises(ValidationError, match=r"union_tag_invalid|does not match any of the expected tags"):
        _ANSWERS.validate_python({**answer_dict(), "kind": "vote"})
    without_kind = answer_dict()
    del without_kind["kind"]
    with pytest.raises(ValidationError, match=r"union_tag_not_found|Unable to extract tag"):
        _ANSWERS.validate_python(without_kind)


def test_answer_fields_of_a_plan_do_not_pass_as_a_plan() -> None:
    with pytest.raises(ValidationError):
        _ANSWERS.validate_python({**answer_dict(), "kind": "plan"})


def test_panel_member_index_bounded_by_max_panel() -> None:
    with pytest.raises(ValidationError, match="member_index"):
        PanelAnswer.model_validate({**answer_dict(), "member_index": limits.MAX_PANEL_MEMBERS})


# --- strategies, failure reasons and the analysis's details (schema 1, a minor addition) -----------

OLD_RESULT = {
    "kind": "result",
    "schema_version": 1,
    "request_id": "r-old",
    "status": "complete",
    "release": "all",
    "answer": "Paris.",
    "answer_source": "judge",
    "analysis": {
        "consensus": ["Answer 1 and Answer 2 agree"],
        "contradictions": ["Answer 3 says Lyon"],
        "partial_coverage": [],
        "unique_insights": [],
        "blind_spots": [],
    },
    "timings": {
        "submitted_at": "2026-11-01T00:00:00Z",
        "completed_at": "2026-11-01T00:00:05Z",
        "total_ms": 5000,
    },
}


def test_a_result_from_a_judge_older_than_strategies_still_reads() -> None:
    result = decode(TypeAdapter(FusedResult), json.dumps(OLD_RESULT).encode())
    assert result.strategy is None
    assert result.failure_reason is None
    assert result.selected_member is None
    assert result.analysis is not None
    assert result.analysis.contradictions == ["Answer 3 says Lyon"]
    assert result.analysis.contradiction_details == []


def test_a_plan_without_a_strategy_is_synthesized_at_temperature_zero() -> None:
    plan = PanelPlan.model_validate(
        {
            "request_id": "r",
            "messages": [{"role": "user", "content": "hi"}],
            "members": [{"model": "a"}],
            "judge": {"model": "j"},
            "quorum": 1,
            "grace_s": 0,
            "panel_deadline_at": "2026-11-01T00:00:10Z",
            "deadline_at": "2026-11-01T00:00:20Z",
            "submitted_at": "2026-11-01T00:00:00Z",
            "dispatched_at": "2026-11-01T00:00:00Z",
        }
    )
    assert (plan.strategy, plan.analysis_temperature) == ("synthesize", 0.0)


def test_an_analysis_with_details_round_trips() -> None:
    alpha = AnswerRef(member=0, model="alpha")
    analysis = Analysis(
        contradictions=["capital: Paris (member 0 (alpha))"],
        contradiction_details=[
            Contradiction(topic="capital", stances=[Stance(stance="Paris", answers=[alpha])])
        ],
        partial_coverage_details=[Coverage(point="history", answers=[alpha])],
        unique_insight_details=[Insight(insight="the Seine", answer=alpha)],
    )
    assert Analysis.model_validate_json(analysis.model_dump_json()) == analysis


@pytest.mark.parametrize("strategy", ["synthesize", "synthesize-once", "select", "vote"])
def test_every_strategy_is_a_valid_request(strategy: str) -> None:
    assert FusionRequest.model_validate({**request_data(), "strategy": strategy}).strategy == strategy


def test_an_unknown_strategy_or_failure_reason_is_refused() -> None:
    with pytest.raises(ValidationError):
        FusionRequest.model_validate({**request_data(), "strategy": "debate"})
    with pytest.raises(ValidationError):
        FusedResult.model_validate({**OLD_RESULT, "failure_reason": "bad_luck"})


def test_dollar_amounts_are_plain_decimals_in_json() -> None:
    """Python writes Decimal("1E-7") as "1E-7", which not every reader parses as an amount."""
    from decimal import Decimal

    from fusion_contracts import CostSummary

    summary = CostSummary(total_usd=Decimal("1E-7"), by_model={"m": Decimal("0.00000012")})
    assert json.loads(summary.model_dump_json()) == {
        "members_usd": "0",
        "judge_usd": "0",
        "total_usd": "0.0000001",
        "by_model": {"m": "0.00000012"},
    }
    assert CostSummary.model_validate_json(summary.model_dump_json()) == summary
