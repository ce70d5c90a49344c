"""The floor under Fusion's overhead for the design's flow (docs/architecture.md): the same processes,
Kafka crossings and model calls as Fusion, with nothing in them but bare aiokafka relays.

    python -m bench.relay_floor [--warm-up 90]

`make bench-floor` first measures single Kafka steps in one process (`bench.kafka_floor`). This
measures the whole flow as Fusion runs it, each stage its own process: a client publishes a request;
a dispatcher relay publishes a plan and three tasks; a panel-worker relay calls each member model
on the stand-in model server (one aiohttp session, as `fusion.models.transport`) and publishes its
answer; a judge relay gathers plan and answers, calls the judge model twice (the analysis, then the
final answer) and publishes the result with a released marker in one transaction, as Fusion's judge
does; the client reads it `read_committed`.
No FastStream, pydantic, httpx, tracing or metrics: the messages are small JSON dicts. Overhead is
measured as `make bench` measures Fusion's: end to end, less the slowest member's call and the
judge's, at 1 in flight with 20 ms models and at 100 in flight with `make bench`'s model latencies,
after the same 90 s warm-up.

So it shows what the design costs on this machine before Fusion's own work: where the relays miss a
target, no service code can meet it here. Writes bench/results/relay_floor.json.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from fusion.kafka.transactions import TXN_RETRY_BACKOFF_MS
from fusion.runtime import tune_garbage_collector
from rich.console import Console
from rich.table import Table

from bench.figures import percentile
from bench.stack import broker_pid
from bench.suite import RAMP_UP, WARM_UP_S, JitMeter, cpu_seconds, with_jit_progress
from fusion_testing.stack import BOOTSTRAP, KAFKA_PORT, ROOT, STANDIN_URL, run_infra, running_standin

RESULTS = Path(__file__).resolve().parent / "results"
REQUESTS, TASKS, ANSWERS, RESULTS_TOPIC, RELEASED = (
    "relay.requests",
    "relay.tasks",
    "relay.answers",
    "relay.results",
    "relay.released",
)
PARTITIONS = {REQUESTS: 4, TASKS: 12, ANSWERS: 8, RESULTS_TOPIC: 8, RELEASED: 8}
"""Fusion's default partition counts (`fusion.settings`)."""
ROLES = ("dispatcher", "panel-worker", "judge")

Latencies = tuple[list[float], list[float]]
"""The members' model times, and the judge's two calls' (its analysis, then the final answer), in ms."""


def fast_models() -> Latencies:
    """`make bench`'s `bench-fast` preset: three 20 ms members, a 20 ms judge."""
    return [20.0, 20.0, 20.0], [20.0, 20.0]


def realistic_models() -> Latencies:
    """`make bench`'s `bench-realistic` preset: members uniform in 300-900, 400-1200 and 200-1500 ms,
    the judge in 100-400 ms."""
    members = [random.uniform(300, 900), random.uniform(400, 1200), random.uniform(200, 1500)]
    return members, [random.uniform(100, 400), random.uniform(100, 400)]


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def decode(raw: bytes | None) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw or b"{}")
    return message


@dataclass
class Gathering:
    """A request's plan and answers at the judge relay."""

    expected: int | None = None
    judge_ms: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, message: dict[str, Any]) -> bool:
        """True when the plan and every answer are in."""
        if message["kind"] == "plan":
            self.expected, self.judge_ms = message["members"], message["judge_ms"]
        else:
            self.latencies.append(message["latency_ms"])
        return self.expected is not None and len(self.latencies) >= self.expected


def overhead_ms(elapsed_ms: float, result: dict[str, Any]) -> float:
    """As `bench.suite.overhead_ms`: end to end less the slowest member's and the judge's model time."""
    slowest: float = max(result["latencies"])
    judge: float = result["judge_latency_ms"]
    return elapsed_ms - slowest - judge


class Models:
    """Chat completions on the stand-in model server, whose model `sleep-<ms>` answers after <ms>."""

    def __init__(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024), json_serialize=json.dumps
        )
        self._url = f"{STANDIN_URL}/v1/chat/completions"

    async def call(self, ms: float) -> float:
        """One call of a model that takes `ms`: its latency as the services measure it, in ms."""
        body = {"model": f"sleep-{ms:.0f}", "messages": [{"role": "user", "content": "How fast is it?"}]}
        started = time.perf_counter()
        async with self._session.post(self._url, json=body) as response:
            response.raise_for_status()
            answer = await response.json()
        assert answer["choices"][0]["message"]["content"]
        return (time.perf_counter() - started) * 1000


async def consume(consumer: AIOKafkaConsumer, handle: Callable[[ConsumerRecord[bytes, bytes]], Any]) -> None:
    """Fetched batches, their records handled one by one, as Fusion's batch subscribers do."""
    while True:
        batches = await consumer.getmany(timeout_ms=500, max_records=100)
        pending = [handle(record) for records in batches.values() for record in records]
        await asyncio.gather(*(p for p in pending if p is not None))


