"""Judge failovers as the released markers' history grows to a million and more: no result lost or
doubled, and the new judge's start-up time and memory do not grow with the history.

    python -m bench.markers [--markers 1000000] [--requests 50] [--margin-s 300]   (make bench-markers)

On the bench stack (broker, stand-in models, services as processes, on the test ports), with the judge
logging at INFO (its "answers partitions taken over" lines count the markers it loaded):

1. warm-up: quick requests until every answers partition has a committed offset, as on any judge
   that has been running: its group has committed past what it released. (A judge that loads a
   partition with nothing committed reads every marker of it, and the history is written straight to
   the markers topic, not by releasing requests: written before the partitions are committed, it would
   be read in full by the first judge, which no running judge ever meets.)
2. failovers, one per step of the history: the history's markers (random request ids, as a busy judge
   leaves them) are written to `fusion.judge.released`, the run waits until they are older than the
   margin, then `--requests` requests whose judge calls take 2-4 s are submitted with a stream of quick
   ones beside them (released while the slow ones hold the committed offsets back, so the new judge
   reads their messages again and must find their markers); the judge is killed (SIGKILL) while the
   slow requests are in their judge calls and started again. Steps: no history, 100,000 markers, then
   `--markers` in all;
3. recent: `--recent` markers more, and a failover at once, so the new judge reads all of them: what
   a judge releasing that many requests per margin (300 s) pays on every takeover;
4. offsets lost: the judge is stopped, its group's committed offsets are set back to the start of
   every answers partition (as after an offsets reset or their expiry) and it is started again. It
   reads every answer and every marker (the whole history) again, and must publish no result twice.

Measured for each: the seconds from the start to /health, to the group's assignment (the group
polled every 20 ms) and from the assignment to its log's "answers partitions taken over" for every
partition that had messages to read again (its outputs opened, its markers loaded: ready to publish),
the markers it loaded, its RSS before the kill, after the takeover and at its peak, and whether every
request of the whole run got exactly one result.

Prints a table and writes bench/results/markers.json; exits 1 when a request got no result or more
than one, or when a judge loaded a history it should not have.
"""

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata
from fusion.client import FusionClient
from fusion.judge.output import GROUP
from fusion.kafka.admin import topic_plan
from fusion.kafka.stopping import stop_consumer
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, ModelSpec, Policy, topics
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.stack import Stack, running_stack
from fusion_testing.stack import HEALTH_PORTS

RESULTS = Path(__file__).resolve().parent / "results"

BATCH_BYTES = 512 * 1024
"""One produce batch of markers (about 12,000 of them): the history is written in batches built here,
not one `send` per marker, which is what makes a million of them quick."""
BATCHES_IN_FLIGHT = 8
WARM_UP_REQUESTS = 400
"""Enough for every answers partition to get requests, and so a committed offset."""
FIRST_STEP = 100_000
BYSTANDER_RATE = 20.0
"""Quick requests per second beside the slow ones, until the kill."""
SLOW_JUDGE = "jitter-2000-4000"
"""The stand-in model id behind `deliberate-judge` (fusion_testing/catalog.toml)."""
TAKEN_OVER = "answers partitions taken over"
GROUP_POLL_S = 0.02
DUPLICATES_WAIT_S = 5.0
"""How long the run keeps listening after the last result, for a second one."""

console = Console(width=None if sys.stdout.isatty() else 150)
T = TypeVar("T")


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def answers_partitions(settings: Settings) -> int:
    """How many partitions `fusion.answers` has (and `fusion.judge.released`, one per answers
    partition), as `fusion topics create` made them."""
    return next(plan.partitions for plan in topic_plan(settings) if plan.name == topics.RELEASED)


