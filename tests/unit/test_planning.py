"""fusion.dispatcher.planning.plan_request: from a request to a plan and its tasks."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fusion.catalog import Catalog
from fusion.dispatcher.planning import Dispatch, Rejection, plan_request, rejected_result
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec, Policy, ReplyTo

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MESSAGES = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Why blue?")]


def catalog() -> Catalog:
    return Catalog.model_validate(
        {
            "default_preset": "trio",
            "providers": {"prov": {"api": "openai", "base_url": "http://prov.test/v1"}},
            "models": {name: {"provider": "prov", "id": f"up-{name}"} for name in ("a", "b", "c", "j", "k")},
            "presets": {
                "trio": {
                    "panel": [{"model": "a", "temperature": 0.1}, {"model": "b"}, {"model": "c"}],
                    "judge": {"model": "j", "temperature": 0.2},
                },
                "duo": {"panel": [{"model": "a"}, {"model": "b"}], "judge": {"model": "k"}, "quorum": 1},
                "greedy": {"panel": [{"model": "a"}, {"model": "b"}], "judge": {"model": "j"}, "quorum": 3},
            },
        }
    )


def request(**fields: Any) -> FusionRequest:
    fields.setdefault("request_id", "req-1")
    fields.setdefault("messages", MESSAGES)
    fields.setdefault("submitted_at", NOW)
    return FusionRequest(**fields)


def dispatched(outcome: Dispatch | Rejection) -> Dispatch:
    assert isinstance(outcome, Dispatch), outcome
    return outcome


def rejected(outcome: Dispatch | Rejection) -> Rejection:
    assert isinstance(outcome, Rejection), outcome
    return outcome


def test_default_preset_when_neither_preset_nor_panel() -> None:
    plan = dispatched(plan_request(request(), catalog(), NOW)).plan
    assert [spec.model for spec in plan.members] == ["a", "b", "c"]
    assert plan.members[0].temperature == 0.1
    assert plan.judge == ModelSpec(model="j", temperature=0.2)
    assert plan.quorum == 3


def test_named_preset_with_its_judge_and_quorum() -> None:
    plan = dispatched(plan_request(request(preset="duo"), catalog(), NOW)).plan
    assert [spec.model for spec in plan.members] == ["a", "b"]
    assert plan.judge.model == "k"
    assert plan.quorum == 1


def test_explicit_panel_takes_the_judge_of_the_default_preset() -> None:
    panel = [ModelSpec(model="c", seed=3), ModelSpec(model="a")]
    plan = dispatched(plan_request(request(panel=panel), catalog(), NOW)).plan
    assert plan.members == panel
    assert plan.judge == ModelSpec(model="j", temperature=0.2)
    assert plan.quorum == 2


def test_request_judge_overrides_the_preset_judge() -> None:
    judge = ModelSpec(model="k", temperature=0.0, system_prompt="You judge.")
    duo_with_j = request(preset="duo", judge=ModelSpec(model="j"))
    assert dispatched(plan_request(duo_with_j, catalog(), NOW)).plan.judge == ModelSpec(model="j")
    assert dispatched(plan_request(request(judge=judge), catalog(), NOW)).plan.judge == judge
    panel = [ModelSpec(model="a")]
    assert dispatched(plan_request(request(panel=panel, judge=judge), catalog(), NOW)).plan.judge == judge


def test_unknown_preset_is_a_rejection_listing_presets() -> None:
    error = rejected(plan_request(request(preset="nope"), catalog(), NOW)).error
    assert "unknown preset 'nope'" in error
    assert "duo, greedy, trio" in error


@pytest.mark.parametrize(
    "fields",
    [
        {"panel": [ModelSpec(model="a"), ModelSpec(model="ghost")]},
        {"judge": ModelSpec(model="ghost")},
        {"preset": "duo", "judge": ModelSpec(model="ghost")},
    ],
)
def test_unknown_model_is_a_rejection(fields: dict[str, Any]) -> None:
    error = rejected(plan_request(request(**fields), catalog(), NOW)).error
    assert "unknown model 'ghost'" in error


def test_quorum_defaults_to_the_panel_size() -> None:
    panel = [ModelSpec(model="a"), ModelSpec(model="b"), ModelSpec(model="a"), ModelSpec(model="c")]
    assert dispatched(plan_request(request(panel=panel), catalog(), NOW)).plan.quorum == 4


def test_request_quorum_overrides_the_preset_quorum() -> None:
    outcome = plan_request(request(preset="duo", policy=Policy(quorum=2)), catalog(), NOW)
    assert dispatched(outcome).plan.quorum == 2


def test_request_quorum_larger_than_the_preset_panel_is_a_rejection() -> None:
    error = rejected(plan_request(request(preset="duo", policy=Policy(quorum=3)), catalog(), NOW)).error
    assert error == "quorum 3 is larger than the panel of 2"


def test_preset_quorum_larger_than_its_panel_is_a_rejection() -> None:
    error = rejected(plan_request(request(preset="greedy"), catalog(), NOW)).error
    assert "quorum 3 is larger than the panel of 2" in error


def test_deadlines_run_from_submission() -> None:
    submitted = NOW - timedelta(seconds=10)
    policy = Policy(deadline_s=100.0, judge_share=0.3, grace_s=1.5)
    now = NOW
    plan = dispatched(plan_request(request(submitted_at=submitted, policy=policy), catalog(), now)).plan
    assert plan.deadline_at == submitted + timedelta(seconds=100)
    assert plan.panel_deadline_at == submitted + timedelta(seconds=70)
    assert plan.submitted_at == submitted
    assert plan.dispatched_at == now
    assert plan.grace_s == 1.5


def test_client_clock_ahead_does_not_extend_the_deadline() -> None:
    ahead = NOW + timedelta(hours=1)
    policy = Policy(deadline_s=60.0, judge_share=0.5)
    plan = dispatched(plan_request(request(submitted_at=ahead, policy=policy), catalog(), NOW)).plan
    assert plan.deadline_at == NOW + timedelta(seconds=60)
    assert plan.panel_deadline_at == NOW + timedelta(seconds=30)
    assert plan.submitted_at == ahead  # reported as given


def test_panel_deadline_already_passed_is_a_rejection() -> None:
    policy = Policy(deadline_s=10.0, judge_share=0.5)
    old = request(submitted_at=NOW - timedelta(seconds=5), policy=policy)  # panel deadline is exactly now
    assert "waited past its panel deadline" in rejected(plan_request(old, catalog(), NOW)).error
    older = request(submitted_at=NOW - timedelta(seconds=60), policy=policy)
    assert "waited past its panel deadline" in rejected(plan_request(older, catalog(), NOW)).error
    fresh = request(submitted_at=NOW - timedelta(seconds=4.9), policy=policy)
    assert isinstance(plan_request(fresh, catalog(), NOW), Dispatch)


def test_one_task_per_member_with_the_panel_deadline() -> None:
    reply_to = ReplyTo(topic="custom.replies")
    outcome = dispatched(plan_request(request(preset="trio", reply_to=reply_to), catalog(), NOW))
    plan, tasks = outcome.plan, outcome.tasks
    assert [task.member_index for task in tasks] == [0, 1, 2]
    assert [task.member for task in tasks] == plan.members
    for task in tasks:
        assert task.request_id == "req-1"
        assert task.deadline_at == plan.panel_deadline_at
        assert task.messages == MESSAGES
        assert task.dispatched_at == NOW
    assert plan.request_id == "req-1"
    assert plan.messages == MESSAGES
    assert plan.reply_to == reply_to


def test_naive_submitted_at_is_planned_not_a_crash() -> None:
    # A client may send "submitted_at": "2030-01-01T12:00:00" (no offset): the contract accepts it,
    # so planning must give a plan or a rejection, not raise TypeError (naive vs aware comparison).
    naive = FusionRequest.model_validate_json(
        '{"request_id": "r-naive", "messages": [{"role": "user", "content": "hi"}],'
        ' "submitted_at": "2030-01-01T12:00:00"}'
    )
    outcome = plan_request(naive, catalog(), NOW)
    assert isinstance(outcome, Dispatch | Rejection)


def test_rejected_result_reports_the_error_and_timings() -> None:
    result = rejected_result("req-1", NOW - timedelta(seconds=2), "unknown preset", NOW)
    assert result.status == "rejected"
    assert result.error == "unknown preset"
    assert result.request_id == "req-1"
    assert result.timings.total_ms == 2000.0
    assert result.answer is None
    assert result.members == []
    assert rejected_result("r", NOW + timedelta(seconds=5), "e", NOW).timings.total_ms == 0.0


def test_the_strategy_is_the_requests_else_the_presets_else_synthesize() -> None:
    with_strategy = catalog().model_copy(
        update={
            "presets": {
                **catalog().presets,
                "duo": catalog().presets["duo"].model_copy(update={"strategy": "vote"}),
            }
        }
    )
    assert dispatched(plan_request(request(), with_strategy, NOW)).plan.strategy == "synthesize"
    assert dispatched(plan_request(request(preset="duo"), with_strategy, NOW)).plan.strategy == "vote"
    chosen = request(preset="duo", strategy="select", analysis_temperature=0.5)
    plan = dispatched(plan_request(chosen, with_strategy, NOW)).plan
    assert (plan.strategy, plan.analysis_temperature) == ("select", 0.5)
    assert dispatched(plan_request(request(), catalog(), NOW)).plan.analysis_temperature == 0.0


def test_rejections_carry_a_typed_reason() -> None:
    assert rejected(plan_request(request(preset="nope"), catalog(), NOW)).reason == "invalid_request"
    late = request(submitted_at=NOW - timedelta(hours=1))
    assert rejected(plan_request(late, catalog(), NOW)).reason == "deadline"


def test_a_rejected_result_keeps_its_reason() -> None:
    result = rejected_result("req-1", NOW, "over budget", NOW, "budget_exceeded")
    assert (result.status, result.failure_reason) == ("rejected", "budget_exceeded")
