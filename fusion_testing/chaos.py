"""Requests through a scaled-out stack on the three-broker cluster while its processes are killed,
paused, scaled and restarted and a broker dies; at the end every request must have exactly one result,
and each result must answer its own request. `make chaos` runs it long (bench/chaos.py), the tests
short (tests/integration/test_chaos_cluster.py).

The stack: 2 dispatchers, 3 panel workers, 2 judges and 2 gateways on the cluster of
infra/kafka-cluster.sh (every topic with three replicas), stand-in models (preset `chaos`: 0.2-1.5 s
per member call, about a second per judge call, two judge calls per request). Requests go in at a
steady rate, every other one through a gateway with the `openai` SDK (`model="fusion/chaos"`), the
others straight to `fusion.requests` with `FusionClient`. Each prompt carries a tag of its own, which
the stand-in echoes into every answer, so a result that answers another request is seen
(`mismatched`).

While they run, on a timeline drawn from the seed (one fault at a time, in time order; a paused judge
is resumed in the background while the timeline goes on):

- each service type (dispatcher, panel worker, judge, gateway) is SIGKILLed `kills` times, one of its
  instances at random, and started again at once (same instance id);
- a judge is SIGSTOPped for `PAUSE_S` (past its 6 s session timeout, so the group moves on) and
  resumed, `pauses` times;
- the judges are scaled 2 -> 3 -> 2 and the panel workers 3 -> 1 -> 3 (SIGTERM to scale down);
- one broker is SIGKILLed, and started again later;
- one gateway is restarted gracefully (SIGTERM: it answers its calls in flight and deletes its reply
  topic; the new instance has a new instance id, as a new pod would). Calls are routed only to
  gateways that are up, as a load balancer would: a gateway is taken out of the rotation just before
  it is killed or stopped and put back once its /health answers.

What counts. The run reads every result from Kafka itself (read_committed, `fusion.results` and each
gateway's reply topic) and every request on `fusion.requests` (by the tag in its prompt), so what a
client saw is checked against what the topics hold:

- Kafka path: a request counts as accepted once the broker acknowledged it (it is retried for up to
  `ACCEPT_S`; one never acknowledged is a client error). Its results are the `FusedResult`s with its
  request id: none is `lost`, more than one `duplicated`.
- Gateway path: each SDK call (no retries) returns one response or raises. A 200, a 400 (a rejected
  request) or a 502 (a failed fusion) carries a result. A call that failed otherwise (a connection
  error when its gateway died under it, a 503, a 504) still counts as a result if its request's result
  is on a reply topic; if its request never reached `fusion.requests` it is a `client_error` (nothing
  was accepted); if it did and no result came, it is `lost`. Duplicates are counted on the topics
  (the SDK sees only the first result), and when two calls got one request's result.

Each service is given the three brokers to bootstrap from (`Fleet.bootstrap`), as a deployment
would; the broker the run kills is any of the three.

After the run every lost request is traced through the topics (its copies on `fusion.requests`, its
plan, tasks and answers, its released marker, committed and uncommitted results), and every service
log is searched for errors and tracebacks.
"""

import asyncio
import contextlib
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import openai
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from fusion.client import FusionClient
from fusion.gateway.link import reply_topic_for
from fusion.kafka.admin import create_topics
from fusion.kafka.codec import DecodeError, decode
from fusion.kafka.stopping import stop_consumer
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, Policy, ReplyMessage, limits, topics
from pydantic import TypeAdapter
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from fusion_testing.cluster import NODES, Cluster, broker_address
from fusion_testing.stack import CATALOG, Services

SERVICES = ("dispatcher", "panel-worker", "judge", "gateway")
FLEET = {"dispatcher": 2, "panel-worker": 3, "judge": 2, "gateway": 2}
"""How many instances of each service the run starts with."""
SCALED = {"judge": 3, "panel-worker": 1}
"""Each is scaled to this and back during the run."""
PRESET = "chaos"
GATEWAY_MODEL = f"fusion/{PRESET}"
DEADLINE_S = 90.0
PAUSE_S = 10.0
"""How long a judge stays SIGSTOPped: past its consumer's session timeout (6 s)."""
ACCEPT_S = 60.0
"""How long a request straight to Kafka is retried until the broker acknowledges it."""
DUPLICATE_WAIT_S = 8.0
"""Once every request has its result, how long the run still watches for second ones."""
TAG = re.compile(r"\[chaos-\d+-[kg]\d+-[0-9a-f]{6}\]")

Route = Literal["kafka", "gateway"]


@dataclass(frozen=True)
class Ports:
    """Where the run's processes listen: a health port per dispatcher, panel worker and judge (each
    label keeps its port across restarts), a port per gateway slot."""

    health: tuple[int, ...] = tuple(range(18201, 18221))
    gateways: tuple[int, ...] = (18221, 18222)


def service_env() -> dict[str, str]:
    """This process's environment for the services, without its own FUSION_* and OTEL_* settings (a
    test session's tracing, say), pointed at the cluster's three brokers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUSION_", "OTEL_"))}
    if "FUSION_CACHE" in os.environ:
        env["FUSION_CACHE"] = os.environ["FUSION_CACHE"]
    return {
        **env,
        "FUSION_KAFKA_BOOTSTRAP": ",".join(broker_address(node) for node in NODES),
        "FUSION_CATALOG": str(CATALOG),
        "FUSION_LOG_FORMAT": "json",
        "FUSION_LOG_LEVEL": "INFO",
    }


def cluster_settings(bootstrap: str, instance_id: str = "chaos-client") -> Settings:
    return Settings(kafka_bootstrap=bootstrap, catalog=CATALOG, instance_id=instance_id)


async def create_cluster_topics(cluster: Cluster) -> None:
    """Fusion's topics on all three brokers, each partition with all three replicas in sync."""
    await create_topics(cluster_settings(cluster.bootstrap), replication=3)
    for name in (topics.REQUESTS, topics.TASKS, topics.ANSWERS, topics.RESULTS, topics.RELEASED):
        await cluster.wait_all_in_sync(name)