def proc_status(pid: int) -> dict[str, int]:
    """The memory lines of /proc/<pid>/status, in kB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.startswith("Vm"):
            fields[name] = int(value.split()[0])
    return fields


def rss_mb(pid: int) -> float:
    return proc_status(pid)["VmRSS"] / 1024


def peak_rss_mb(pid: int) -> float:
    return proc_status(pid)["VmHWM"] / 1024


async def until(ready: Callable[[], Awaitable[T | None]], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while (value := await ready()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f} s")
        await asyncio.sleep(0.05)
    return value


async def wait_with_bar(description: str, until_monotonic: float) -> None:
    total = max(until_monotonic - time.monotonic(), 0.0)
    with progress() as bar:
        task = bar.add_task(description, total=round(total))
        while (left := until_monotonic - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 1.0))
            bar.update(task, completed=round(total - max(left - 1.0, 0.0)))


# The history.


async def publish_history(settings: Settings, count: int, partitions: int) -> float:
    """Writes `count` markers over every partition of the markers topic; returns the seconds taken."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        max_batch_size=BATCH_BYTES,
        max_request_size=2 * BATCH_BYTES,
        linger_ms=0,
    )
    await producer.start()
    in_flight: set[asyncio.Future[Any]] = set()
    per_batch = -(-count // partitions)  # at most: a short history is spread over every partition too
    started = time.monotonic()
    try:
        with progress() as bar:
            task = bar.add_task("history: markers written", total=count)
            built, partition = 0, 0
            while built < count:
                batch = producer.create_batch()
                size = 0
                while built + size < count and size < per_batch:
                    key = os.urandom(16).hex().encode()  # as long as a request id (uuid4().hex)
                    if batch.append(key=key, value=b"", timestamp=None) is None:
                        break  # full
                    size += 1
                batch.close()
                built += size
                sent = await producer.send_batch(batch, topics.RELEASED, partition=partition)
                sent.add_done_callback(lambda _, size=size: bar.advance(task, size))
                in_flight.add(sent)
                partition = (partition + 1) % partitions
                if len(in_flight) >= BATCHES_IN_FLIGHT:
                    done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        future.result()  # raises what the broker refused
            for future in asyncio.as_completed(in_flight):
                await future
    finally:
        await producer.stop()
    return time.monotonic() - started


# Requests.


class Requests:
    """Every request of the run goes through here, so the end can tell which got no result or more
    than one."""

    def __init__(self, client: FusionClient) -> None:
        self.client = client
        self.submitted: list[str] = []

    async def submit(self, request: FusionRequest) -> "asyncio.Future[FusedResult]":
        self.submitted.append(request.request_id)
        return await self.client.submit(request)

    def results(self, request_id: str) -> int:
        return self.client.results.seen[request_id]

    def lost(self, request_ids: list[str] | None = None) -> int:
        return sum(1 for r in request_ids or self.submitted if self.results(r) == 0)

    def duplicated(self, request_ids: list[str] | None = None) -> int:
        return sum(1 for r in request_ids or self.submitted if self.results(r) > 1)


def quick_request(content: str) -> FusionRequest:
    return FusionRequest(messages=[ChatMessage(role="user", content=content)], preset="standin")


def slow_request(index: int) -> FusionRequest:
    return FusionRequest(
        messages=[ChatMessage(role="user", content=f"failover {index}")],
        panel=[ModelSpec(model="fast"), ModelSpec(model="fast", seed=1), ModelSpec(model="fast", seed=2)],
        judge=ModelSpec(model="deliberate-judge"),
        policy=Policy(deadline_s=90),
    )


async def warm_up(requests: Requests, count: int) -> None:
    slots = asyncio.Semaphore(50)

    async def one(index: int) -> None:
        async with slots:
            await asyncio.wait_for(await requests.submit(quick_request(f"warm-up {index}")), 60)

    with progress() as bar:
        task = bar.add_task("warm-up: requests fused", total=count)
        for done in asyncio.as_completed([one(i) for i in range(count)]):
            await done
            bar.advance(task)


# The judges' group.


async def committed_offsets(settings: Settings, partitions: int) -> dict[int, int | None]:
    """The judges' committed offsets on `fusion.answers`, per partition (None: nothing committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(GROUP)
    finally:
        await admin.close()
    found = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topics.ANSWERS}
    return {p: found[p] if found.get(p, -1) >= 0 else None for p in range(partitions)}


async def until_all_committed(settings: Settings, partitions: int, timeout_s: float = 30) -> dict[int, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        committed = await committed_offsets(settings, partitions)
        if all(offset is not None for offset in committed.values()):
            return {p: offset for p, offset in committed.items() if offset is not None}
        if time.monotonic() > deadline:
            raise RuntimeError(f"answers partitions without a committed offset: {committed}")
        await asyncio.sleep(0.5)


async def answers_ends(settings: Settings, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topics.ANSWERS, p) for p in range(partitions)])
    finally:
        await stop_consumer(consumer)
    return {tp.partition: offset for tp, offset in ends.items()}


async def stamps_at(settings: Settings, committed: dict[int, int | None]) -> dict[int, float | None]:
    """Per answers partition, the broker's timestamp (time.time()) of the message at the committed
    offset: the oldest one a new owner reads again (None: nothing there to read again)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    stamps: dict[int, float | None] = {}
    try:
        for partition, offset in sorted(committed.items()):
            tp = TopicPartition(topics.ANSWERS, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset or 0)
            fetched = await consumer.getmany(tp, timeout_ms=2_000, max_records=1)
            first = next(iter(fetched.get(tp, [])), None)
            stamps[partition] = first.timestamp / 1000 if first is not None else None
    finally:
        await stop_consumer(consumer)
    return stamps


class GroupWatch:
    """Polls the judges' group: when is it stable again with none of the members it had before?"""

    def __init__(self, settings: Settings) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)

    async def __aenter__(self) -> "GroupWatch":
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._admin.close()

    async def members(self) -> tuple[str, set[str]]:
        """The group's state and its members' ids."""
        responses = await self._admin.describe_consumer_groups([GROUP])
        _error, _group, state, _protocol_type, _protocol, members, *_ = responses[0].groups[0]
        return state, {member[0] for member in members}

    async def reassigned(self, before: set[str], timeout_s: float = 60) -> float:
        """time.time() once the group is stable with members, none of them in `before`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state, members = await self.members()
            if state == "Stable" and members and not members & before:
                return time.time()
            await asyncio.sleep(GROUP_POLL_S)
        raise TimeoutError(f"the judges' group: not stable with a new member after {timeout_s:.0f} s")


async def forget_offsets(settings: Settings, partitions: int) -> None:
    """Sets the (empty) judges' group's committed offsets back to the start of every answers
    partition, as `kafka-consumer-groups --reset-offsets --to-earliest` does."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=GROUP, enable_auto_commit=False
    )
    await consumer.start()
    try:
        answers = [TopicPartition(topics.ANSWERS, p) for p in range(partitions)]
        consumer.assign(answers)
        starts = await consumer.beginning_offsets(answers)
        await consumer.commit({tp: OffsetAndMetadata(starts[tp], "") for tp in answers})
    finally:
        await stop_consumer(consumer)


