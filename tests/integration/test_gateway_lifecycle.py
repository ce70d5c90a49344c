"""Gateways come and go without losing results, on the real broker with the session's services:
stopped with fusions in flight, killed, swept up after, and streams restarted by another judge.

Gateways here listen on 18085-18087 and are stopped by the test that started them.
"""

import asyncio
import contextlib
import json
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from fusion.gateway.answer_stream import RESTART_NOTICE
from fusion.gateway.link import reply_topic_for
from fusion.kafka.codec import DecodeError, decode, encode
from fusion.kafka.tap import TopicTap
from fusion_contracts import AnswerChunk, FusedResult, FusionRequest, ReplyMessage, Timings, topics
from pydantic import TypeAdapter

from fusion_testing.stack import BOOTSTRAP, GATEWAY_PORTS, Services

pytestmark = [pytest.mark.kafka]

PORTS = (18085, 18086, 18087)
REPLIES: TypeAdapter[Any] = TypeAdapter(ReplyMessage)
REQUESTS: TypeAdapter[FusionRequest] = TypeAdapter(FusionRequest)


def slow_fusion(question: str, stream: bool = False, deadline_s: float = 30) -> dict[str, Any]:
    """A fusion of about 3.5 s: one 3 s member, a quick judge."""
    return {
        "model": "fusion",
        "messages": [{"role": "user", "content": question}],
        "stream": stream,
        "fusion": {"panel": ["slow3"], "judge": "fast", "deadline_s": deadline_s},
    }


async def topic_names() -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not within {timeout_s} s: {what}")