# ---------------------------------------------------------------------------------------------------
# Results as Kafka shows them


_REPLIES: TypeAdapter[Any] = TypeAdapter(ReplyMessage)


@dataclass
class Seen:
    result: FusedResult
    topic: str
    at: float
    """time.monotonic() when this process read it."""


class ResultLog:
    """Every FusedResult on the tapped topics (read_committed, from each topic's beginning), by request
    id, and every request on `fusion.requests` by the tag in its prompt (so a gateway call that failed
    is known to have reached Kafka or not). One consumer per topic, without a group; a topic can be
    untapped (before it is deleted)."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self.by_request: dict[str, list[Seen]] = defaultdict(list)
        self.requests_by_tag: dict[str, Counter[str]] = defaultdict(Counter)
        """Tag -> the request ids published with it, and how many copies of each."""
        self.errors: Counter[str] = Counter()
        self._readers: dict[str, tuple[AIOKafkaConsumer, asyncio.Task[None]]] = {}

    async def tap(self, topic: str, partitions: int) -> None:
        """Reads the results on `topic` (fusion.results or a reply topic)."""
        await self._tap(topic, partitions, self._on_result)

    async def tap_requests(self, partitions: int) -> None:
        await self._tap(topics.REQUESTS, partitions, self._on_request)

    async def _tap(self, topic: str, partitions: int, on_record: Callable[[Any, float], None]) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=200,
            max_partition_fetch_bytes=limits.MAX_MESSAGE_BYTES,
        )
        await consumer.start()
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        reader = asyncio.create_task(self._read(consumer, on_record), name=f"tap:{topic}")
        self._readers[topic] = (consumer, reader)

    async def _read(self, consumer: AIOKafkaConsumer, on_record: Callable[[Any, float], None]) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200)
            except KafkaError as error:  # counted, and the reader goes on: a result must not go unseen
                self.errors[type(error).__name__] += 1
                await asyncio.sleep(0.5)
                continue
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    on_record(record, now)

    def _on_result(self, record: Any, now: float) -> None:
        try:
            message = decode(_REPLIES, record.value)
        except DecodeError:
            self.errors["undecodable result"] += 1
            return
        if isinstance(message, FusedResult):
            self.by_request[message.request_id].append(Seen(message, record.topic, now))

    def _on_request(self, record: Any, now: float) -> None:
        try:
            request = json.loads(record.value)
            tags = TAG.findall(request["messages"][-1]["content"])
            request_id = str(request["request_id"])
        except (ValueError, KeyError, TypeError, IndexError):
            self.errors["undecodable request"] += 1
            return
        for tag in set(tags):
            self.requests_by_tag[tag][request_id] += 1

    async def untap(self, topic: str) -> None:
        consumer, task = self._readers.pop(topic)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stop_consumer(consumer)  # a broker the run killed may still be down

    async def close(self) -> None:
        for topic in list(self._readers):
            await self.untap(topic)


def result_text(result: FusedResult) -> str:
    """Everything a result says that echoes its prompt: the answer and each member's text."""
    return " ".join(part for part in (result.answer, *(m.text for m in result.members)) if part)


def answers_tag(result: FusedResult, tag: str) -> bool | None:
    """Whether the result's answer (or, with none, a member's) carries `tag` and no other tag; None
    when it has no text at all (a failed or rejected result)."""
    text = result.answer or result_text(result)
    if not text:
        return None
    return set(TAG.findall(text)) == {tag}


# ---------------------------------------------------------------------------------------------------
# The processes


@dataclass
class Instance:
    label: str
    """Its name in the run (and its log file's): `judge-2`, `gateway-1b`."""
    service: str
    port: int
    instance_id: str