# The judge.


def log_events(log: Path, offset: int) -> Iterator[dict[str, Any]]:
    """The JSON lines of a service's log from byte `offset` on."""
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    yield event


@dataclass
class Takeover:
    """One judge's start, measured."""

    pid: int
    health_s: float
    """From the start to its /health answering."""
    assigned_s: float
    """From the start to its group's assignment (the dead judge's session timeout, 6 s, is in it)."""
    ready_s: float
    """From the assignment to the last "answers partitions taken over" of the partitions it had to
    read again: outputs opened (fencing the dead judge's), markers loaded."""
    markers_loaded: int
    partitions: list[int]
    rss_after_mb: float
    started: float
    """time.monotonic() at the start."""


class Judge:
    """The stack's judge, run at INFO (its takeover lines) with the run's markers margin."""

    def __init__(self, stack: Stack, margin_s: float) -> None:
        self.stack = stack
        self.margin_s = margin_s
        self.log = stack.services.log_dir / "judge.log"
        self.started_at_offset = 0
        """Where the running judge's lines begin in the log."""

    @property
    def pid(self) -> int:
        return self.stack.services.processes["judge"].pid

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def loaded_over_life(self) -> int:
        """The markers the running judge has loaded since it started."""
        return self.loaded_since(self.started_at_offset)[1]

    def loaded_since(self, offset: int) -> tuple[set[int], int, float]:
        """Partitions taken over from byte `offset` of its log on, the markers they loaded, and the
        last one's time.time()."""
        covered: set[int] = set()
        loaded, last = 0, 0.0
        for event in log_events(self.log, offset):
            if event.get("event") == TAKEN_OVER:
                covered.update(event["partitions"])
                loaded += event["already_released"]
                last = datetime.fromisoformat(event["timestamp"]).timestamp()
        return covered, loaded, last

    async def start(self, to_read_again: set[int], previous_members: set[str]) -> Takeover:
        """Starts it; returns once its log says it took over every partition in `to_read_again`."""
        offset = self.started_at_offset = self.log_offset()
        env = {
            "FUSION_HEALTH_PORT": str(HEALTH_PORTS["judge"]),
            "FUSION_LOG_LEVEL": "INFO",
            "FUSION_JUDGE_MARKERS_MARGIN_S": str(self.margin_s),
        }
        async with GroupWatch(self.stack.settings) as group:
            started_at, started = time.time(), time.monotonic()
            watching = asyncio.create_task(group.reassigned(previous_members))
            await asyncio.to_thread(self.stack.services.run, "judge", "judge", env, HEALTH_PORTS["judge"])
            health_s = time.monotonic() - started
            assigned_at = await watching

        async def taken_over() -> tuple[set[int], int, float] | None:
            covered, loaded, last = self.loaded_since(offset)
            return (covered, loaded, last) if covered >= to_read_again else None

        covered, loaded, last = await until(taken_over, 120, "the takeover of the answers partitions")
        return Takeover(
            pid=self.pid,
            health_s=health_s,
            assigned_s=assigned_at - started_at,
            ready_s=max(last - assigned_at, 0.0) if to_read_again else 0.0,
            markers_loaded=loaded,
            partitions=sorted(covered),
            rss_after_mb=rss_mb(self.pid),
            started=started,
        )