async def result_on(topic: str, request_id: str, timeout_s: float, nth: int = 1) -> FusedResult:
    """The `nth` committed result for `request_id` on `topic`, read from the topic's beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP, group_id=None, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        async with asyncio.timeout(timeout_s):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        try:
                            message = decode(REPLIES, record.value)
                        except DecodeError:
                            continue
                        if isinstance(message, FusedResult) and message.request_id == request_id:
                            nth -= 1
                            if nth == 0:
                                return message
    finally:
        await consumer.stop()


CLEAN_EXIT = (0, -signal.SIGTERM)
"""uvicorn, once it has shut down on a signal, raises that signal again against itself."""


async def terminate(services: Services, label: str) -> asyncio.Task[int]:
    """SIGTERM, without waiting: the task ends with the exit code once the process has exited."""
    process = services.processes.pop(label)
    process.send_signal(signal.SIGTERM)
    return asyncio.create_task(asyncio.to_thread(process.wait, 60))


async def gateway(services: Services, label: str, port: int, **env: str) -> str:
    return await asyncio.to_thread(lambda: services.start_gateway(label, port, True, **env))


async def test_a_gateway_stopped_mid_fusion_drains_it_then_deletes_its_topic(services: Services) -> None:
    url = await gateway(services, "drain", PORTS[0])
    async with httpx.AsyncClient(timeout=60) as client:
        asked = asyncio.create_task(client.post(f"{url}/v1/chat/completions", json=slow_fusion("drain me")))
        await asyncio.sleep(1.0)
        exited = await terminate(services, "drain")
        response = await asked
    assert await asyncio.wait_for(exited, 30) in CLEAN_EXIT

    assert response.status_code == 200
    assert "drain me" in response.json()["choices"][0]["message"]["content"]
    assert reply_topic_for("tests-drain") not in await topic_names()  # nothing was left in flight


async def test_a_fusion_outliving_the_drain_gets_a_503_and_its_result_stays_readable(
    services: Services,
) -> None:
    """Before: the server cut the connection when its own 30 s were up, and the reply topic was deleted
    under the fusions still running, whose results then had nowhere to go."""
    url = await gateway(services, "short-drain", PORTS[1], FUSION_GATEWAY_DRAIN_S="1")
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as client:
        asked = asyncio.create_task(client.post(f"{url}/v1/chat/completions", json=slow_fusion("outlive")))
        await asyncio.sleep(0.5)
        exited = await terminate(services, "short-drain")
        response = await asked
    answered_after = time.monotonic() - started
    assert await asyncio.wait_for(exited, 30) in CLEAN_EXIT

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "gateway_shutting_down"
    assert answered_after < 3.0  # the drain's 1 s, not the fusion's 3.5 s
    match = re.search(r"fusion ([0-9a-f]{32})", error["message"])
    assert match is not None, error["message"]
    topic = reply_topic_for("tests-short-drain")
    assert topic in await topic_names()
    result = await result_on(topic, match.group(1), timeout_s=30)
    assert result.status == "complete"


async def test_a_stream_given_up_on_by_its_client_keeps_the_topic_for_its_result(services: Services) -> None:
    """The client left mid-stream, then the gateway was stopped with nothing in flight over HTTP, but
    with that fusion still running. Before: the topic was deleted at once."""
    url = await gateway(services, "abandoned", PORTS[2])
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=slow_fusion("left", stream=True)) as stream,
    ):
        first = await anext(stream.aiter_lines())
    request_id = json.loads(first.removeprefix("data: "))["id"].removeprefix("chatcmpl-")
    await asyncio.sleep(0.5)
    exited = await terminate(services, "abandoned")
    assert await asyncio.wait_for(exited, 30) in CLEAN_EXIT

    topic = reply_topic_for("tests-abandoned")
    assert topic in await topic_names()
    assert (await result_on(topic, request_id, timeout_s=30)).status == "complete"


# --- the sweep ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def without_session_gateways(services: Services) -> AsyncIterator[None]:
    """The session's gateways write their presence every minute: a sweeper told that 8 s of silence
    means gone would take them for gone. They are stopped meanwhile and started again after."""
    labels = [label for label in services.processes if re.fullmatch(r"gateway-\d", label)]
    for label in labels:
        await asyncio.to_thread(services.stop, label)
    try:
        yield
    finally:
        for label in labels:
            await gateway(services, label, GATEWAY_PORTS[int(label[-1])])


async def create_topic(name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()


async def test_reply_topics_of_gone_gateways_are_swept_by_age_and_live_ones_kept(services: Services) -> None:
    """A gateway killed long ago (its newest message two hours old, as a gateway of the last release
    would leave it), one just killed, one that died before writing anything, and one alive and idle.
    Before: every one of them stayed for ever."""
    fast = {"FUSION_GATEWAY_REPLY_TOPIC_STALE_S": "8"}  # presence every 2 s, sweeps every 4 s
    old, empty = reply_topic_for("tests-killed-long-ago"), reply_topic_for("tests-died-connecting")
    killed, live, sweeper = (reply_topic_for(f"tests-{n}") for n in ("killed", "idle", "sweeper"))
    async with without_session_gateways(services):
        await create_topic(old)
        await create_topic(empty)
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
        await producer.start()
        try:
            stamp = int((time.time() - 7200) * 1000)
            await producer.send_and_wait(old, encode(stale_result()), partition=0, timestamp_ms=stamp)
        finally:
            await producer.stop()
        await gateway(services, "killed", PORTS[0], **fast)
        await asyncio.to_thread(services.kill, "killed")
        url = await gateway(services, "idle", PORTS[1], **fast)
        try:
            await gateway(services, "sweeper", PORTS[2], **fast)
            try:
                await eventually(
                    lambda: gone(old), 10, "the topic of a gateway gone for two hours swept at start-up"
                )
                await eventually(lambda: gone(killed), 30, "the killed gateway's topic swept once silent")
                await eventually(lambda: gone(empty), 30, "the empty topic swept once empty for 8 s")
                names = await topic_names()
                assert live in names
                assert sweeper in names
                async with httpx.AsyncClient(timeout=60) as client:  # the idle gateway still works
                    body = {
                        "model": "fusion/standin",
                        "messages": [{"role": "user", "content": "still here?"}],
                    }
                    response = await client.post(f"{url}/v1/chat/completions", json=body)
                assert response.status_code == 200
            finally:
                await asyncio.to_thread(services.stop, "sweeper")
        finally:
            await asyncio.to_thread(services.stop, "idle")


async def gone(topic: str) -> bool:
    return topic not in await topic_names()


def stale_result() -> FusedResult:
    return result("long-ago", "old")


# --- streams restarted by another judge --------------------------------------------------------


class Published:
    """The requests a gateway publishes, read off fusion.requests."""

    def __init__(self, reply_topic: str) -> None:
        self.reply_topic = reply_topic
        self.requests: list[FusionRequest] = []
        self.tap = TopicTap(BOOTSTRAP, topics.REQUESTS, self._on_record)

    def _on_record(self, record: Any) -> None:
        try:
            request = decode(REQUESTS, record.value)
        except DecodeError:
            return  # another test's malformed request
        if request.reply_to is not None and request.reply_to.topic == self.reply_topic:
            self.requests.append(request)


Reply = AnswerChunk | FusedResult


async def play(topic: str, messages: list[Reply]) -> None:
    """Publishes as judges would: chunks, then the result, each keyed by request id."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True)
    await producer.start()
    try:
        for message in messages:
            key = topics.request_key(message.request_id)
            await producer.send_and_wait(topic, encode(message), key=key, partition=0)
    finally:
        await producer.stop()


def sse_text(lines: list[str]) -> tuple[str, list[dict[str, Any]]]:
    assert lines[-1] == "data: [DONE]"
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p.get("choices"))
    return text, payloads