class Fleet:
    """The run's service processes on the cluster: instances by service, started, killed, paused and
    stopped by label, and which gateways take calls."""

    def __init__(self, services: Services, cluster: Cluster, results: ResultLog, ports: Ports) -> None:
        self.services = services
        self.cluster = cluster
        self.results = results
        self._free_ports = list(ports.health)
        self._ports: dict[str, int] = {}
        self._gateway_ports = ports.gateways
        self.running: dict[str, Instance] = {}
        self.paused: set[str] = set()
        self.gateways_up: dict[int, Instance] = {}
        """Gateway slot (0, 1) -> its instance, while it takes calls."""
        self.epoch: Counter[int] = Counter()
        """Gateway slot -> how many times a gateway started on it (a new connection pool each time)."""
        self._starting: set[str] = set()
        self._generation: Counter[int] = Counter()

    def labels(self, service: str) -> list[str]:
        return sorted(label for label, i in self.running.items() if i.service == service)

    def counts(self) -> dict[str, int]:
        return {service: len(self.labels(service)) for service in SERVICES}

    def _instance(self, service: str, index: int) -> Instance:
        label = f"{service}-{index}"
        if label not in self._ports:
            self._ports[label] = self._free_ports.pop(0)
        return Instance(label, service, self._ports[label], f"chaos-{label}")

    def bootstrap(self) -> str:
        """What every instance bootstraps from: the three brokers, whichever are up."""
        return ",".join(broker_address(node) for node in NODES)

    async def _run(self, instance: Instance) -> None:
        port = "FUSION_GATEWAY_PORT" if instance.service == "gateway" else "FUSION_HEALTH_PORT"
        env = {
            port: str(instance.port),
            "FUSION_INSTANCE_ID": instance.instance_id,
            "FUSION_KAFKA_BOOTSTRAP": self.bootstrap(),
        }
        await asyncio.to_thread(self.services.run, instance.label, instance.service, env, instance.port)
        self.running[instance.label] = instance

    async def start(self, service: str) -> str:
        """One more dispatcher, panel worker or judge: the lowest index neither running nor starting."""
        taken = self.running.keys() | self._starting
        index = next(i for i in range(1, 100) if f"{service}-{i}" not in taken)
        instance = self._instance(service, index)
        self._starting.add(instance.label)
        try:
            await self._run(instance)
        finally:
            self._starting.discard(instance.label)
        return instance.label

    def _gateway(self, slot: int, generation: int) -> Instance:
        label = f"gateway-{slot + 1}" + ("" if generation == 0 else chr(ord("a") + generation))
        return Instance(label, "gateway", self._gateway_ports[slot], f"chaos-{label}")

    async def start_gateway(self, slot: int) -> Instance:
        """The gateway of a slot (a port), as a new instance; once it is up (it has created its reply
        topic), the topic is tapped from its beginning and the gateway takes calls."""
        instance = self._gateway(slot, self._generation[slot])
        self._generation[slot] += 1
        await self._run(instance)
        await self.results.tap(reply_topic_for(instance.instance_id), 1)
        self.gateways_up[slot] = instance
        self.epoch[slot] += 1
        return instance

    async def start_all(self) -> None:
        """The starting fleet: the gateways last, once the others are up."""
        await asyncio.gather(
            *(self.start(s) for s, count in FLEET.items() if s != "gateway" for _ in range(count))
        )
        for slot in range(FLEET["gateway"]):
            await self.start_gateway(slot)

    async def kill(self, label: str) -> None:
        """SIGKILL, then the same instance again (its instance id, so a gateway keeps its reply topic)."""
        instance = self.running.pop(label)
        slot = self._slot_of(label)
        if slot is not None:
            del self.gateways_up[slot]
        self.services.kill(label)
        await self._run(instance)
        if slot is not None:
            self.gateways_up[slot] = instance
            self.epoch[slot] += 1

    def _slot_of(self, label: str) -> int | None:
        return next((slot for slot, i in self.gateways_up.items() if i.label == label), None)

    async def stop(self, labels: list[str]) -> None:
        """SIGTERM to each at once; returns once all have exited."""
        for label in labels:
            del self.running[label]
        await asyncio.gather(*(asyncio.to_thread(self.services.stop, label) for label in labels))

    async def restart_gateway(self, slot: int) -> tuple[str, str]:
        """Out of the rotation, SIGTERM (it answers its calls in flight, then deletes its reply topic),
        then a new instance on the same port."""
        old = self.gateways_up.pop(slot)
        del self.running[old.label]
        await asyncio.to_thread(self.services.stop, old.label)
        topic = reply_topic_for(old.instance_id)
        if not await _topic_exists(self.bootstrap(), topic):
            # Kept when results may still come to it (a predecessor killed under the same name had
            # requests in flight): read on, as any consumer of reply topics would.
            await self.results.untap(topic)
        new = await self.start_gateway(slot)
        return old.label, new.label

    def pause(self, label: str) -> None:
        self.services.pause(label)
        self.paused.add(label)

    def resume(self, label: str) -> None:
        self.services.resume(label)
        self.paused.discard(label)

    async def stop_all(self) -> None:
        for label in list(self.paused):
            self.resume(label)
        await asyncio.to_thread(self.services.stop_all)
        self.running.clear()
        self.gateways_up.clear()


# ---------------------------------------------------------------------------------------------------
# The faults


FaultAction = Literal["kill", "pause", "scale", "kill-broker", "restart-broker", "restart-gateway"]


@dataclass(frozen=True)
class Fault:
    at_s: float
    """Planned start, seconds from the first request (a fault starts once the one before has ended)."""
    action: FaultAction
    service: str = ""
    count: int = 0
    """For `scale`: how many instances after it."""


def plan_faults(window_s: float, kills: int, pauses: int, rng: random.Random) -> list[Fault]:
    """Every fault of a run whose requests go in over `window_s`, in time order."""

    def at(low: float, high: float) -> float:
        return rng.uniform(low, high) * window_s

    faults = [Fault(at(0.03, 0.85), "kill", service) for service in SERVICES for _ in range(kills)]
    # The pauses spread out, so that one judge is resumed before the next is paused.
    faults += [
        Fault(at(0.05 + 0.8 * k / pauses, 0.05 + 0.8 * (k + 0.6) / pauses), "pause") for k in range(pauses)
    ]
    faults += [
        Fault(at(0.05, 0.3), "scale", "judge", SCALED["judge"]),
        Fault(at(0.45, 0.7), "scale", "judge", FLEET["judge"]),
        Fault(at(0.1, 0.35), "scale", "panel-worker", SCALED["panel-worker"]),
        Fault(at(0.45, 0.65), "scale", "panel-worker", FLEET["panel-worker"]),
        Fault(at(0.05, 0.85), "restart-gateway", "gateway"),
    ]
    broken = at(0.25, 0.5)
    faults += [Fault(broken, "kill-broker"), Fault(broken + max(0.1 * window_s, 8.0), "restart-broker")]
    return sorted(faults, key=lambda fault: fault.at_s)