async def standin_calls(standin: str, model_id: str) -> int:
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{standin}/v1/stats", timeout=5)).json()
    count: int = stats["requests"].get(model_id, 0)
    return count


# A failover.


@dataclass
class Step:
    name: str
    history: int
    """Markers in the topic, written by this run beside the judge's own."""
    history_age_s: float | None
    """How old the newest of them was at the kill (None: none yet)."""
    slow_requests: int
    bystanders: int
    bystanders_done_before_kill: int
    requests_before: int
    """Requests the run had submitted before this failover: each left a marker."""
    judge_rss_before_mb: float
    killed_judge_markers_loaded: int
    """What the judge that was killed loaded over its life (its takeover and partitions it took over
    later), while the history was written."""
    health_s: float
    assigned_s: float
    ready_s: float
    markers_loaded: int
    partitions_read_again: list[int]
    judge_rss_after_takeover_mb: float
    judge_rss_after_results_mb: float
    judge_peak_rss_mb: float
    results_s: float
    lost: int
    duplicated: int
    released_again: int
    """Requests whose result was out before the kill that the new judge released once more."""
    committed_at_kill: dict[int, int | None] = field(default_factory=dict)
    oldest_uncommitted_age_s: dict[int, float | None] = field(default_factory=dict)
    """Per answers partition, at the kill: how old the message at the committed offset was (the new
    judge reads the markers written since then, less the margin)."""

    @property
    def requests(self) -> int:
        return self.slow_requests + self.bystanders


@dataclass
class Killed:
    slow: dict[str, "asyncio.Future[FusedResult]"]
    bystanders: dict[str, "asyncio.Future[FusedResult]"]
    done_before_kill: set[str]
    committed: dict[int, int | None]
    to_read_again: set[int]
    members: set[str]


