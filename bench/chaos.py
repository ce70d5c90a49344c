"""`make chaos`: requests through the stack while its processes are killed and the broker restarts.

N requests go in at a steady rate (stand-in models with 0.2-1.5 s of latency per member call). While
they run, every service type is killed with SIGKILL at random moments (and started again at once),
and the broker is restarted once. At the end every request must have exactly one result. The run
itself is `fusion_testing.chaos`, which the tests run short.

    python -m bench.chaos [--requests 500] [--rate 8] [--kills 2] [--seed 1]

Prints `sent=N results=N lost=0 duplicated=0 kills=K broker_restarts=1 p50_ms=… p99_ms=…` and writes the
same as JSON to bench/results/chaos.json.
"""

import argparse
import asyncio
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from fusion.client import FusionClient

from bench.figures import percentile
from bench.stack import Stack, running_stack
from fusion_testing.chaos import ChaosRun, run_chaos

RESULTS = Path(__file__).resolve().parent / "results"


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

    @classmethod
    def of(cls, run: ChaosRun) -> "ChaosReport":
        return cls(
            sent=run.sent,
            results=run.results,
            lost=run.lost,
            duplicated=run.duplicated,
            kills=run.kills,
            broker_restarts=run.broker_restarts,
            p50_ms=percentile(run.latencies_ms, 0.5),
            p99_ms=percentile(run.latencies_ms, 0.99),
            statuses=run.statuses,
        )

    def line(self) -> str:
        return (
            f"sent={self.sent} results={self.results} lost={self.lost} duplicated={self.duplicated}"
            f" kills={self.kills} broker_restarts={self.broker_restarts}"
            f" p50_ms={self.p50_ms:.0f} p99_ms={self.p99_ms:.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    parser.add_argument("--kills", type=int, default=2, help="kills per service type")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    async def go(stack: Stack) -> ChaosRun:
        async with FusionClient(stack.settings) as client:
            return await run_chaos(
                client, stack.services, args.requests, args.rate, kills_per_service=args.kills, seed=args.seed
            )

    with tempfile.TemporaryDirectory() as scratch, running_stack(Path(scratch), gateways=0) as stack:
        report = ChaosReport.of(asyncio.run(go(stack)))
    print(report.line())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chaos.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    raise SystemExit(0 if report.lost == 0 and report.duplicated == 0 else 1)


if __name__ == "__main__":
    main()
