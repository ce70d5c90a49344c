"""A judge's result output, with the code production runs and a producer that fails as told: a
result its `reply_to` refuses goes to fusion.results with a dead letter and holds nothing up, and
`/health` fails while (and only while) results cannot be published."""

import asyncio
from typing import Any, cast

from faststream.kafka import KafkaBroker
from fusion.judge.output import PartitionOutput
from fusion.kafka.codec import decode
from fusion.kafka.transactions import Outcome, Outgoing, PartitionProducer
from fusion.liveness import Progress
from fusion.runtime import health_check
from fusion.settings import Settings
from fusion_contracts import DeadLetter, ReplyTo, topics
from pydantic import TypeAdapter

from tests.component.support import a_plan, a_result, eventually


class ScriptedProducer(PartitionProducer):
    """A PartitionProducer without a broker: each commit gets the next outcome of `script`
    (then `committed`), and every reply topic exists with one partition."""

    def __init__(self, script: list[Outcome]) -> None:
        super().__init__("unused:9092", "t-0")
        self.script = script
        self.commits: list[list[Outgoing]] = []

    async def open(self, unless_open: bool = False) -> None:
        self.fenced = False
        self.opened = True

    @property
    def is_open(self) -> bool:
        return True

    async def partitions_for(self, topic: str) -> set[int] | None:
        return {0}

    async def commit(self, messages: list[Outgoing]) -> Outcome:
        self.commits.append(messages)
        return self.script.pop(0) if self.script else Outcome("committed")


async def test_a_result_its_reply_topic_refuses_goes_to_fusion_results_with_a_dead_letter() -> None:
    refused = Outcome("refused", {0: "MessageSizeTooLargeError()"})
    producer = ScriptedProducer([refused])
    committed: list[set[str]] = []
    output = PartitionOutput(
        Settings(instance_id="t"), 0, lambda _p, ids: committed.append(ids), producer=producer
    )
    await output.open()
    output.resume()
    plan = a_plan("picky", reply_to=ReplyTo(topic="fusion.replies.picky"))

    assert await asyncio.wait_for(output.publish(plan, a_result("picky")), 5)

    first, second = producer.commits
    assert [m.topic for m in first] == ["fusion.replies.picky", topics.RELEASED]
    assert [m.topic for m in second] == [topics.RESULTS, topics.RELEASED, topics.DLQ]
    letter = decode(TypeAdapter(DeadLetter), second[2].value)
    assert letter.topic == "fusion.replies.picky"
    assert "MessageSizeTooLargeError" in letter.error
    assert "fusion.results" in letter.error
    assert committed == [{"picky"}]
    await output.close()


async def asgi_get(app: Any) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/health", "headers": [], "query_string": b""}
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


class ReachableBroker:
    async def ping(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (the broker's own signature)
        return True


async def test_health_fails_while_results_cannot_be_published_and_only_then() -> None:
    now = [0.0]
    progress = Progress(stuck_after_s=60, clock=lambda: now[0])
    producer = ScriptedProducer([Outcome("retry")] * 1_000)  # the broker refuses every transaction
    output = PartitionOutput(
        Settings(instance_id="t"), 0, lambda _p, _ids: None, progress=progress, producer=producer
    )
    health = health_check(cast(KafkaBroker, ReachableBroker()), progress)
    await output.open()
    output.resume()
    assert await asgi_get(health) == (204, b"")

    published = asyncio.create_task(output.publish(a_plan("stuck"), a_result("stuck")))
    await eventually(lambda: len(producer.commits) >= 1)
    now[0] = 59.0
    assert (await asgi_get(health))[0] == 204  # not yet: a broker's restart takes a while
    now[0] = 61.0
    status, body = await asgi_get(health)
    assert status == 500
    assert b"result of answers partition 0 unfinished for 61 s" in body

    producer.script.clear()  # the broker takes transactions again
    assert await asyncio.wait_for(published, 5)
    assert await asgi_get(health) == (204, b"")
    await output.close()
