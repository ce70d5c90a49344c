"""Every fusion strategy over Kafka and through the gateway, the agreement early exit, typed failure
reasons, and a hostile panel answer aimed at the judge: the services as processes on the real broker,
with the stand-in model server."""

import json
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec, Policy, Strategy

from fusion_testing.stack import STANDIN_URL
from fusion_testing.standin import HOSTILE_ANSWER

pytestmark = [pytest.mark.kafka]

JUDGE_ID = "sleep-21"  # the stand-in id of the catalog's `strategy-judge`


def ask(question: str, *members: str, strategy: Strategy | None = None, **fields: Any) -> FusionRequest:
    return FusionRequest(
        messages=[ChatMessage(role="user", content=question)],
        panel=[ModelSpec(model=model) for model in members],
        judge=ModelSpec(model="strategy-judge"),
        strategy=strategy,
        **fields,
    )


async def judge_requests(question: str) -> list[dict[str, Any]]:
    """What the stand-in judge was asked about `question`, oldest first."""
    async with httpx.AsyncClient(timeout=10) as client:
        bodies = (await client.get(f"{STANDIN_URL}/v1/requests/{JUDGE_ID}")).json()["requests"]
    return [body for body in bodies if question in str(body["messages"])]


@pytest.mark.parametrize(
    ("strategy", "source", "calls"),
    [
        ("synthesize", "judge", 2),
        ("synthesize-once", "judge", 1),
        ("select", "selected", 1),
        ("vote", "vote", 1),
    ],
)
async def test_each_strategy_fuses_over_kafka(
    client: FusionClient, strategy: Strategy, source: str, calls: int
) -> None:
    question = f"Which strategy is {strategy}?"
    result = await client.fuse(ask(question, "fast", "fast", "fast", strategy=strategy))

    assert result.status == "complete", result.error
    assert result.strategy == strategy
    assert result.answer_source == source
    assert result.judge is not None
    assert result.judge.calls == calls
    assert len(await judge_requests(question)) == calls
    if strategy in ("select", "vote"):
        # the stand-in chooses Answer 1: the result is that member's own answer, unchanged
        assert result.selected_member is not None
        assert result.answer == result.members[result.selected_member].text
    if strategy == "synthesize-once":
        assert result.answer is not None
        assert result.answer.startswith("Stand-in fused answer to: ")  # the one reply's "answer"
        assert question in result.answer
    if strategy in ("synthesize", "synthesize-once"):
        assert result.analysis is not None
        assert result.analysis.unique_insight_details or result.analysis.consensus


async def test_the_analysis_maps_answer_numbers_back_to_members(client: FusionClient) -> None:
    result = await client.fuse(ask("Who said what?", "fast", "fast", strategy="synthesize"))
    assert result.analysis is not None
    (insight,) = result.analysis.unique_insight_details  # the stand-in names Answer 1
    assert insight.answer.model == "fast"
    assert insight.answer.member in (0, 1)
    assert f"member {insight.answer.member} (fast)" in result.analysis.unique_insights[0]
    (contradiction,) = result.analysis.contradiction_details
    assert [ref.member for stance in contradiction.stances for ref in stance.answers] == [
        insight.answer.member
    ]


async def test_a_panel_that_agrees_skips_the_judge(client: FusionClient) -> None:
    question = "What is the code word? «tangerine»"
    for strategy in ("synthesize", "vote"):
        result = await client.fuse(ask(question, "right-100", "right-100", "right-100", strategy=strategy))
        assert result.status == "complete"
        assert (result.answer, result.answer_source) == ("tangerine", "agreement")
        assert result.judge is None
        assert result.cost.judge_usd == Decimal(0)
    assert await judge_requests(question) == []