@dataclass
class FaultRecord:
    at_s: float
    """When it started, seconds from the first request."""
    took_s: float
    what: str


class Disruptor:
    """Runs the faults of the plan one after another on the fleet and the cluster."""

    def __init__(self, fleet: Fleet, faults: list[Fault], rng: random.Random, started: float) -> None:
        self.fleet = fleet
        self.faults = faults
        self.rng = rng
        self.started = started
        self.done: list[FaultRecord] = []
        self.current = ""
        self.killed_node: int | None = None
        self._resumes: list[asyncio.Task[None]] = []
        self.counts: Counter[str] = Counter()

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    async def run(self) -> None:
        try:
            for fault in self.faults:
                await asyncio.sleep(max(fault.at_s - self._elapsed(), 0))
                began = self._elapsed()
                self.current = f"{fault.action} {fault.service}".strip()
                what = await self._do(fault)
                self.done.append(FaultRecord(round(began, 1), round(self._elapsed() - began, 1), what))
                self.current = ""
            await asyncio.gather(*self._resumes)
        finally:
            for task in self._resumes:
                task.cancel()

    def _targets(self, service: str) -> list[str]:
        return [label for label in self.fleet.labels(service) if label not in self.fleet.paused]

    async def _do(self, fault: Fault) -> str:
        fleet = self.fleet
        if fault.action == "kill":
            if fault.service == "gateway":
                slot = self.rng.choice(sorted(fleet.gateways_up))
                label = fleet.gateways_up[slot].label
            else:
                label = self.rng.choice(self._targets(fault.service))
            await fleet.kill(label)
            self.counts[f"kills.{fault.service}"] += 1
            return f"SIGKILL {label}, started again"
        if fault.action == "pause":
            while fleet.paused:  # noqa: ASYNC110 - one paused judge at a time
                await asyncio.sleep(0.2)
            label = self.rng.choice(self._targets("judge"))
            fleet.pause(label)
            self._resumes.append(asyncio.create_task(self._resume_later(label)))
            self.counts["pauses"] += 1
            return f"SIGSTOP {label} for {PAUSE_S:g} s"
        if fault.action == "scale":
            before = fleet.labels(fault.service)
            if fault.count > len(before):
                added = await asyncio.gather(
                    *(fleet.start(fault.service) for _ in range(fault.count - len(before)))
                )
                change = f"started {', '.join(added)}"
            else:
                gone = sorted(self._targets(fault.service), reverse=True)[: len(before) - fault.count]
                await fleet.stop(gone)
                change = f"SIGTERM {', '.join(gone)}"
            self.counts[f"scaled.{fault.service}"] += 1
            return f"{fault.service} {len(before)} -> {fault.count}: {change}"
        if fault.action == "kill-broker":
            controller = await fleet.cluster.controller()
            node = self.killed_node = self.rng.choice(NODES)
            await fleet.cluster.kill(node)
            self.counts["broker_kills"] += 1
            role = "the active controller" if node == controller else f"controller: node {controller}"
            return f"SIGKILL broker {node} ({role})"
        if fault.action == "restart-broker":
            assert self.killed_node is not None
            await fleet.cluster.restart(self.killed_node)
            self.counts["broker_restarts"] += 1
            return f"broker {self.killed_node} started again"
        slot = self.rng.choice(sorted(fleet.gateways_up))
        old, new = await fleet.restart_gateway(slot)
        self.counts["gateway_restarts"] += 1
        return f"SIGTERM {old}, {new} started on its port"

    async def _resume_later(self, label: str) -> None:
        await asyncio.sleep(PAUSE_S)
        self.fleet.resume(label)


# ---------------------------------------------------------------------------------------------------
# The requests


@dataclass
class Call:
    """One request of the run, by either path."""

    index: int
    path: Route
    tag: str
    started: float = 0.0
    request_id: str | None = None
    """Kafka path: set before it is sent. Gateway path: from the response, when there is one."""
    accepted: bool = False
    """Kafka path: the broker acknowledged it."""
    attempts: int = 0
    gateway: str = ""
    outcome: str = ""
    """Gateway path: `result`, `client_error`, `lost`; empty while the call runs."""
    status: str = ""
    """The result's status, as the response says (gateway path)."""
    answer: str | None = None
    error: str = ""
    finished: float | None = None

    @property
    def prompt(self) -> str:
        return f"Say back {self.tag}"


@dataclass
class PathFigures:
    sent: int
    results: int
    lost: int
    duplicated: int
    mismatched: int
    client_errors: int
    statuses: dict[str, int]
    errors: dict[str, int]
    """Why calls failed, by kind (client errors and losses)."""
    latencies_ms: list[float] = field(repr=False)