async def dispatcher() -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True)
    consumer = AIOKafkaConsumer(
        REQUESTS, bootstrap_servers=BOOTSTRAP, group_id="relay-dispatcher", auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()

    async def plan(record: ConsumerRecord[bytes, bytes]) -> None:
        request = decode(record.value)
        members: list[float] = request["members"]
        sent = [
            await producer.send(
                ANSWERS,
                encode(
                    {
                        "kind": "plan",
                        "id": request["id"],
                        "members": len(members),
                        "judge_ms": request["judge_ms"],
                    }
                ),
                key=record.key,
            )
        ]
        for index, ms in enumerate(members):
            task = {"id": request["id"], "member": index, "ms": ms}
            sent.append(await producer.send(TASKS, encode(task), key=f"{request['id']}:{index}".encode()))
        await asyncio.gather(*sent)

    await consume(consumer, plan)


async def panel_worker() -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True)
    consumer = AIOKafkaConsumer(
        TASKS, bootstrap_servers=BOOTSTRAP, group_id="relay-panel-worker", auto_offset_reset="earliest"
    )
    models = Models()
    await producer.start()
    await consumer.start()
    calls: set[asyncio.Task[None]] = set()

    async def call(task: dict[str, Any]) -> None:
        latency = await models.call(task["ms"])
        answer = {"kind": "answer", "id": task["id"], "latency_ms": latency}
        await producer.send_and_wait(ANSWERS, encode(answer), key=task["id"].encode())

    def start(record: ConsumerRecord[bytes, bytes]) -> None:
        running = asyncio.create_task(call(decode(record.value)))
        calls.add(running)
        running.add_done_callback(calls.discard)

    await consume(consumer, start)


async def judge() -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        transactional_id="relay-judge",
        enable_idempotence=True,
        retry_backoff_ms=TXN_RETRY_BACKOFF_MS,
    )
    consumer = AIOKafkaConsumer(
        ANSWERS, bootstrap_servers=BOOTSTRAP, group_id="relay-judge", auto_offset_reset="earliest"
    )
    models = Models()
    await producer.start()
    await consumer.start()
    gatherings: dict[str, Gathering] = {}
    ready: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    fusing: set[asyncio.Task[None]] = set()

    async def fuse(request_id: str, gathering: Gathering) -> None:
        started = time.perf_counter()  # Fusion's judge times both calls as one, as here
        for ms in gathering.judge_ms:
            await models.call(ms)
        judge_latency = (time.perf_counter() - started) * 1000
        await ready.put(
            (
                request_id,
                {"id": request_id, "latencies": gathering.latencies, "judge_latency_ms": judge_latency},
            )
        )

    def gather(record: ConsumerRecord[bytes, bytes]) -> None:
        message = decode(record.value)
        gathering = gatherings.setdefault(message["id"], Gathering())
        if gathering.add(message):
            running = asyncio.create_task(fuse(message["id"], gatherings.pop(message["id"])))
            fusing.add(running)
            running.add_done_callback(fusing.discard)

    async def publish() -> None:
        """Results ready at the same time share one transaction, as in `fusion.judge.output`."""
        while True:
            batch = [await ready.get()]
            while not ready.empty():
                batch.append(ready.get_nowait())
            async with producer.transaction():
                for request_id, result in batch:
                    await producer.send(RESULTS_TOPIC, encode(result), key=request_id.encode())
                    await producer.send(RELEASED, b"", key=request_id.encode())

    publishing = asyncio.create_task(publish())
    try:
        await consume(consumer, gather)
    finally:
        publishing.cancel()


class Client:
    """Publishes requests and reads their results `read_committed`, as `FusionClient` does."""

    def __init__(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True)
        self._results = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, isolation_level="read_committed")
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        await self._results.start()
        self._results.assign([TopicPartition(RESULTS_TOPIC, p) for p in range(PARTITIONS[RESULTS_TOPIC])])
        await self._results.seek_to_end()
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._producer.stop()
        await self._results.stop()

    async def _read(self) -> None:
        while True:
            batches = await self._results.getmany(timeout_ms=500)
            for record in (r for records in batches.values() for r in records):
                result = decode(record.value)
                if (future := self._waiting.pop(result["id"], None)) is not None:
                    future.set_result(result)

    async def fuse(self, models: Latencies) -> tuple[float, dict[str, Any]]:
        """One request end to end: the time it took in ms, and its result."""
        self._next += 1
        request_id = f"r{self._next}"
        members, judge_ms = models
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        started = time.perf_counter()
        request = {"id": request_id, "members": members, "judge_ms": judge_ms}
        await self._producer.send(REQUESTS, encode(request), key=request_id.encode())
        result = await asyncio.wait_for(future, 60)
        return (time.perf_counter() - started) * 1000, result