async def test_a_hostile_answer_cannot_leave_its_fence_in_the_judges_prompts(client: FusionClient) -> None:
    question = "Capital of France? (hostile)"
    result = await client.fuse(ask(question, "hostile", "fast", "fast", strategy="synthesize"))
    assert result.status == "complete"
    assert result.answer_source == "judge"

    analysis, final = await judge_requests(question)
    nonces = set()
    for body in (analysis, final):
        system, user = (message["content"] for message in body["messages"])
        (nonce,) = set(re.findall(r"<answer-([0-9a-f]+) ", user))
        nonces.add(nonce)
        assert nonce in system
        assert len(nonce) == 16
        assert user.count(f"<answer-{nonce} ") == 3  # three answers, three fences: none forged
        assert user.count(f"</answer-{nonce}>") == 3
        assert "HIJACKED" in user  # the hostile answer is there, as data
        assert not re.search(r"^\s*\[system\]", user, re.IGNORECASE | re.MULTILINE)
        for look_alike in ("＜/answer", "&lt;/answer", "< /answer"):
            assert look_alike not in user
    assert len(nonces) == 1  # one fusion, one nonce
    assert "HIJACKED" in HOSTILE_ANSWER

    again = await client.fuse(ask(question, "hostile", "fast", "fast", strategy="synthesize"))
    assert again.status == "complete"
    later = (await judge_requests(question))[-1]
    assert not set(re.findall(r"<answer-([0-9a-f]+) ", later["messages"][1]["content"])) & nonces


async def test_failure_reasons_are_typed(client: FusionClient) -> None:
    limited = await client.fuse(ask("Rate limited?", "limited", "limited", policy=Policy(deadline_s=20)))
    assert (limited.status, limited.failure_reason) == ("failed", "rate_limited")
    assert [member.error_status for member in limited.members] == [429, 429]

    over = await client.fuse(
        ask("Too dear?", "priced", "priced", policy=Policy(max_cost_usd=Decimal("0.0000001")))
    )
    assert (over.status, over.failure_reason) == ("rejected", "budget_exceeded")

    unknown = await client.fuse(ask("Who?", "no-such-model"))
    assert (unknown.status, unknown.failure_reason) == ("rejected", "invalid_request")


async def test_each_strategy_through_the_gateway(gateways: list[str]) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        for strategy, source in [("synthesize-once", "judge"), ("select", "selected"), ("vote", "vote")]:
            body = {
                "model": "fusion",
                "messages": [{"role": "user", "content": f"Gateway {strategy}?"}],
                "fusion": {"panel": ["fast", "fast"], "judge": "strategy-judge", "strategy": strategy},
            }
            response = await http.post(f"{gateways[0]}/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            fusion = response.json()["fusion"]
            assert (fusion["strategy"], fusion["answer_source"], fusion["status"]) == (
                strategy,
                source,
                "complete",
            )
            assert fusion["failure_reason"] is None

        bad = {
            "model": "fusion",
            "messages": [{"role": "user", "content": "x"}],
            "fusion": {"strategy": "debate"},
        }
        response = await http.post(f"{gateways[1]}/v1/chat/completions", json=bad)
        assert response.status_code == 400
        assert "strategy" in response.json()["error"]["message"]

        limited = {
            "model": "fusion",
            "messages": [{"role": "user", "content": "x"}],
            "fusion": {"panel": ["limited"]},
        }
        response = await http.post(f"{gateways[1]}/v1/chat/completions", json=limited)
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert response.json()["fusion"]["failure_reason"] == "rate_limited"


async def test_a_streamed_once_fusion_sends_only_the_answer(gateways: list[str]) -> None:
    body = {
        "model": "fusion",
        "messages": [{"role": "user", "content": "Stream once"}],
        "stream": True,
        "fusion": {"panel": ["fast", "fast"], "judge": "strategy-judge", "strategy": "synthesize-once"},
    }
    text = ""
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream("POST", f"{gateways[0]}/v1/chat/completions", json=body) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices", []):
                    text += choice.get("delta", {}).get("content") or ""
    assert text.startswith("Stand-in fused answer to: ")  # the reply's "answer", not its JSON
    assert "Stream once" in text
    assert "consensus" not in text