async def kill_amid_judge_calls(stack: Stack, requests: Requests, count: int) -> Killed:
    """Submits the slow requests and quick ones beside them; kills the judge once every slow request
    is in its judge call."""
    settings = stack.settings
    calls_before = await standin_calls(stack.standin, SLOW_JUDGE)
    slow = {request.request_id: await requests.submit(request) for request in map(slow_request, range(count))}
    bystanders: dict[str, asyncio.Future[FusedResult]] = {}

    async def in_judge_calls() -> bool | None:
        return await standin_calls(stack.standin, SLOW_JUDGE) - calls_before >= count or None

    async def stream_bystanders() -> None:
        while True:
            request = quick_request(f"bystander {len(bystanders)}")
            bystanders[request.request_id] = await requests.submit(request)
            await asyncio.sleep(1 / BYSTANDER_RATE)

    streaming = asyncio.create_task(stream_bystanders())
    try:
        await until(in_judge_calls, 30, "the slow requests' judge calls")
        await asyncio.sleep(1.5)  # quick requests released behind the slow ones' offsets
    finally:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
    async with GroupWatch(settings) as group:
        _, members = await group.members()
    done_before_kill = {request_id for request_id, future in bystanders.items() if future.done()}
    stack.services.kill("judge")
    console.log(
        f"judge killed: {count} slow requests in their judge calls,"
        f" {len(done_before_kill)} of {len(bystanders)} quick ones beside them already fused"
    )
    partitions = answers_partitions(settings)
    committed = await committed_offsets(settings, partitions)
    ends = await answers_ends(settings, partitions)
    to_read_again = {p for p, offset in committed.items() if (offset or 0) < ends[p]}
    return Killed(slow, bystanders, done_before_kill, committed, to_read_again, members)


async def failover(
    name: str, judge: Judge, requests: Requests, count: int, *, history: int, history_at: float | None
) -> Step:
    judge_rss_before = rss_mb(judge.pid)
    requests_before = len(requests.submitted)
    killed = await kill_amid_judge_calls(judge.stack, requests, count)
    killed_at = time.time()
    killed_judge_loaded = judge.loaded_over_life()
    history_age = time.monotonic() - history_at if history_at is not None else None
    takeover = await judge.start(killed.to_read_again, killed.members)
    stamps = await stamps_at(judge.stack.settings, killed.committed)  # slow: after the restart
    console.log(
        f"{name}: judge started again: /health after {takeover.health_s:.2f} s, assigned after"
        f" {takeover.assigned_s:.2f} s, ready {takeover.ready_s:.2f} s after that,"
        f" {takeover.markers_loaded:,} markers loaded, RSS {takeover.rss_after_mb:.1f} MB"
    )
    everything = [*killed.slow, *killed.bystanders]
    futures = [*killed.slow.values(), *killed.bystanders.values()]
    if pending := [future for future in futures if not future.done()]:
        await asyncio.wait(pending, timeout=90)
    results_s = time.monotonic() - takeover.started
    await asyncio.sleep(DUPLICATES_WAIT_S)
    released_again = {
        event["request_id"]
        for event in log_events(judge.log, judge.started_at_offset)  # the new judge's lines
        if event.get("event") == "request released" and event.get("request_id") in killed.done_before_kill
    }
    return Step(
        name=name,
        history=history,
        history_age_s=history_age,
        slow_requests=count,
        bystanders=len(killed.bystanders),
        bystanders_done_before_kill=len(killed.done_before_kill),
        requests_before=requests_before,
        judge_rss_before_mb=judge_rss_before,
        killed_judge_markers_loaded=killed_judge_loaded,
        health_s=takeover.health_s,
        assigned_s=takeover.assigned_s,
        ready_s=takeover.ready_s,
        markers_loaded=takeover.markers_loaded,
        partitions_read_again=sorted(killed.to_read_again),
        judge_rss_after_takeover_mb=takeover.rss_after_mb,
        judge_rss_after_results_mb=rss_mb(takeover.pid),
        judge_peak_rss_mb=peak_rss_mb(takeover.pid),
        results_s=results_s,
        lost=requests.lost(everything),
        duplicated=requests.duplicated(everything),
        released_again=len(released_again),
        committed_at_kill=killed.committed,
        oldest_uncommitted_age_s={
            p: killed_at - stamp if stamp is not None else None for p, stamp in stamps.items()
        },
    )