async def streamed_with(services: Services, label: str, judges: Callable[[str], list[Reply]]) -> str:
    """What a client of a gateway reads of a streamed fusion whose chunks and result `judges` give,
    before the session's own judge (its panel takes 3 s) has begun. The gateway is stopped once that
    judge's result is in too, so its topic goes with nothing due."""
    url = await gateway(services, label, PORTS[0])
    reply_topic = reply_topic_for(f"tests-{label}")
    published = Published(reply_topic)
    await published.tap.start()
    body = slow_fusion("restart me", stream=True)

    async def published_one() -> bool:
        return bool(published.requests)

    try:
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("POST", f"{url}/v1/chat/completions", json=body) as response,
        ):
            lines = response.aiter_lines()
            collected = [await anext(lines)]
            await eventually(published_one, 10, "the request published")
            [request] = published.requests
            await play(reply_topic, judges(request.request_id))
            collected += [line async for line in lines if line.startswith("data: ")]
        await result_on(reply_topic, request.request_id, timeout_s=30, nth=2)  # the session judge's
    finally:
        await published.tap.stop()
        await asyncio.to_thread(services.stop, label)
    text, payloads = sse_text([line for line in collected if line.startswith("data: ")])
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    return text


def chunks(request_id: str, stream_id: str | None, *deltas: str) -> list[Reply]:
    return [
        AnswerChunk(request_id=request_id, seq=seq, delta=delta, stream_id=stream_id)
        for seq, delta in enumerate(deltas)
    ]


def result(request_id: str, answer: str) -> FusedResult:
    now = datetime.now(UTC)
    return FusedResult(
        request_id=request_id,
        status="complete",
        release="all",
        answer=answer,
        answer_source="judge",
        timings=Timings(submitted_at=now, completed_at=now, total_ms=1.0),
    )


async def test_a_stream_restarted_by_a_new_judge_is_not_spliced(services: Services) -> None:
    """As judges stream today (no stream id): the second judge starts again at seq 0 with other words.
    Before: 'The first judge wrote this, else entirely.' and a false "judge failed" notice."""
    first = ("The first judge ", "wrote this, ")
    second = ("Another judge ", "wrote something ", "else entirely.")

    text = await streamed_with(
        services,
        "restarted",
        lambda rid: [*chunks(rid, None, *first), *chunks(rid, None, *second), result(rid, "".join(second))],
    )

    assert "judge failed" not in text
    assert text == "".join(first) + RESTART_NOTICE + "".join(second)


async def test_a_judge_streaming_on_beside_its_successor_is_not_heard(services: Services) -> None:
    def judges(rid: str) -> list[Reply]:
        old, new = chunks(rid, "old", "Old one, ", "old two, ", "old three."), chunks(rid, "new", "New one.")
        return [old[0], old[1], new[0], old[2], result(rid, "New one.")]

    text = await streamed_with(services, "zombie", judges)

    assert text == "Old one, old two, " + RESTART_NOTICE + "New one."


async def test_a_judge_killed_mid_stream_leaves_one_whole_answer(services: Services) -> None:
    """The real thing: the session's judge is killed once the client has the first words, and the
    judge started in its place takes the request over and streams it again from the start (the
    stand-in writes the same words, in other chunks). The client reads one answer, whole."""
    url = await gateway(services, "failover", PORTS[0])
    body = {
        "model": "fusion",
        "messages": [{"role": "user", "content": "survive the judge"}],
        "stream": True,
        "fusion": {"panel": ["fast", "fast"], "judge": "slow3", "deadline_s": 90},  # 3 s, then 3 s of words
    }
    lines: list[str] = []
    killed = False
    try:
        async with (
            httpx.AsyncClient(timeout=120) as client,
            client.stream("POST", f"{url}/v1/chat/completions", json=body) as response,
        ):
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                lines.append(line)
                payload = json.loads(line.removeprefix("data: ")) if line != "data: [DONE]" else {}
                words = (payload.get("choices") or [{}])[0].get("delta", {}).get("content")
                if words and not killed:
                    killed = True
                    await asyncio.to_thread(services.kill, "judge")  # mid-stream
                    await asyncio.to_thread(services.start, "judge")
        request_id = json.loads(lines[0].removeprefix("data: "))["id"].removeprefix("chatcmpl-")
        fused = await result_on(reply_topic_for("tests-failover"), request_id, timeout_s=30)
    finally:
        await asyncio.to_thread(services.stop, "failover")
        if "judge" not in services.processes:
            await asyncio.to_thread(services.start, "judge")

    assert killed
    text, payloads = sse_text(lines)
    final = payloads[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["fusion"]["status"] == "complete"
    assert text.startswith("Stand-in answer from sleep-3000")
    assert text == fused.answer  # one answer, whole: the same words again were caught up with silently
