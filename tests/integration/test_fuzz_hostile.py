"""Hostile but well-formed requests (`make fuzz`): bad `reply_to`s, reused ids, requests at every
limit, unknown optional fields, a future major version. The rule is that of malformed input: nothing
crashes, nothing stalls, every request gets its answer or its reason (a result, or a dead letter with
a `rejected` result when its id is readable), and ten good requests sent after them are answered."""

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fusion.client import FusionClient
from fusion.kafka.broker import build_broker
from fusion.kafka.codec import DecodeError, decode
from fusion.kafka.tap import TopicTap
from fusion.settings import Settings
from fusion_contracts import ChatMessage, DeadLetter, FusedResult, FusionRequest, Policy, limits, topics
from pydantic import TypeAdapter

from fusion_testing.stack import HEALTH_PORTS, Services, http_ok

pytestmark = [pytest.mark.kafka]

_RESULT = TypeAdapter(FusedResult)
_LETTER = TypeAdapter(DeadLetter)
Json = dict[str, Any]


def base(request_id: str, **fields: Any) -> Json:
    body: Json = {
        "schema_version": 1,
        "request_id": request_id,
        "messages": [{"role": "user", "content": f"hostile {request_id}"}],
        "preset": "standin",
        "policy": {"deadline_s": 30},
        "submitted_at": datetime.now(UTC).isoformat(),
    }
    body.update(fields)
    return body


def hostile() -> dict[str, tuple[Json, set[str]]]:
    """Each case: its body, and the statuses its result may have."""
    done = {"complete"}
    long_id = "h-" + "x" * (limits.MAX_ID_CHARS - 2)
    most_members = [{"model": "fast", "seed": i} for i in range(limits.MAX_PANEL_MEMBERS)]
    most_messages = [{"role": "user", "content": "m"}] * limits.MAX_MESSAGES
    longest_prompt = [{"role": "user", "content": "a" * limits.MAX_PROMPT_CHARS}]
    longest = {"deadline_s": limits.MAX_DEADLINE_S, "grace_s": limits.MAX_GRACE_S}
    tiny_budget = {"deadline_s": 30, "max_cost_usd": "0.000000001"}
    curious = [{"role": "user", "content": "hi", "mood": "curious"}]
    metadata = {f"k{i}": "v" * 100 for i in range(32)}
    cases: list[tuple[str, Json, set[str]]] = [
        ("h-reply-partition", {"reply_to": {"topic": "fusion.results", "partition": 99}}, done),
        ("h-reply-forbidden", {"reply_to": {"topic": "fusion.requests"}}, done),
        ("h-reply-missing", {"reply_to": {"topic": "fusion.replies.gone"}}, done),
        ("h-reused", {}, done),  # and a different request with its id, sent after it
        ("h-redelivered", {}, done),  # published twice, the same bytes
        (long_id, {}, done),
        ("h-most-members", {"preset": None, "panel": most_members, "judge": {"model": "fast"}}, done),
        ("h-most-messages", {"messages": most_messages}, done),
        ("h-longest-prompt", {"messages": longest_prompt}, done),
        ("h-longest-deadline", {"policy": longest}, done),
        ("h-shortest-deadline", {"policy": {"deadline_s": 1}}, {"complete", "partial", "failed", "rejected"}),
        ("h-tiny-budget", {"policy": tiny_budget}, {"rejected", "complete"}),
        (
            "h-unknown-fields",
            {"colour": "blue", "policy": {"deadline_s": 30, "speed": 9}, "messages": curious},
            done,
        ),
        ("h-metadata-full", {"metadata": metadata}, done),
        ("h-future-major", {"schema_version": 2}, {"rejected"}),
        ("h-unknown-preset", {"preset": "no-such-preset"}, {"rejected"}),
        (
            "h-no-such-model",
            {"preset": None, "panel": [{"model": "no/such"}], "judge": {"model": "fast"}},
            {"rejected"},
        ),
    ]
    return {request_id: (base(request_id, **fields), allowed) for request_id, fields, allowed in cases}


async def test_hostile_requests_each_get_an_answer_or_a_reason_and_stop_nobody(
    settings: Settings, client: FusionClient, services: Services
) -> None:
    cases = hostile()
    results: dict[str, list[FusedResult]] = {}
    letters: dict[str, DeadLetter] = {}

    def collect_result(record: Any) -> None:
        with contextlib.suppress(DecodeError):
            result = decode(_RESULT, record.value)
            results.setdefault(result.request_id, []).append(result)

    def collect_letter(record: Any) -> None:
        with contextlib.suppress(DecodeError):
            letter = decode(_LETTER, record.value)
            if letter.key in cases:
                letters[letter.key] = letter

    taps = [
        TopicTap(settings.kafka_bootstrap, topics.RESULTS, collect_result),
        TopicTap(settings.kafka_bootstrap, topics.DLQ, collect_letter),
    ]
    for tap in taps:
        await tap.start()
    broker = build_broker(settings, "hostile")
    await broker.start()
    try:
        for request_id, (body, _) in cases.items():
            raw = json.dumps(body).encode()
            copies = 2 if request_id == "h-redelivered" else 1
            for _ in range(copies):
                await broker.publish(raw, topic=topics.REQUESTS, key=request_id.encode())
        reused = base("h-reused", messages=[{"role": "user", "content": "another question"}])
        await broker.publish(json.dumps(reused).encode(), topic=topics.REQUESTS, key=b"h-reused")

        question = [ChatMessage(role="user", content="good")]
        good = [
            FusionRequest(messages=question, preset="standin", policy=Policy(deadline_s=30))
            for _ in range(10)
        ]
        answers = await asyncio.wait_for(asyncio.gather(*(client.fuse(r) for r in good)), timeout=90)
        for _ in range(600):  # the longest-deadline case answers as soon as its panel does
            if all(rid in results for rid in cases) and len(results.get("h-reused", [])) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)  # time for any second result to show
    finally:
        await broker.stop()
        for tap in taps:
            await tap.stop()

    problems = []
    for request_id, (_, allowed) in cases.items():
        got = results.get(request_id, [])
        expected = 2 if request_id == "h-reused" else 1
        if len(got) != expected:
            problems.append(f"{request_id[:40]}: {len(got)} results, expected {expected}")
        elif not {r.status for r in got} <= allowed | ({"rejected"} if request_id == "h-reused" else set()):
            problems.append(f"{request_id[:40]}: {[(r.status, r.error) for r in got]}")
    statuses = {rid[:24]: [r.status for r in rs] for rid, rs in results.items() if rid in cases}
    print(f"\nhostile requests: {statuses}\ndead letters: {sorted(letters)}")
    assert not problems, problems
    assert sorted(r.status for r in results["h-reused"]) == ["complete", "rejected"]
    assert "unsupported schema version 2" in letters["h-future-major"].error
    for request_id in ("h-reply-partition", "h-reply-forbidden", "h-reply-missing"):
        assert "fusion.results" in letters[request_id].error
    assert [a.status for a in answers] == ["complete"] * 10
    assert all(http_ok(f"http://127.0.0.1:{port}/health") for port in HEALTH_PORTS.values())
