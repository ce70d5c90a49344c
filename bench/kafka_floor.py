"""The floor under Fusion's overhead: what one Kafka hop costs on this machine, with no Fusion code.

    python -m bench.kafka_floor

Starts the bench broker (test port) and measures, with bare aiokafka clients, after a warm-up:
a produce acknowledgement, a produce-to-consume hop, and a transaction like the judge's (two sends,
commit) until a `read_committed` consumer sees it. One fused request needs three plain hops (request,
task, answer) and one transactional hop (result) on its critical path. Writes
bench/results/kafka_floor.json.
"""

import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from tests.support.stack import BOOTSTRAP, KAFKA_PORT, run_infra

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLES = 500
WARM_UP = 300


async def timed(step: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    for i in range(WARM_UP):
        await step(i)
    values = []
    for i in range(SAMPLES):
        started = time.perf_counter()
        await step(WARM_UP + i)
        values.append((time.perf_counter() - started) * 1000)
    values.sort()
    return {"p50": statistics.median(values), "p99": values[int(len(values) * 0.99)]}


async def until_seen(consumer: AIOKafkaConsumer, value: bytes) -> None:
    while (await consumer.getone()).value != value:
        pass


async def measure() -> dict[str, dict[str, float]]:
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

    async def ack(i: int) -> None:
        await plain.send_and_wait("floor.b", b"x" * 800)

    async def hop(i: int) -> None:
        await plain.send("floor.a", f"hop-{i}".encode())
        await until_seen(reader, f"hop-{i}".encode())

    async def transaction(i: int) -> None:
        async with txn.transaction():
            await txn.send("floor.a", f"txn-{i}".encode())
            await txn.send("floor.b", b"marker")
        await until_seen(reader, f"txn-{i}".encode())

    try:
        return {
            "produce_ack_ms": await timed(ack),
            "produce_to_consume_ms": await timed(hop),
            "transaction_to_read_committed_ms": await timed(transaction),
        }
    finally:
        for client in (plain, txn, reader):
            await client.stop()


def main() -> None:
    run_infra("kafka.sh", "reset", KAFKA_PORT=str(KAFKA_PORT))
    run_infra("kafka.sh", "start", KAFKA_PORT=str(KAFKA_PORT))
    try:
        figures = uvloop.run(measure())
    finally:
        run_infra("kafka.sh", "stop", KAFKA_PORT=str(KAFKA_PORT))
    hops = figures["produce_to_consume_ms"]["p50"]
    critical_path = 3 * hops + figures["transaction_to_read_committed_ms"]["p50"]
    table = Table(title=f"Kafka floor (bare aiokafka, {SAMPLES} samples after {WARM_UP} warm-up)")
    for column in ("step", "p50 ms", "p99 ms"):
        table.add_column(column)
    for name, values in figures.items():
        table.add_row(name, f"{values['p50']:.2f}", f"{values['p99']:.2f}")
    table.add_row("critical path: 3 hops + 1 transaction", f"{critical_path:.2f}", "")
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    out = {**figures, "critical_path_p50_ms": critical_path}
    (RESULTS / "kafka_floor.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