@dataclass
class ChaosReport:
    sent: int
    results: int
    lost: int
    duplicated: int
    mismatched: int
    client_errors: int
    p50_ms: float
    p99_ms: float
    duration_s: float
    kafka: PathFigures
    gateway: PathFigures
    failed_calls_answered: int
    """Gateway calls that failed although their request got its result on the reply topic."""
    faults: list[FaultRecord]
    fault_counts: dict[str, int]
    lost_detail: list[dict[str, Any]]
    log_problems: dict[str, dict[str, int]]
    """Per service log: its error lines and tracebacks, by event."""
    reader_errors: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        """Every figure, without the latencies themselves."""
        data = asdict(self)
        for route in ("kafka", "gateway"):
            del data[route]["latencies_ms"]
        return data

    def line(self) -> str:
        return (
            f"sent={self.sent} results={self.results} lost={self.lost} duplicated={self.duplicated}"
            f" mismatched={self.mismatched} client_errors={self.client_errors}"
            f" p50_ms={self.p50_ms:.0f} p99_ms={self.p99_ms:.0f}"
        )

    def details(self) -> str:
        """The rest, for people: each path, each fault, and whatever went wrong."""
        lines = []
        for name, figures in (("kafka", self.kafka), ("gateway", self.gateway)):
            lines.append(
                f"  {name}: sent={figures.sent} results={figures.results} lost={figures.lost}"
                f" duplicated={figures.duplicated} mismatched={figures.mismatched}"
                f" client_errors={figures.client_errors} statuses={figures.statuses}"
                + (f" errors={figures.errors}" if figures.errors else "")
            )
        if self.failed_calls_answered:
            with_result = self.failed_calls_answered
            lines.append(f"  gateway calls that failed although their result was published: {with_result}")
        lines.append(f"  faults ({self.duration_s:.0f} s run):")
        lines += [f"    {f.at_s:6.1f} s  {f.what}  ({f.took_s:.1f} s)" for f in self.faults]
        for detail in self.lost_detail:
            lines.append(f"  lost: {json.dumps(detail)}")
        for label, problems in sorted(self.log_problems.items()):
            lines.append(f"  log {label}: {dict(problems)}")
        if self.reader_errors:
            lines.append(f"  result readers' errors: {self.reader_errors}")
        return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 to 1) of `values`; NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else math.nan


@dataclass
class ChaosConfig:
    requests: int
    rate: float
    kills: int = 2
    """SIGKILLs per service type."""
    pauses: int = 2
    seed: int = 1
    ports: Ports = field(default_factory=Ports)