async def closed_loop(
    client: Client, models: Callable[[], Latencies], concurrency: int, duration_s: float
) -> list[float]:
    """Overheads of the requests sent after the ramp-up (as `bench.suite.measure_overhead`)."""
    started = time.monotonic()
    counted_from, stop_at = started + duration_s * RAMP_UP, started + duration_s
    overheads: list[float] = []

    async def caller() -> None:
        while (sent := time.monotonic()) < stop_at:
            elapsed, result = await client.fuse(models())
            if sent >= counted_from:
                overheads.append(overhead_ms(elapsed, result))

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return overheads


async def measure(warm_up_s: float, pids: dict[str, int]) -> dict[str, Any]:
    client = Client()
    await client.start()
    try:
        await asyncio.wait_for(client.fuse(fast_models()), 60)  # every relay has joined its group
        print(f"warming up: {warm_up_s:.0f} s at 50 in flight ...", flush=True)
        await with_jit_progress(closed_loop(client, fast_models, 50, warm_up_s), JitMeter(broker_pid()))
        out: dict[str, Any] = {"warm_up_s": warm_up_s}
        for key, models, concurrency, duration_s in (
            ("overhead_single_ms", fast_models, 1, 20.0),
            ("overhead_ms", realistic_models, 100, 30.0),
        ):
            print(f"measuring {key} ({concurrency} in flight, {duration_s:.0f} s) ...", flush=True)
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            overheads = await closed_loop(client, models, concurrency, duration_s)
            spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            out[key] = {
                "p50": percentile(overheads, 0.5),
                "p99": percentile(overheads, 0.99),
                "n": len(overheads),
                "cores_busy": {name: seconds / duration_s for name, seconds in spent.items()},
            }
        return out
    finally:
        await client.stop()


async def create_topics() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, count, 1) for name, count in PARTITIONS.items()])
    finally:
        await admin.close()


@contextlib.contextmanager
def relays() -> Iterator[dict[str, int]]:
    """The stand-in model server, as `make bench` starts it, and the three relays, as processes; yields
    every process of the run by name (with the broker and this client)."""
    with running_standin() as standin:
        processes = [
            subprocess.Popen([sys.executable, "-m", "bench.relay_floor", "--role", role], cwd=ROOT)
            for role in ROLES
        ]
        try:
            pids = {"stand-in models": standin.pid, "bench client": os.getpid()}
            pids |= {role: process.pid for role, process in zip(ROLES, processes, strict=True)}
            if (broker := broker_pid()) is not None:
                pids["broker"] = broker
            yield pids
        finally:
            for process in processes:
                process.kill()
                process.wait()


def report(out: dict[str, Any]) -> None:
    fusion_path = RESULTS / "bench.json"
    fusion = json.loads(fusion_path.read_text()) if fusion_path.exists() else {}
    table = Table(title="The design's flow on bare aiokafka relays (ms), and Fusion's last `make bench`")
    for column in ("figure", "relays", "Fusion (bench.json)", "target"):
        table.add_column(column)
    for key, quantile, target in (
        ("overhead_single_ms", "p50", "≤ 10"),
        ("overhead_ms", "p50", "≤ 15"),
        ("overhead_ms", "p99", "≤ 60"),
    ):
        theirs = fusion.get(key, {}).get(quantile)
        table.add_row(
            f"{key}.{quantile}",
            f"{out[key][quantile]:.1f}",
            "" if theirs is None else f"{theirs:.1f}",
            target,
        )
    Console().print(table)
    busy = Table(title="Cores busy while measured, by process (of 2)")
    busy.add_column("process")
    for key in ("overhead_single_ms", "overhead_ms"):
        busy.add_column(f"{key} ({out[key]['n']} requests)")
    for name in out["overhead_ms"]["cores_busy"]:
        busy.add_row(
            name, *(f"{out[key]['cores_busy'][name]:.2f}" for key in ("overhead_single_ms", "overhead_ms"))
        )
    Console().print(busy)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=ROLES, help="run one relay (the benchmark starts them)")
    parser.add_argument("--warm-up", type=float, default=WARM_UP_S, help="seconds at 50 in flight first")
    args = parser.parse_args()
    if args.role:
        role = {"dispatcher": dispatcher, "panel-worker": panel_worker, "judge": judge}[args.role]
        tune_garbage_collector()
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(role())
        return
    run_infra("kafka.sh", "reset", KAFKA_PORT=str(KAFKA_PORT))
    run_infra("kafka.sh", "start", KAFKA_PORT=str(KAFKA_PORT))
    try:
        uvloop.run(create_topics())
        with relays() as pids:
            tune_garbage_collector()
            out = uvloop.run(measure(args.warm_up, pids))
    finally:
        run_infra("kafka.sh", "stop", KAFKA_PORT=str(KAFKA_PORT))
    report(out)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "relay_floor.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
