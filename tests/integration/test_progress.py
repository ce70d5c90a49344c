"""Live progress over Kafka: the judge tells a request that asks what its panel and the judge are
doing, on its reply topic ahead of the result; the gateway streams it. Services as processes on the
real broker, stand-in models."""

import json
from typing import Any

import httpx
import pytest
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec

pytestmark = [pytest.mark.kafka]


async def test_a_chat_stream_that_asks_gets_each_member_and_the_analysis(gateways: list[str]) -> None:
    body = {
        "model": "fusion",
        "messages": [{"role": "user", "content": "Progress, please"}],
        "stream": True,
        "fusion": {"panel": ["fast", "slow", "broken"], "judge": "fast", "progress": True},
    }
    events: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream("POST", f"{gateways[0]}/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line.removeprefix("data: ")))

    told = [e["fusion_progress"] for e in events if "fusion_progress" in e]
    kinds = [(t["type"].removeprefix("response.fusion_call."), t.get("member_index")) for t in told]
    assert kinds[:3] == [("panel.added", 0), ("panel.added", 1), ("panel.added", 2)]
    answered = {index: kind for kind, index in kinds[3:6]}
    assert answered == {0: "panel.completed", 1: "panel.completed", 2: "panel.failed"}
    assert [kind for kind, _ in kinds[6:]] == ["analysis.in_progress", "analysis.completed"]
    completed = [t for t in told if t["type"].endswith("panel.completed")]
    assert all(t["text"] for t in completed)
    # fast answers first, then slow: the events follow the members as they answer
    assert [t["model"] for t in completed] == ["fast", "slow"]
    last_progress = max(i for i, e in enumerate(events) if "fusion_progress" in e)
    first_text = min(
        i for i, e in enumerate(events) if e.get("choices") and e["choices"][0]["delta"].get("content")
    )
    assert last_progress < first_text  # the analysis is told before the answer is written
    assert events[-1]["fusion"]["status"] == "partial"


async def test_without_asking_there_is_no_progress(gateways: list[str]) -> None:
    body = {"model": "fusion", "messages": [{"role": "user", "content": "Quiet"}], "stream": True}
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(f"{gateways[1]}/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert "fusion_progress" not in response.text


async def test_over_kafka_a_client_reads_the_progress_on_its_reply_topic(client: FusionClient) -> None:
    seen: list[Any] = []
    request = FusionRequest(
        messages=[ChatMessage(role="user", content="Progress over Kafka")],
        panel=[ModelSpec(model="fast"), ModelSpec(model="fast")],
        judge=ModelSpec(model="strategy-judge"),
        strategy="synthesize",
        progress=True,
    )
    result = await client.fuse(request, on_reply=seen.append)

    assert result.status == "complete"
    told = [message.event for message in seen if message.kind == "progress"]
    assert told[:2] == ["panel.added", "panel.added"]
    assert sorted(told[2:4]) == ["panel.completed", "panel.completed"]
    assert told[4:] == ["analysis.in_progress", "analysis.completed"]