@dataclass
class OffsetsLost:
    """The judge stopped, its group's offsets set back to the start, the judge started again."""

    history: int
    answers_read_again: int
    health_s: float
    assigned_s: float
    ready_s: float
    markers_loaded: int
    judge_rss_before_mb: float
    judge_rss_after_takeover_mb: float
    judge_peak_rss_mb: float
    read_again_s: float
    """From the start to the group's offsets at the end of every answers partition again."""
    released_again: int
    """Requests of the whole run the judge released once more (each would be a second result)."""


async def offsets_lost(judge: Judge, requests: Requests, history: int) -> OffsetsLost:
    settings = judge.stack.settings
    partitions = answers_partitions(settings)
    judge_rss_before = rss_mb(judge.pid)
    async with GroupWatch(settings) as group:
        _, members = await group.members()
    judge.stack.services.stop("judge")  # SIGTERM: it leaves the group, which is then empty
    await forget_offsets(settings, partitions)
    ends = await answers_ends(settings, partitions)
    offset = judge.log_offset()
    console.log(f"offsets lost: the judges' group reads {sum(ends.values()):,} answers again")
    takeover = await judge.start({p for p, end in ends.items() if end > 0}, members)

    async def read_again() -> bool | None:
        committed = await committed_offsets(settings, partitions)
        return all((committed[p] or 0) >= end for p, end in ends.items()) or None

    await until(read_again, 120, "the judge's commits past every answer read again")
    read_again_s = time.monotonic() - takeover.started
    await asyncio.sleep(DUPLICATES_WAIT_S)
    released_again = {
        event["request_id"]
        for event in log_events(judge.log, offset)
        if event.get("event") in ("request released", "rejection published")
    }
    console.log(
        f"offsets lost: judge ready {takeover.ready_s:.2f} s after its assignment,"
        f" {takeover.markers_loaded:,} markers loaded, RSS {takeover.rss_after_mb:.1f} MB,"
        f" {len(released_again)} requests released again"
    )
    return OffsetsLost(
        history=history,
        answers_read_again=sum(ends.values()),
        health_s=takeover.health_s,
        assigned_s=takeover.assigned_s,
        ready_s=takeover.ready_s,
        markers_loaded=takeover.markers_loaded,
        judge_rss_before_mb=judge_rss_before,
        judge_rss_after_takeover_mb=takeover.rss_after_mb,
        judge_peak_rss_mb=peak_rss_mb(takeover.pid),
        read_again_s=read_again_s,
        released_again=len(released_again),
    )


# The run.


@dataclass
class Report:
    markers: int
    recent: int
    margin_s: float
    requests_per_failover: int
    history_write_s: dict[str, float]
    steps: list[Step]
    offsets_lost: OffsetsLost | None
    requests: int
    lost: int
    duplicated: int

    @property
    def history_read(self) -> list[str]:
        """The failovers whose judges loaded markers of the aged history: more than the run's own
        requests left (the recent step's judge is meant to read its markers)."""
        return [
            step.name
            for step in self.steps
            if not step.name.endswith("recent")
            and max(step.markers_loaded, step.killed_judge_markers_loaded)
            > step.requests_before + step.requests
        ]

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and not self.history_read
            and all(step.released_again == 0 for step in self.steps)
            and (self.offsets_lost is None or self.offsets_lost.released_again == 0)
        )