class Display:
    """The run's progress: live bars and a status line on a terminal, the status line every
    `PLAIN_EVERY_S` elsewhere (a log file, CI); nothing when not enabled (the tests)."""

    PLAIN_EVERY_S = 10.0

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.live = enabled and sys.stdout.isatty()
        self._total = total
        self._began = time.monotonic()
        self._printed_at = -math.inf
        self._progress = Progress(
            TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        self._sent = self._progress.add_task("sent", total=total)
        self._answered = self._progress.add_task("answered", total=total)
        self._status = Text()
        self._live = Live(Group(self._progress, self._status), refresh_per_second=4, transient=True)

    def __enter__(self) -> "Display":
        if self.live:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self._live.__exit__(None, None, None)

    def update(self, sent: int, answered: int, status: str, force: bool = False) -> None:
        if self.live:
            self._progress.update(self._sent, completed=sent)
            self._progress.update(self._answered, completed=answered)
            self._status.plain = status
        elif self.enabled and (force or time.monotonic() - self._printed_at >= self.PLAIN_EVERY_S):
            self._printed_at = time.monotonic()
            elapsed = self._printed_at - self._began
            print(f"[{elapsed:4.0f} s] sent {sent}/{self._total} answered {answered} · {status}", flush=True)


async def run_chaos(
    cluster: Cluster, services: Services, config: ChaosConfig, *, show_progress: bool = False
) -> ChaosReport:
    """The whole run on a cluster whose topics exist (`create_cluster_topics`) with the stand-in models
    up: starts the fleet (its logs in `services.log_dir`), sends the requests while the faults run,
    waits for the results, stops the fleet, reports."""
    run = _Run(cluster, services, config)
    try:
        return await run.go(show_progress)
    finally:
        await run.close()


class _Run:
    def __init__(self, cluster: Cluster, services: Services, config: ChaosConfig) -> None:
        self.cluster = cluster
        self.config = config
        self.rng = random.Random(config.seed)
        """The faults and their targets; the gateway each call goes to is drawn from `routing`."""
        self.routing = random.Random(config.seed + 1)
        self.results = ResultLog(cluster.bootstrap)
        self.fleet = Fleet(services, cluster, self.results, config.ports)
        self.calls = [
            Call(
                i,
                "gateway" if i % 2 == 0 else "kafka",
                f"[chaos-{config.seed}-{'gk'[i % 2]}{i:05d}-{self.rng.getrandbits(24):06x}]",
            )
            for i in range(config.requests)
        ]
        self._sdks: dict[int, tuple[int, openai.AsyncOpenAI]] = {}
        self._old_sdks: list[openai.AsyncOpenAI] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()

    async def go(self, show_progress: bool) -> ChaosReport:
        config = self.config
        # Unwound in reverse: the readers stop before the fleet, whose gateways delete their topics.
        self._stack.push_async_callback(self.fleet.stop_all)
        self._stack.push_async_callback(self.results.close)
        partitions = cluster_settings(self.cluster.bootstrap)
        await self.results.tap(topics.RESULTS, partitions.partitions_results)
        await self.results.tap_requests(partitions.partitions_requests)
        await self.fleet.start_all()
        client_settings = cluster_settings(self.fleet.bootstrap())
        client = await self._stack.enter_async_context(FusionClient(client_settings))
        self._stack.push_async_callback(self._close_sdks)
        await asyncio.sleep(3.0)  # the groups settle after the instances' joins

        window_s = config.requests / config.rate
        started = time.monotonic()
        disruptor = Disruptor(
            self.fleet, plan_faults(window_s, config.kills, config.pauses, self.rng), self.rng, started
        )
        faults = asyncio.create_task(disruptor.run(), name="faults")
        self._tasks.append(faults)
        tasks = self._tasks
        with Display(show_progress, config.requests) as display:

            def refresh(force: bool = False) -> None:
                current = disruptor.current or (disruptor.done[-1].what if disruptor.done else "none yet")
                counts = " ".join(f"{s}={n}" for s, n in self.fleet.counts().items())
                errors = sum(1 for c in self.calls if c.outcome == "client_error")
                display.update(
                    sum(1 for c in self.calls if c.started),
                    self._answered(),
                    f"fault {len(disruptor.done)}/{len(disruptor.faults)}: {current} · {counts}"
                    f" · paused {sorted(self.fleet.paused) or '-'} · failed calls {errors}",
                    force,
                )

            for call in self.calls:
                await asyncio.sleep(max(started + call.index / config.rate - time.monotonic(), 0))
                if faults.done() and faults.exception() is not None:
                    break
                call.started = time.monotonic()
                send = self._send_kafka(call, client) if call.path == "kafka" else self._call_gateway(call)
                tasks.append(asyncio.create_task(send))
                if call.index % 4 == 0:
                    refresh()
            while not faults.done():
                await asyncio.sleep(0.25)
                refresh()
            faults.result()  # a fault that failed fails the run
            deadline = time.monotonic() + DEADLINE_S + 45
            while not self._all_answered() and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                refresh()
            finished = time.monotonic()
            await asyncio.sleep(DUPLICATE_WAIT_S)
            refresh(force=True)
        try:
            lost = await self._trace_lost()
        except (KafkaError, RuntimeError) as error:  # the trace is a diagnosis: the counts stand without it
            lost = [{"trace_failed": repr(error)}]
        return self._report(finished - started, disruptor, lost)

    # -- sending

    async def _send_kafka(self, call: Call, client: FusionClient) -> None:
        request = FusionRequest(
            messages=[ChatMessage(role="user", content=call.prompt)],
            preset=PRESET,
            policy=Policy(deadline_s=DEADLINE_S),
        )
        call.request_id = request.request_id
        give_up = call.started + ACCEPT_S
        while True:
            call.attempts += 1
            try:
                await asyncio.wait_for(client.submit(request), timeout=15)
                call.accepted = True
                return
            except (KafkaError, TimeoutError) as error:
                call.error = f"{type(error).__name__}: {error}"[:200]
                if time.monotonic() > give_up:
                    call.outcome = "client_error"
                    return
                await asyncio.sleep(0.5)

    def _sdk(self, slot: int) -> openai.AsyncOpenAI:
        """The slot's client, with a new connection pool each time a gateway (re)started on the slot:
        a pool's connections to a gateway that died are dead. The old client's calls run on."""
        epoch = self.fleet.epoch[slot]
        if slot in self._sdks and self._sdks[slot][0] == epoch:
            return self._sdks[slot][1]
        if slot in self._sdks:
            self._old_sdks.append(self._sdks[slot][1])
        sdk = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{self.config.ports.gateways[slot]}/v1",
            api_key="chaos",
            max_retries=0,  # one call, one attempt: a retry would be another request
            timeout=DEADLINE_S + 60,  # past the gateway's own 504 (deadline + 5 s)
        )
        self._sdks[slot] = (epoch, sdk)
        return sdk

    async def _close_sdks(self) -> None:
        for sdk in [*(sdk for _, sdk in self._sdks.values()), *self._old_sdks]:
            await sdk.close()

    async def _call_gateway(self, call: Call) -> None:
        while not self.fleet.gateways_up:  # noqa: ASYNC110 - never both at once, but a kill can overlap
            await asyncio.sleep(0.1)
        slot = self.routing.choice(sorted(self.fleet.gateways_up))
        call.gateway = self.fleet.gateways_up[slot].label
        try:
            response = await self._sdk(slot).chat.completions.create(
                model=GATEWAY_MODEL,
                messages=[{"role": "user", "content": call.prompt}],
                extra_body={"fusion": {"deadline_s": DEADLINE_S}},
            )
        except openai.APIConnectionError as error:
            call.outcome, call.error = "client_error", f"connection: {type(error).__name__}"
            if isinstance(error.__cause__, BaseException):
                call.error += f" ({type(error.__cause__).__name__})"
        except openai.APIStatusError as error:
            self._status_error(call, error)
        else:
            fusion = (response.model_extra or {}).get("fusion") or {}
            call.outcome, call.status = "result", str(fusion.get("status", "?"))
            call.request_id = fusion.get("request_id") or response.id.removeprefix("chatcmpl-")
            call.answer = response.choices[0].message.content if response.choices else None
        call.finished = time.monotonic()

    @staticmethod
    def _status_error(call: Call, error: openai.APIStatusError) -> None:
        body = error.body if isinstance(error.body, dict) else {}
        fusion = body.get("fusion") if isinstance(body.get("fusion"), dict) else None
        code = error.status_code
        call.error = f"{code}: {error.message}"[:300]
        if code == 400 or (code == 502 and fusion is not None):
            # Every request of the run is valid: a 400 is a rejected result, a 502 a failed one.
            call.outcome, call.status = "result", "rejected" if code == 400 else "failed"
            call.request_id = fusion.get("request_id") if fusion else None
        elif code in (429, 503):
            call.outcome = "client_error"  # the gateway full, or Kafka did not take it: never accepted
        else:
            call.outcome = "lost"  # 504: accepted and no result by its deadline; anything else unexplained

    # -- watching

    def _answered(self) -> int:
        """Calls that are done: a result, or a client error (the request never reached Kafka)."""
        return sum(1 for call in self.calls if self._verdict(call) in ("result", "client_error"))

    def _verdict(self, call: Call) -> Literal["result", "lost", "client_error", "running"]:
        """What became of the call, as of now.

        Kafka path: a result once one is on fusion.results; a client error if the broker never took
        it. Gateway path: a result once the SDK returned one or one is on a reply topic (a call whose
        gateway died under it can still have been answered there); a client error if the call failed
        and its request never reached fusion.requests (the gateway died before publishing it, or
        answered 503). Anything else accepted and unanswered is lost."""
        if call.path == "kafka":
            if call.request_id in self.results.by_request:
                return "result"
            if call.outcome == "client_error":
                return "client_error"
            return "lost" if call.accepted else "running"
        if call.outcome == "result" or self._seen(call):
            return "result"
        if not call.outcome:
            return "running"
        return "lost" if call.tag in self.results.requests_by_tag else "client_error"

    def _request_ids(self, call: Call) -> set[str]:
        """The ids the call's request was published under (one, unless something went wrong)."""
        found = set(self.results.requests_by_tag.get(call.tag, ()))
        return found | {call.request_id} if call.request_id else found

    def _seen(self, call: Call) -> list[Seen]:
        """Every result on Kafka of the call's request."""
        return [seen for r in sorted(self._request_ids(call)) for seen in self.results.by_request.get(r, [])]

    def _all_answered(self) -> bool:
        return self._answered() == len(self.calls)

    # -- after the run

    async def _trace_lost(self) -> list[dict[str, Any]]:
        """Where each lost request got to, from the topics themselves."""
        lost = [c for c in self.calls if self._is_lost(c)]
        if not lost:
            return []
        copies = self.results.requests_by_tag
        wanted = {request_id for call in lost for request_id in self._request_ids(call)}
        plans: Counter[str] = Counter()
        answers: Counter[str] = Counter()
        for record in await _read_topic(self.cluster.bootstrap, topics.ANSWERS, "read_uncommitted"):
            key = record.key.decode() if record.key else ""
            if key in wanted:
                kind = json.loads(record.value).get("kind")
                (plans if kind == "plan" else answers)[key] += 1
        tasks = Counter(
            key.split("/")[0]
            for record in await _read_topic(self.cluster.bootstrap, topics.TASKS, "read_uncommitted")
            if (key := record.key.decode() if record.key else "").split("/")[0] in wanted
        )
        markers = Counter(
            record.key.decode()
            for record in await _read_topic(self.cluster.bootstrap, topics.RELEASED, "read_uncommitted")
            if record.key and record.key.decode() in wanted
        )
        uncommitted = Counter(
            record.key.decode()
            for record in await _read_topic(self.cluster.bootstrap, topics.RESULTS, "read_uncommitted")
            if record.key and record.key.decode() in wanted
        )
        details = []
        for call in lost:
            found = sorted(self._request_ids(call))
            details.append(
                {
                    "path": call.path,
                    "tag": call.tag,
                    "gateway": call.gateway or None,
                    "error": call.error or None,
                    "sent_at_s": round(call.started - self.calls[0].started, 1),
                    "request_ids": found,
                    "copies_on_requests": {r: copies[call.tag][r] for r in found},
                    "plans": {r: plans[r] for r in found},
                    "tasks": {r: tasks[r] for r in found},
                    "answers": {r: answers[r] for r in found},
                    "markers": {r: markers[r] for r in found},
                    "results_uncommitted_or_committed_on_fusion.results": {r: uncommitted[r] for r in found},
                    "results_committed": {r: len(self.results.by_request.get(r, [])) for r in found},
                }
            )
        return details

    def _is_lost(self, call: Call) -> bool:
        return self._verdict(call) in ("lost", "running")

    def _report(self, duration_s: float, disruptor: Disruptor, lost: list[dict[str, Any]]) -> ChaosReport:
        kafka = self._kafka_figures()
        gateway, with_result = self._gateway_figures()
        latencies = kafka.latencies_ms + gateway.latencies_ms
        return ChaosReport(
            sent=kafka.sent + gateway.sent,
            results=kafka.results + gateway.results,
            lost=kafka.lost + gateway.lost,
            duplicated=kafka.duplicated + gateway.duplicated,
            mismatched=kafka.mismatched + gateway.mismatched,
            client_errors=kafka.client_errors + gateway.client_errors,
            p50_ms=percentile(latencies, 0.5),
            p99_ms=percentile(latencies, 0.99),
            duration_s=round(duration_s, 1),
            kafka=kafka,
            gateway=gateway,
            failed_calls_answered=with_result,
            faults=disruptor.done,
            fault_counts=dict(disruptor.counts),
            lost_detail=lost,
            log_problems=log_problems(self.fleet.services.log_dir),
            reader_errors=dict(self.results.errors),
        )

    def _kafka_figures(self) -> PathFigures:
        calls = [c for c in self.calls if c.path == "kafka" and c.started]
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        latencies, results, duplicated, mismatched = [], 0, 0, 0
        for call in calls:
            seen = self.results.by_request.get(call.request_id or "", [])
            if not call.accepted:
                errors[f"not accepted: {call.error.split(':')[0]}"] += 1
                continue
            if not seen:
                errors["no result"] += 1
                continue
            results += 1
            duplicated += len(seen) - 1
            statuses[seen[0].result.status] += 1
            mismatched += sum(1 for s in seen if answers_tag(s.result, call.tag) is False)
            latencies.append((seen[0].at - call.started) * 1000)
        accepted = sum(1 for c in calls if c.accepted)
        return PathFigures(
            sent=len(calls),
            results=results,
            lost=accepted - results,
            duplicated=duplicated,
            mismatched=mismatched,
            client_errors=len(calls) - accepted,
            statuses=dict(statuses),
            errors=dict(errors),
            latencies_ms=latencies,
        )

    def _gateway_figures(self) -> tuple[PathFigures, int]:
        """The gateway path's figures, and how many of its calls failed at the client although their
        request got its result (on its reply topic)."""
        calls = [c for c in self.calls if c.path == "gateway" and c.started]
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        latencies: list[float] = []
        verdicts: Counter[str] = Counter()
        duplicated, mismatched, answered_anyway = 0, 0, 0
        returned: Counter[str] = Counter()
        for call in calls:
            verdict = self._verdict(call)
            verdicts[verdict] += 1
            seen = self._seen(call)
            if call.outcome != "result":
                errors[f"{verdict}: {call.outcome or 'unfinished'}: {call.error.split(' (')[0] or '?'}"] += 1
            if verdict != "result":
                continue
            duplicated += max(len(seen) - 1, 0)
            mismatched += sum(1 for s in seen if answers_tag(s.result, call.tag) is False)
            if call.outcome == "result":
                statuses[call.status] += 1
                returned[call.request_id or ""] += 1
                if call.answer is not None and set(TAG.findall(call.answer)) != {call.tag}:
                    mismatched += 1
                if call.finished is not None:
                    latencies.append((call.finished - call.started) * 1000)
            else:
                answered_anyway += 1
                statuses[seen[0].result.status] += 1
                latencies.append((seen[0].at - call.started) * 1000)
        duplicated += sum(n - 1 for r, n in returned.items() if r)  # two calls given one request's result
        return (
            PathFigures(
                sent=len(calls),
                results=verdicts["result"],
                lost=verdicts["lost"] + verdicts["running"],
                duplicated=duplicated,
                mismatched=mismatched,
                client_errors=verdicts["client_error"],
                statuses=dict(statuses),
                errors=dict(errors),
                latencies_ms=latencies,
            ),
            answered_anyway,
        )


