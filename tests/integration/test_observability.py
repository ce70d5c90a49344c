"""Traces, metrics and logs of the services as separate processes on the real broker."""

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fusion.client import FusionClient
from fusion.kafka.tap import TopicTap
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec, topics
from opentelemetry import trace

from fusion_testing.stack import HEALTH_PORTS, Services
from tests.conftest import LEAKY_KEY
from tests.support.otlp import ReceivedSpan, Receiver

pytestmark = [pytest.mark.kafka]


async def spans_of(
    otlp: Receiver, trace_id: str, services: set[str], timeout_s: float = 15
) -> list[ReceivedSpan]:
    """The trace's spans, once every service has exported its part (including the result's publish)."""
    for _ in range(int(timeout_s * 10)):
        spans = otlp.of_trace(trace_id)
        if services <= {span.service for span in spans} and any(
            span.service == "fusion-judge" and "fusion.results" in span.name for span in spans
        ):
            await asyncio.sleep(0.5)  # stragglers of the same batch
            return otlp.of_trace(trace_id)
        await asyncio.sleep(0.1)
    return otlp.of_trace(trace_id)


async def test_one_request_is_one_connected_trace_from_publish_to_result(
    client: FusionClient, otlp: Receiver
) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("client request") as root:
        result = await client.fuse(
            FusionRequest(messages=[ChatMessage(role="user", content="trace me")], preset="standin")
        )
    trace_id = format(root.get_span_context().trace_id, "032x")
    wanted = {"fusion-dispatcher", "fusion-panel-worker", "fusion-judge"}

    spans = await spans_of(otlp, trace_id, wanted)

    assert result.status == "complete"
    by_id = {span.span_id: span for span in spans}
    names = sorted({f"{span.service}: {span.name}" for span in spans})
    print(f"\n{len(spans)} spans in trace {trace_id}:\n  " + "\n  ".join(names))
    assert wanted <= {span.service for span in spans}
    root_id = format(root.get_span_context().span_id, "016x")
    for span in spans:  # every span hangs from the client's root through its parents
        hops = 0
        node = span
        while node.parent_id and node.parent_id in by_id and hops < 50:
            node, hops = by_id[node.parent_id], hops + 1
        assert node.span_id == root_id, f"{span.service}: {span.name} does not reach the client's span"
    model_calls = [span for span in spans if span.attributes.get("gen_ai.operation.name") == "chat"]
    assert {span.service for span in model_calls} == {"fusion-panel-worker", "fusion-judge"}
    assert len(model_calls) == 5  # three members, the judge's analysis and final answer
    for span in model_calls:
        assert span.attributes["gen_ai.request.model"] == "sleep-20"
        assert span.attributes["gen_ai.usage.input_tokens"] == 12
        assert span.attributes["gen_ai.usage.output_tokens"] == 9
    assert any(span.service == "fusion-judge" and "fusion.results" in span.name for span in spans)


async def test_a_failed_model_call_is_an_error_span(client: FusionClient, otlp: Receiver) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("client request") as root:
        await client.fuse(
            FusionRequest(
                messages=[ChatMessage(role="user", content="x")],
                panel=[ModelSpec(model="fast"), ModelSpec(model="broken")],
                judge=ModelSpec(model="fast"),
            )
        )
    spans = await spans_of(otlp, format(root.get_span_context().trace_id, "032x"), {"fusion-panel-worker"})

    failed = [s for s in spans if s.attributes.get("gen_ai.request.model") == "fail-500"]
    assert failed
    assert all(span.error for span in failed)
    assert all(span.attributes.get("error.type") == "ModelHTTPError" for span in failed)


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def scrape() -> dict[str, str]:
    async with httpx.AsyncClient() as http:
        return {
            name: (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            for name, port in HEALTH_PORTS.items()
        }


async def test_each_service_metrics_endpoint_shows_the_counters_moved(client: FusionClient) -> None:
    before = await scrape()
    await client.fuse(
        FusionRequest(messages=[ChatMessage(role="user", content="count me")], preset="standin")
    )
    await asyncio.sleep(0.3)
    after = await scrape()

    def moved(service: str, name: str, **labels: str) -> float:
        return metric(after[service], name, **labels) - metric(before[service], name, **labels)

    assert moved("dispatcher", "fusion_requests_total", status="dispatched") == 1
    assert moved("panel-worker", "fusion_member_latency_seconds_count", model="fast", status="ok") == 3
    assert moved("panel-worker", "fusion_tokens_total", model="fast", direction="output") == 27
    assert moved("judge", "fusion_judge_releases_total", reason="all") == 1
    assert moved("judge", "fusion_requests_total", status="complete") == 1
    for service in ("dispatcher", "panel-worker", "judge"):  # FastStream's own middleware
        assert moved(service, "faststream_received_messages_total") >= 1
    assert "fusion_in_flight" in after["judge"]
    assert "fusion_deadline_misses_total" in after["judge"]
    assert "fusion_cost_usd_total" in after["panel-worker"]


def read_logs(folder: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in folder.glob("*.log"))


async def test_a_configured_key_never_appears_in_logs_messages_dead_letters_or_results(
    settings: Settings, client: FusionClient, services: Services
) -> None:
    seen: list[bytes] = []

    def keep(record: Any) -> None:
        seen.append((record.key or b"") + (record.value or b"") + repr(record.headers).encode())

    taps = [TopicTap(settings.kafka_bootstrap, topic, keep) for topic in topics.ALL]
    for tap in taps:
        await tap.start()
    try:
        result = await client.fuse(
            FusionRequest(
                messages=[ChatMessage(role="user", content="leak?")],
                panel=[ModelSpec(model="fast"), ModelSpec(model="leaky")],
                judge=ModelSpec(model="fast"),
            )
        )
        await asyncio.sleep(1.0)
    finally:
        for tap in taps:
            await tap.stop()

    leaky = result.members[1]
    assert leaky.status == "error"
    assert leaky.error is not None
    assert "invalid credentials: Bearer [redacted]" in leaky.error  # the provider echoed it; we did not
    assert LEAKY_KEY not in result.model_dump_json()
    assert seen
    assert not [message for message in seen if LEAKY_KEY.encode() in message]
    logs = read_logs(Path(services.log_dir))
    assert "invalid credentials" in logs  # the failure was logged...
    assert LEAKY_KEY not in logs  # ...without the key
    assert not re.search(r"Bearer\s+sk-", logs)


async def test_each_tool_call_is_a_span_and_a_metric(client: FusionClient, otlp: Receiver) -> None:
    before = await scrape()
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("client request") as root:
        result = await client.fuse(
            FusionRequest(
                messages=[ChatMessage(role="user", content="Kestrel Bridge opened")], preset="research"
            )
        )
    spans = await spans_of(otlp, format(root.get_span_context().trace_id, "032x"), {"fusion-panel-worker"})
    after = await scrape()

    assert result.status == "complete", result.error
    tools = [span for span in spans if span.attributes.get("gen_ai.operation.name") == "execute_tool"]
    assert sorted(span.attributes["gen_ai.tool.name"] for span in tools) == ["web_fetch", "web_search"]
    assert {span.service for span in tools} == {"fusion-panel-worker"}
    assert all(span.attributes["fusion.tool.outcome"] == "ok" for span in tools)
    for tool in ("web_search", "web_fetch"):
        moved = metric(
            after["panel-worker"], "fusion_tool_call_seconds_count", tool=tool, outcome="ok"
        ) - metric(before["panel-worker"], "fusion_tool_call_seconds_count", tool=tool, outcome="ok")
        assert moved == 1, tool
