"""Pricing, estimates, budgets and missing keys at dispatch: pure logic."""

from decimal import Decimal
from pathlib import Path

import pytest
from fusion.catalog import Catalog, load_catalog
from fusion.costs import call_cost, estimate, price, prompt_tokens
from fusion.dispatcher.planning import Dispatch, Rejection, plan_request
from fusion.judge.fusing import cost_summary
from fusion_contracts import ChatMessage, FusionRequest, JudgeOutcome, MemberOutcome, ModelSpec, Policy, Usage
from fusion_contracts.common import utc_now


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "catalog.toml"
    path.write_text(
        """
[providers.paid]
api = "openai"
base_url = "https://paid.test/v1"
key_env = "FUSION_TEST_PAID_KEY"

[providers.free]
api = "openai"
base_url = "https://free.test/v1"

[models.a]
provider = "free"
id = "a"
input_usd_per_mtok = "0.1"
output_usd_per_mtok = "0.3"
max_output_tokens = 500

[models.secret]
provider = "paid"
id = "s"
"""
    )
    return load_catalog(path)


def test_price_is_exact_per_million_tokens(catalog: Catalog) -> None:
    cost = price(catalog.model("a"), Usage(input_tokens=1_234, output_tokens=567))

    assert cost == Decimal("0.0002935")  # (0.1 * 1234 + 0.3 * 567) / 1e6, no float rounding


def test_a_reported_cost_wins_over_the_catalog_price(catalog: Catalog) -> None:
    model = catalog.model("a")

    assert call_cost(model, Usage(input_tokens=10), Decimal("0.5")) == Decimal("0.5")
    assert call_cost(model, Usage(input_tokens=10), None) == Decimal("0.000001")


def test_the_estimate_counts_every_member_and_both_judge_calls(catalog: Catalog) -> None:
    messages = [ChatMessage(role="user", content="x" * 300)]
    prompt = prompt_tokens(messages)
    members = [ModelSpec(model="a"), ModelSpec(model="a", max_tokens=100)]

    estimated = estimate(messages, members, ModelSpec(model="a", max_tokens=200), catalog)

    model = catalog.model("a")
    expected_members = price(model, Usage(input_tokens=prompt, output_tokens=500)) + price(
        model, Usage(input_tokens=prompt, output_tokens=100)
    )
    assert estimated > expected_members
    assert prompt == 108  # 300 characters at 3 per token, plus 8 per message


def test_the_estimate_of_a_panel_of_one_is_its_members_call_alone(catalog: Catalog) -> None:
    messages = [ChatMessage(role="user", content="x" * 300)]
    member = ModelSpec(model="a", max_tokens=100)

    estimated = estimate(messages, [member], ModelSpec(model="a", max_tokens=200), catalog)

    assert estimated == price(
        catalog.model("a"), Usage(input_tokens=prompt_tokens(messages), output_tokens=100)
    )


def request(catalog: Catalog, **policy: object) -> FusionRequest:
    return FusionRequest(
        messages=[ChatMessage(role="user", content="hello")],
        panel=[ModelSpec(model="a"), ModelSpec(model="a")],
        judge=ModelSpec(model="a"),
        policy=Policy.model_validate(policy),
    )


def test_a_request_over_budget_is_rejected_with_its_estimate(catalog: Catalog) -> None:
    outcome = plan_request(request(catalog, max_cost_usd="0.00001"), catalog, utc_now())

    assert isinstance(outcome, Rejection)
    assert "over max_cost_usd $0.00001" in outcome.error
    assert "estimated cost $" in outcome.error


def test_a_request_within_budget_is_dispatched(catalog: Catalog) -> None:
    outcome = plan_request(request(catalog, max_cost_usd="1"), catalog, utc_now())

    assert isinstance(outcome, Dispatch)


def test_a_model_whose_key_is_missing_is_rejected_naming_the_variable(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUSION_TEST_PAID_KEY", raising=False)
    missing = FusionRequest(
        messages=[ChatMessage(role="user", content="hello")],
        panel=[ModelSpec(model="a"), ModelSpec(model="secret")],
        judge=ModelSpec(model="a"),
    )

    outcome = plan_request(missing, catalog, utc_now())
    monkeypatch.setenv("FUSION_TEST_PAID_KEY", "k")
    present = plan_request(missing, catalog, utc_now())

    assert isinstance(outcome, Rejection)
    assert "set FUSION_TEST_PAID_KEY" in outcome.error
    assert isinstance(present, Dispatch)


def test_the_cost_summary_adds_up_to_the_last_digit() -> None:
    members = [
        MemberOutcome(index=0, model="a", status="ok", cost_usd=Decimal("0.1")),
        MemberOutcome(index=1, model="a", status="ok", cost_usd=Decimal("0.2")),
        MemberOutcome(index=2, model="b", status="error", cost_usd=Decimal("0.0000001")),
    ]
    judge = JudgeOutcome(model="b", status="ok", cost_usd=Decimal("0.3"))

    summary = cost_summary(members, judge)

    assert summary.total_usd == Decimal("0.6000001")  # 0.1 + 0.2 is exactly 0.3 here, unlike floats
    assert summary.members_usd + summary.judge_usd == summary.total_usd
    assert summary.by_model == {"a": Decimal("0.3"), "b": Decimal("0.3000001")}