async def _topic_exists(bootstrap: str, topic: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        return topic in await admin.list_topics()
    finally:
        await admin.close()


async def _read_topic(bootstrap: str, topic: str, isolation: str) -> list[Any]:
    """Every record of every partition of `topic`, from its beginning to its end as of now."""
    # The partitions from the broker (a consumer without a subscription holds no topic's metadata);
    # a broker just restarted can answer without them for a while, so ask again.
    for _ in range(30):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        known = sorted(p["partition"] for entry in described for p in entry.get("partitions") or ())
        if known:
            break
        await asyncio.sleep(1.0)
    else:
        raise RuntimeError(f"no metadata for {topic!r} after 30 attempts")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation,
        max_partition_fetch_bytes=limits.MAX_MESSAGE_BYTES,
    )
    await consumer.start()
    try:
        return await _read_all(consumer, [TopicPartition(topic, p) for p in known])
    finally:
        await stop_consumer(consumer)


async def _read_all(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> list[Any]:
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(partitions)
    records: list[Any] = []
    deadline = time.monotonic() + 60
    pending = set(partitions)
    while pending and time.monotonic() < deadline:
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(batch)
        pending = {p for p in pending if await consumer.position(p) < ends[p]}
    return records


_PROBLEM_LEVELS = ("warning", "error", "critical")
_CLIENT_NOISE = (
    "Unable connect to node",
    "Failed fetch messages from",
    "Group Coordinator Request failed",
    "Heartbeat",
    "Error sending",
    "OffsetCommit failed",
    "Unable to request metadata",
    "coordinator dead",
    "Topic metadata",
)
"""aiokafka's own lines about a broker that is gone or a group that rebalances: the faults at work.
They are counted together, as `kafka client: connection and group errors`."""


def log_problems(log_dir: Path) -> dict[str, dict[str, int]]:
    """Each service log's warnings, errors and tracebacks, counted by level and event (its first 80
    characters); aiokafka's connection and group errors counted as one."""
    problems: dict[str, dict[str, int]] = {}
    for path in sorted(log_dir.glob("*.log")):
        found: Counter[str] = Counter()
        for line in path.read_text(errors="replace").splitlines():
            event = _problem(line)
            if event is not None:
                found[event] += 1
        if found:
            problems[path.stem] = dict(found)
    return problems


def _problem(line: str) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return "Traceback (not logged)" if line.startswith("Traceback") else None
    if not isinstance(entry, dict):
        return None
    traceback = "exception" in entry
    if entry.get("level") not in _PROBLEM_LEVELS and not traceback:
        return None
    event = str(entry.get("event"))
    if any(noise in event for noise in _CLIENT_NOISE) and not traceback:
        return "kafka client: connection and group errors"
    return f"{entry.get('level')}: {event.splitlines()[0][:80]}" + (" (traceback)" if traceback else "")