async def run(stack: Stack, markers: int, recent: int, count: int, margin_s: float) -> Report:
    settings = stack.settings
    partitions = answers_partitions(settings)
    judge = Judge(stack, margin_s)
    # The stack's judge logs warnings only: this one, started before any request, says what it loads.
    async with GroupWatch(settings) as group:
        _, members = await group.members()
    stack.services.stop("judge")
    await judge.start(set(), members)
    steps: list[Step] = []
    write_s: dict[str, float] = {}
    async with FusionClient(settings) as client:
        requests = Requests(client)
        await warm_up(requests, WARM_UP_REQUESTS)
        committed = await until_all_committed(settings, partitions)
        console.log(
            f"warm-up: committed offsets on fusion.answers {committed};"
            f" the judge loaded {judge.loaded_over_life()} markers"
        )
        steps.append(await failover("no history", judge, requests, count, history=0, history_at=None))

        written = 0
        for target in sorted({min(FIRST_STEP, markers), markers} - {0}):
            write_s[f"{target:,}"] = await publish_history(settings, target - written, partitions)
            written, written_at = target, time.monotonic()
            console.log(f"history: {written:,} markers in the topic")
            await wait_with_bar(
                f"the history ages past the margin ({margin_s:g} s)", written_at + margin_s + 5
            )
            steps.append(
                await failover(
                    f"{written:,} markers", judge, requests, count, history=written, history_at=written_at
                )
            )

        if recent:
            write_s[f"+{recent:,} recent"] = await publish_history(settings, recent, partitions)
            written_at = time.monotonic()
            written += recent
            steps.append(
                await failover(
                    f"+{recent:,} recent", judge, requests, count, history=written, history_at=written_at
                )
            )
        lost_offsets = await offsets_lost(judge, requests, written)
        return Report(
            markers=markers,
            recent=recent,
            margin_s=margin_s,
            requests_per_failover=count,
            history_write_s=write_s,
            steps=steps,
            offsets_lost=lost_offsets,
            requests=len(requests.submitted),
            lost=requests.lost(),
            duplicated=requests.duplicated(),
        )


def table(report: Report) -> Table:
    rows = Table(title=f"judge failovers as the markers' history grows (margin {report.margin_s:g} s)")
    for column in (
        "history",
        "markers loaded",
        "→ /health",
        "→ assigned",
        "assigned → ready",
        "RSS before kill",
        "RSS after takeover (peak)",
        "lost / duplicated",
        "released again",
    ):
        rows.add_column(column, justify="right")
    for step in report.steps:
        rows.add_row(
            step.name,
            f"{step.markers_loaded:,}",
            f"{step.health_s:.2f} s",
            f"{step.assigned_s:.2f} s",
            f"{step.ready_s:.2f} s",
            f"{step.judge_rss_before_mb:.1f} MB",
            f"{step.judge_rss_after_takeover_mb:.1f} ({step.judge_peak_rss_mb:.1f}) MB",
            f"{step.lost} / {step.duplicated}",
            f"{step.released_again}",
        )
    if lost := report.offsets_lost:
        rows.add_row(
            f"offsets lost ({lost.history:,})",
            f"{lost.markers_loaded:,}",
            f"{lost.health_s:.2f} s",
            f"{lost.assigned_s:.2f} s",
            f"{lost.ready_s:.2f} s",
            f"{lost.judge_rss_before_mb:.1f} MB",
            f"{lost.judge_rss_after_takeover_mb:.1f} ({lost.judge_peak_rss_mb:.1f}) MB",
            "",
            f"{lost.released_again}",
        )
    rows.caption = (
        f"{report.requests:,} requests in the run: {report.lost} lost, {report.duplicated} duplicated;"
        f" judges that read the aged history: {', '.join(report.history_read) or 'none'}"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--markers", type=int, default=1_000_000, help="released markers in the history")
    parser.add_argument(
        "--recent", type=int, default=100_000, help="markers written just before the last failover"
    )
    parser.add_argument("--requests", type=int, default=50, help="slow requests killed in their judge calls")
    parser.add_argument(
        "--margin-s",
        type=float,
        default=Settings().judge_markers_margin_s,
        help="the judge's FUSION_JUDGE_MARKERS_MARGIN_S; the run waits for the history to age past it",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, running_stack(Path(scratch), gateways=0) as stack:
        report = asyncio.run(run(stack, args.markers, args.recent, args.requests, args.margin_s))
    console.print(table(report))
    RESULTS.mkdir(exist_ok=True)
    figures = {**asdict(report), "history_read": report.history_read, "ok": report.ok}
    (RESULTS / "markers.json").write_text(json.dumps(figures, indent=2) + "\n")
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
