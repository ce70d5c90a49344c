"""The floor under Fusion's overhead: what Kafka alone costs on this machine, with no Fusion code.

    python -m bench.kafka_floor

Starts the bench broker (test port) and warms it up as `make bench` does, then measures with bare
aiokafka clients a produce acknowledgement, a produce-to-consume hop, and a transaction like the
judge's (two sends, commit) until a `read_committed` consumer sees it. Each is measured two ways:

- back to back, the next step starting as the last ends: the broker's cost on a busy machine;
- after 20 ms idle, as a request sent alone meets the hops that follow a model call (the answer and
  the result): the machine has slept, and every process a message wakes must run again.

One fused request needs three plain hops (request, task, answer) and one transactional hop (result)
on its critical path. Writes bench/results/kafka_floor.json.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from bench.figures import percentile
from bench.stack import broker_pid
from bench.suite import WARM_UP_S, JitMeter, with_jit_progress
from fusion_testing.stack import BOOTSTRAP, KAFKA_PORT, run_infra

RESULTS = Path(__file__).resolve().parent / "results"
BACK_TO_BACK_SAMPLES = 500
AFTER_IDLE_SAMPLES = 300
IDLE_MS = 20.0
"""The stand-in's fast models answer in 20 ms: the benchmark's requests at 1 in flight."""

LABELS = {
    "produce_ack_ms": "produce acknowledged",
    "produce_to_consume_ms": "produced → consumed",
    "transaction_to_read_committed_ms": "transaction → read_committed",
}

Step = Callable[[int], Awaitable[None]]


async def timed(step: Step, samples: int, idle_s: float, first: int) -> dict[str, float]:
    values = []
    for i in range(samples):
        if idle_s:
            await asyncio.sleep(idle_s)
        started = time.perf_counter()
        await step(first + i)
        values.append((time.perf_counter() - started) * 1000)
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99)}


async def warm_up(steps: list[Step], duration_s: float) -> int:
    """The steps back to back for `duration_s`, with the broker's JIT compiler's CPU every 15 s:
    measured on a cold broker, a hop cost 2-6 times as much, and differed from run to run."""

    async def back_to_back() -> int:
        stop_at, rounds = time.monotonic() + duration_s, 0
        while time.monotonic() < stop_at:
            for step in steps:
                await step(-1 - rounds)
            rounds += 1
        return rounds

    return await with_jit_progress(back_to_back(), JitMeter(broker_pid()))


async def measure() -> dict[str, Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    await admin.create_topics([NewTopic(name, 1, 1) for name in ("floor.a", "floor.b")])
    await admin.close()
    plain = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=True)
    txn = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, transactional_id="floor", enable_idempotence=True, retry_backoff_ms=5
    )
    reader = AIOKafkaConsumer("floor.a", bootstrap_servers=BOOTSTRAP, isolation_level="read_committed")
    for client in (plain, txn, reader):
        await client.start()
    await reader.seek_to_end()

    async def until_seen(value: bytes) -> None:
        while (await reader.getone()).value != value:
            pass

    async def ack(i: int) -> None:
        await plain.send_and_wait("floor.b", b"x" * 800)

    async def hop(i: int) -> None:
        await plain.send("floor.a", f"hop-{i}".encode())
        await until_seen(f"hop-{i}".encode())

    async def transaction(i: int) -> None:
        async with txn.transaction():
            await txn.send("floor.a", f"txn-{i}".encode())
            await txn.send("floor.b", b"marker")
        await until_seen(f"txn-{i}".encode())

    steps = {
        "produce_ack_ms": ack,
        "produce_to_consume_ms": hop,
        "transaction_to_read_committed_ms": transaction,
    }
    try:
        print(f"warming the broker up: {WARM_UP_S:.0f} s of these steps back to back ...", flush=True)
        rounds = await warm_up(list(steps.values()), WARM_UP_S)
        out: dict[str, Any] = {"warm_up_s": WARM_UP_S, "warm_up_rounds": rounds, "idle_ms": IDLE_MS}
        print(f"measuring back to back, then each after {IDLE_MS:.0f} ms idle ...", flush=True)
        for mode, samples, idle_s, first in (
            ("back_to_back", BACK_TO_BACK_SAMPLES, 0.0, 0),
            ("after_idle", AFTER_IDLE_SAMPLES, IDLE_MS / 1000, BACK_TO_BACK_SAMPLES),
        ):
            out[mode] = {name: await timed(step, samples, idle_s, first) for name, step in steps.items()}
        return out
    finally:
        for client in (plain, txn, reader):
            await client.stop()


def critical_path_ms(figures: dict[str, dict[str, float]]) -> float:
    """A fused request's four crossings: three plain hops and one transaction."""
    return 3 * figures["produce_to_consume_ms"]["p50"] + figures["transaction_to_read_committed_ms"]["p50"]


def main() -> None:
    run_infra("kafka.sh", "reset", KAFKA_PORT=str(KAFKA_PORT))
    run_infra("kafka.sh", "start", KAFKA_PORT=str(KAFKA_PORT))
    try:
        out = uvloop.run(measure())
    finally:
        run_infra("kafka.sh", "stop", KAFKA_PORT=str(KAFKA_PORT))
    modes = ("back_to_back", "after_idle")
    out["critical_path_p50_ms"] = {mode: critical_path_ms(out[mode]) for mode in modes}
    table = Table(title=f"Kafka floor: bare aiokafka, warm broker ({WARM_UP_S:.0f} s warm-up), ms")
    for column in ("step", "back to back p50", "p99", f"after {IDLE_MS:.0f} ms idle p50", "p99"):
        table.add_column(column)
    for name, label in LABELS.items():
        table.add_row(label, *(f"{out[mode][name][q]:.2f}" for mode in modes for q in ("p50", "p99")))
    paths = out["critical_path_p50_ms"]
    table.add_row(
        "3 hops + 1 transaction", f"{paths['back_to_back']:.2f}", "", f"{paths['after_idle']:.2f}", ""
    )
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kafka_floor.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
