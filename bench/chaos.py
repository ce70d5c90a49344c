"""`make chaos`: requests through the stack while its processes are killed and the broker restarts.

N requests go in at a steady rate (stand-in models with 0.2-1.5 s of latency per member call). While
they run, every service type is killed with SIGKILL at random moments (and started again at once),
and the broker is restarted once. At the end every request must have exactly one result.

    python -m bench.chaos [--requests 500] [--rate 8] [--kills 2] [--seed 1]

Prints `sent=N results=N lost=0 duplicated=0 kills=K broker_restarts=1 p50_ms=… p99_ms=…` and writes the
same as JSON to bench/results/chaos.json.
"""

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from aiokafka.errors import KafkaError
from fusion.client import FusionClient
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, Policy
from rich.live import Live
from rich.text import Text

from bench.figures import percentile
from bench.stack import Stack, running_stack
from tests.support.stack import KAFKA_PORT, Services, run_infra

RESULTS = Path(__file__).resolve().parent / "results"
SERVICES = ("dispatcher", "panel-worker", "judge")
DEADLINE_S = 90.0


@dataclass
class ChaosReport:
    sent: int
    results: int
    lost: int
    duplicated: int
    kills: int
    broker_restarts: int
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]

    def line(self) -> str:
        return (
            f"sent={self.sent} results={self.results} lost={self.lost} duplicated={self.duplicated}"
            f" kills={self.kills} broker_restarts={self.broker_restarts}"
            f" p50_ms={self.p50_ms:.0f} p99_ms={self.p99_ms:.0f}"
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
) -> ChaosReport:
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
    return ChaosReport(
        sent=len(sent_at),
        results=len(received),
        lost=len(sent_at) - len(received),
        duplicated=sum(seen[rid] - 1 for rid in received),
        kills=counts["kills"],
        broker_restarts=counts["broker_restarts"],
        p50_ms=percentile(list(latencies.values()), 0.5),
        p99_ms=percentile(list(latencies.values()), 0.99),
        statuses=statuses,
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    parser.add_argument("--kills", type=int, default=2, help="kills per service type")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    async def go(stack: Stack) -> ChaosReport:
        async with FusionClient(stack.settings) as client:
            return await run_chaos(
                client, stack.services, args.requests, args.rate, kills_per_service=args.kills, seed=args.seed
            )

    with tempfile.TemporaryDirectory() as scratch, running_stack(Path(scratch), gateways=0) as stack:
        report = asyncio.run(go(stack))
    print(report.line())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chaos.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    raise SystemExit(0 if report.lost == 0 and report.duplicated == 0 else 1)


if __name__ == "__main__":
    main()
