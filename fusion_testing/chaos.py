"""Requests through the stack while its services are killed and the broker restarts; at the end every
request must have exactly one result. `make chaos` runs it long (bench/chaos.py), the tests short
(tests/integration/test_reliability.py).

Requests go in at a steady rate. While they run, every service type is killed with SIGKILL at random
moments (and started again at once), and the broker is restarted once.
"""

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka.errors import KafkaError
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, Policy
from rich.live import Live
from rich.text import Text

from fusion_testing.stack import KAFKA_PORT, Services, run_infra

SERVICES = ("dispatcher", "panel-worker", "judge")
DEADLINE_S = 90.0


@dataclass
class ChaosRun:
    sent: int
    results: int
    lost: int
    duplicated: int
    kills: int
    broker_restarts: int
    statuses: dict[str, int]
    latencies_ms: list[float]
    """Each request's, from its submission to its (first) result."""

    def line(self) -> str:
        return (
            f"sent={self.sent} results={self.results} lost={self.lost} duplicated={self.duplicated}"
            f" kills={self.kills} broker_restarts={self.broker_restarts}"
        )


def plan_disruptions(window_s: float, kills_per_service: int, rng: random.Random) -> list[tuple[float, str]]:
    """(seconds from the start, what) for every kill and the one broker restart, in time order."""
    events = [(rng.uniform(0.1, 0.9) * window_s, name) for name in SERVICES for _ in range(kills_per_service)]
    events.append((rng.uniform(0.3, 0.7) * window_s, "broker"))
    return sorted(events)


async def _disrupt(services: Services, events: list[tuple[float, str]], counts: dict[str, int]) -> None:
    started = time.monotonic()
    for at, what in events:
        await asyncio.sleep(max(at - (time.monotonic() - started), 0))
        if what == "broker":
            await asyncio.to_thread(run_infra, "kafka.sh", "stop", KAFKA_PORT=str(KAFKA_PORT))
            await asyncio.to_thread(run_infra, "kafka.sh", "start", KAFKA_PORT=str(KAFKA_PORT))
            counts["broker_restarts"] += 1
        else:
            services.kill(what)
            await asyncio.to_thread(services.start, what)
            counts["kills"] += 1


async def run_chaos(
    client: FusionClient, services: Services, requests: int, rate: float, *, kills_per_service: int, seed: int
) -> ChaosRun:
    """`requests` requests of the preset `chaos` at `rate` per second, while `services` are killed."""
    rng = random.Random(seed)
    window_s = requests / rate
    counts = {"kills": 0, "broker_restarts": 0}
    sent_at: dict[str, float] = {}
    latencies: dict[str, float] = {}
    futures: list[asyncio.Future[FusedResult]] = []
    disruptions = asyncio.create_task(
        _disrupt(services, plan_disruptions(window_s, kills_per_service, rng), counts)
    )

    def status() -> Text:
        return Text(
            f"sent {len(sent_at)}/{requests} · results {sum(f.done() for f in futures)}"
            f" · kills {counts['kills']} · broker restarts {counts['broker_restarts']}",
            style="cyan",
        )

    with Live(status(), refresh_per_second=4, transient=True) as live:
        start = time.monotonic()
        for i in range(requests):
            await asyncio.sleep(max(start + i / rate - time.monotonic(), 0))
            request = FusionRequest(
                messages=[ChatMessage(role="user", content=f"chaos {seed}/{i}")],
                preset="chaos",
                policy=Policy(deadline_s=DEADLINE_S),
            )
            sent_at[request.request_id] = time.monotonic()
            future = await _submit(client, request)
            future.add_done_callback(_timer(request.request_id, sent_at, latencies))
            futures.append(future)
            live.update(status())
        await disruptions
        deadline = time.monotonic() + DEADLINE_S + 30
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            live.update(status())
    await asyncio.sleep(5.0)  # room for a duplicate to show up
    seen = client.results.seen
    statuses: dict[str, int] = {}
    for future in futures:
        if future.done() and not future.cancelled():
            statuses[future.result().status] = statuses.get(future.result().status, 0) + 1
    received = [rid for rid in sent_at if seen[rid] > 0]
    return ChaosRun(
        sent=len(sent_at),
        results=len(received),
        lost=len(sent_at) - len(received),
        duplicated=sum(seen[rid] - 1 for rid in received),
        kills=counts["kills"],
        broker_restarts=counts["broker_restarts"],
        statuses=statuses,
        latencies_ms=list(latencies.values()),
    )


def _timer(
    request_id: str, sent_at: dict[str, float], latencies: dict[str, float]
) -> "Callable[[asyncio.Future[FusedResult]], None]":
    def done(_: "asyncio.Future[FusedResult]") -> None:
        latencies.setdefault(request_id, (time.monotonic() - sent_at[request_id]) * 1000)

    return done


async def _submit(client: FusionClient, request: FusionRequest) -> "asyncio.Future[FusedResult]":
    """Publishes, retrying while the broker restarts (a request counts once the broker has it). Sending
    the same request twice is harmless: the judge keeps one plan and one answer per member."""
    while True:
        try:
            return await asyncio.wait_for(client.submit(request), timeout=15)
        except (KafkaError, TimeoutError):
            await asyncio.sleep(0.5)
