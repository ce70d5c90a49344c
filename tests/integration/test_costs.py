"""Costs, budgets and keys through the real services (stand-in models with catalog prices)."""

from decimal import Decimal

import httpx
import pytest
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec, Policy

pytestmark = [pytest.mark.kafka]

# The stand-in reports 12 input and 9 output tokens for every call.
PRICED_CALL = (Decimal("3.5") * 12 + Decimal("17.25") * 9) / Decimal(1_000_000)
BILLED_CALL = Decimal("0.000123")  # what the stand-in reports in usage.cost for `billed`


def request(*panel: str, judge: str, **policy: object) -> FusionRequest:
    return FusionRequest(
        messages=[ChatMessage(role="user", content="What does it cost?")],
        panel=[ModelSpec(model=model) for model in panel],
        judge=ModelSpec(model=judge),
        policy=Policy.model_validate(policy),
    )


async def test_costs_add_up_exactly_from_prices_and_from_provider_reports(client: FusionClient) -> None:
    result = await client.fuse(request("priced", "priced", "billed", judge="priced"))

    assert result.status == "complete"
    costs = [member.cost_usd for member in result.members]
    assert costs == [PRICED_CALL, PRICED_CALL, BILLED_CALL]
    assert result.judge is not None
    assert result.judge.cost_usd == 2 * PRICED_CALL  # analysis and final answer
    assert result.cost.members_usd == 2 * PRICED_CALL + BILLED_CALL
    assert result.cost.judge_usd == 2 * PRICED_CALL
    assert result.cost.total_usd == 4 * PRICED_CALL + BILLED_CALL
    assert result.cost.total_usd == sum(costs) + result.judge.cost_usd
    assert result.cost.by_model == {"priced": 4 * PRICED_CALL, "billed": BILLED_CALL}
    cost = result.cost
    print(f"\nfused cost: ${cost.total_usd} = members ${cost.members_usd} + judge ${cost.judge_usd}")


async def test_an_over_budget_request_is_rejected_before_any_model_call(
    client: FusionClient, standin: str
) -> None:
    async with httpx.AsyncClient() as http:
        before = (await http.get(f"{standin}/v1/stats")).json()["requests"].get("sleep-10", 0)
        result = await client.fuse(
            request("priced", "priced", judge="priced", max_cost_usd="0.0001"), timeout_s=10
        )
        after = (await http.get(f"{standin}/v1/stats")).json()["requests"].get("sleep-10", 0)

    assert result.status == "rejected"
    assert result.error is not None
    assert "over max_cost_usd $0.0001" in result.error
    assert after == before


async def test_a_budget_that_covers_the_estimate_runs(client: FusionClient) -> None:
    result = await client.fuse(request("priced", judge="priced", max_cost_usd="1"))

    assert result.status == "complete"
    assert result.cost.total_usd < Decimal(1)


async def test_a_model_whose_key_is_not_set_is_rejected_at_dispatch_naming_the_variable(
    client: FusionClient,
) -> None:
    result = await client.fuse(request("fast", "needs-key", judge="fast"), timeout_s=10)

    assert result.status == "rejected"
    assert result.error is not None
    assert "FUSION_TEST_KEY_NOBODY_SETS" in result.error
    assert result.members == []
