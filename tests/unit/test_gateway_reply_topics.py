"""The gateway's reply topic over its lifetime, without Kafka: kept at shutdown while a result may still
come to it, swept by age when its gateway is gone, and the reply router's memory bounded."""

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from fusion.gateway import link as link_module
from fusion.gateway import reply_topics
from fusion.gateway.link import FusionLink
from fusion.gateway.reply_topics import Age, Sweeper, presence_interval, sweep_interval
from fusion.kafka.tap import SEEN_REQUESTS, ReplyRouter
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, GatewayPresence, Policy, Timings
from pydantic import BaseModel


def result_for(request_id: str) -> FusedResult:
    now = datetime.now(UTC)
    return FusedResult(
        request_id=request_id,
        status="complete",
        release="all",
        answer="yes",
        timings=Timings(submitted_at=now, completed_at=now, total_ms=1.0),
    )


# --- ReplyRouter -------------------------------------------------------------------------------


def test_the_results_counted_per_request_are_bounded() -> None:
    """`seen` counted every request id ever answered, for the life of the process."""
    router = ReplyRouter("127.0.0.1:1", "fusion.results")
    result = result_for("r")
    for n in range(SEEN_REQUESTS + 500):
        router._deliver(f"r-{n}", result)

    assert len(router.seen) == SEEN_REQUESTS
    assert router.seen["r-0"] == 0  # the oldest went first
    assert router.seen[f"r-{SEEN_REQUESTS + 499}"] == 1


def test_a_router_can_count_nothing() -> None:
    router = ReplyRouter("127.0.0.1:1", "fusion.replies.x", remember=0)
    router._deliver("r-1", result_for("r-1"))
    assert len(router.seen) == 0


class Record:
    def __init__(self, message: BaseModel) -> None:
        self.value = message.model_dump_json().encode()
        self.topic = "fusion.replies.x"


def test_a_presence_on_the_reply_topic_is_skipped() -> None:
    router = ReplyRouter("127.0.0.1:1", "fusion.replies.x")
    got: list[Any] = []
    router.listen("r-1", got.append)
    router._on_record(Record(GatewayPresence(instance_id="x")))
    router._on_record(Record(result_for("r-1")))
    assert [type(message).__name__ for message in got] == ["FusedResult"]


# --- FusionLink at shutdown --------------------------------------------------------------------


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, BaseModel]] = []

    async def send(self, topic: str, message: BaseModel, key: bytes, partition: int | None = None) -> None:
        self.sent.append((topic, message))


class Link(FusionLink):
    """A link whose Kafka side is two lists: what it published, and whether it deleted its topic."""

    def __init__(self) -> None:
        super().__init__(Settings(instance_id="unit", kafka_bootstrap="127.0.0.1:1"))
        self._outbox = Outbox()  # type: ignore[assignment]
        self.ready.set()
        self.deleted = 0

    async def _delete_reply_topic(self) -> None:
        self.deleted += 1


def request(deadline_s: float = 60) -> FusionRequest:
    return FusionRequest(
        messages=[ChatMessage(role="user", content="hi")], policy=Policy(deadline_s=deadline_s)
    )


async def test_the_reply_topic_is_deleted_at_shutdown_when_nothing_is_in_flight() -> None:
    link = Link()
    asked = request()
    await link.submit(asked)
    link.replies._deliver(asked.request_id, result_for(asked.request_id))
    link.forget(asked.request_id)

    await link.close()
    assert link.deleted == 1


async def test_the_reply_topic_is_kept_at_shutdown_while_a_fusion_is_awaited() -> None:
    """Before: deleted at shutdown whatever still ran, so the judge's result had nowhere to go."""
    link = Link()
    await link.submit(request())

    await link.close()
    assert link.deleted == 0
    assert link.in_flight() == 1


async def test_the_reply_topic_is_kept_while_a_request_given_up_on_is_still_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client gone (or a 504) forgets the request, but its result still comes until its deadline."""
    monkeypatch.setattr(link_module, "LATE_S", 0.0)
    link = Link()
    late, soon = request(deadline_s=600), request(deadline_s=0.5)
    for asked in (late, soon):
        await link.submit(asked)
        link.forget(asked.request_id)

    assert link.in_flight() == 1
    await link.close()
    assert link.deleted == 0


async def test_a_request_given_up_on_stops_counting_once_past_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(link_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    link = Link()
    asked = request(deadline_s=30)
    await link.submit(asked)
    link.forget(asked.request_id)

    clock[0] += 30 + link_module.LATE_S - 1
    assert link.in_flight() == 1
    clock[0] += 2
    assert link.in_flight() == 0
    await link.close()
    assert link.deleted == 1


class Reconnecting(Link):
    """A link that connects for real as far as it goes without Kafka: its reply topic found `outcome`
    ("created", or "exists" when an earlier process of the same instance left it)."""

    def __init__(self, outcome: str) -> None:
        super().__init__()
        self.ready.clear()
        self.outcome = outcome
        self._broker = SimpleNamespace(start=self._nothing, stop=self._nothing)  # type: ignore[assignment]
        self.replies = contextlib.nullcontext()  # type: ignore[assignment]

    async def _nothing(self) -> None:
        return None

    async def _create_reply_topic(self) -> str:
        return self.outcome


@pytest.mark.parametrize(("outcome", "deleted"), [("created", 1), ("exists", 0)])
async def test_a_reply_topic_left_by_a_killed_process_of_the_instance_is_kept_at_shutdown(
    outcome: str, deleted: int
) -> None:
    """Before: a gateway killed with fusions in flight and started again under its name deleted the
    topic at its next graceful stop, although the first process's results were still due there: a
    result committed just before the deletion went with the topic (one lost in a chaos run)."""
    link = Reconnecting(outcome)
    await link._connect()
    assert link.ready.is_set()

    await link.close()
    assert link.deleted == deleted


# --- the sweep ---------------------------------------------------------------------------------


class Admin:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.deleted: list[str] = []

    async def list_topics(self) -> list[str]:
        return self.names

    async def delete_topics(self, names: list[str]) -> Any:
        self.deleted.extend(names)
        return SimpleNamespace(topic_error_codes=[(name, 0) for name in names])


def dated(ages: dict[str, list[Age]]) -> Callable[..., Any]:
    """`reply_topics.ages` as the broker would answer it: each topic's answers in turn."""

    async def ages_of(_consumer: Any, _admin: Any, names: list[str], _stale_s: float, _now: float) -> Any:
        return {name: ages[name].pop(0) if len(ages[name]) > 1 else ages[name][0] for name in names}

    return ages_of


async def sweep(sweeper: Sweeper, admin: Admin) -> list[str]:
    return await sweeper._sweep(admin, None)


async def test_a_stale_topic_is_deleted_and_fresh_ones_and_its_own_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["fusion.replies.own", "fusion.replies.gone", "fusion.replies.live", "fusion.results"]
    admin = Admin(names)
    seen: list[list[str]] = []
    ages = dated({"fusion.replies.gone": ["stale"], "fusion.replies.live": ["fresh"]})

    async def recording(consumer: Any, admin_: Any, topics: list[str], stale_s: float, now: float) -> Any:
        seen.append(topics)
        return await ages(consumer, admin_, topics, stale_s, now)

    monkeypatch.setattr(reply_topics, "ages", recording)
    deleted = await sweep(Sweeper("unused", "fusion.replies.own", stale_s=1200), admin)

    assert deleted == admin.deleted == ["fusion.replies.gone"]
    assert seen[0] == ["fusion.replies.gone", "fusion.replies.live"]  # never its own, nor other topics


async def test_a_topic_written_to_between_dating_and_deleting_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway that restarted under the same instance id wrote its presence meanwhile."""
    admin = Admin(["fusion.replies.back"])
    monkeypatch.setattr(reply_topics, "ages", dated({"fusion.replies.back": ["stale", "fresh"]}))

    assert await sweep(Sweeper("unused", "fusion.replies.own", stale_s=1200), admin) == []
    assert admin.deleted == []


async def test_an_empty_topic_goes_once_it_stayed_empty_for_the_stale_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = Admin(["fusion.replies.empty"])
    monkeypatch.setattr(reply_topics, "ages", dated({"fusion.replies.empty": ["empty"]}))
    clock = [5000.0]
    sweeper = Sweeper("unused", "fusion.replies.own", stale_s=100, clock=lambda: clock[0])

    assert await sweep(sweeper, admin) == []
    clock[0] += 99
    assert await sweep(sweeper, admin) == []
    clock[0] += 1
    assert await sweep(sweeper, admin) == ["fusion.replies.empty"]
    assert sweeper.empty_since == {}


async def test_an_empty_topic_written_to_starts_its_wait_again(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = Admin(["fusion.replies.slow"])
    monkeypatch.setattr(reply_topics, "ages", dated({"fusion.replies.slow": ["empty", "fresh", "empty"]}))
    clock = [0.0]
    sweeper = Sweeper("unused", "fusion.replies.own", stale_s=100, clock=lambda: clock[0])

    for _ in range(3):
        assert await sweep(sweeper, admin) == []
        clock[0] += 60
    assert sweeper.empty_since == {"fusion.replies.slow": 120.0}


def test_presence_comes_well_within_the_stale_time_and_sweeps_at_most_every_ten_minutes() -> None:
    assert presence_interval(1200) == 60
    assert presence_interval(8) == 2
    assert sweep_interval(1200) == 600
    assert sweep_interval(8) == 4
