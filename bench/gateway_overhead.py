"""How much latency the gateway adds: the same fusions through the gateway (HTTP, OpenAI format) and
straight through Kafka (FusionClient), with the stand-in model server, alternating one at a time.

Starts its own broker, stand-in server, services and gateway (test ports), prints a table, and writes
bench/results/gateway.json and bench/results/gateway.png.

    python -m bench.gateway_overhead [--requests 200]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import uvloop
from fusion.client import FusionClient
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusionRequest
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.figures import percentile
from bench.stack import running_stack

RESULTS = Path(__file__).resolve().parent / "results"


async def measure(settings: Settings, gateway: str, requests: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"direct": [], "gateway": []}
    body = {"model": "fusion/standin", "messages": [{"role": "user", "content": "How fast?"}]}
    async with FusionClient(settings) as client, httpx.AsyncClient(timeout=30) as http:
        for _ in range(10):  # warm up both paths: connections, consumer fetch sessions
            await client.fuse(
                FusionRequest(messages=[ChatMessage(role="user", content="warm")], preset="standin")
            )
            (await http.post(f"{gateway}/v1/chat/completions", json=body)).raise_for_status()
        with Progress(transient=True) as progress:
            task = progress.add_task("fusions", total=requests * 2)
            for _ in range(requests):
                request = FusionRequest(
                    messages=[ChatMessage(role="user", content="How fast?")], preset="standin"
                )
                started = time.perf_counter()
                result = await client.fuse(request)
                timings["direct"].append((time.perf_counter() - started) * 1000)
                assert result.status == "complete", result.error
                started = time.perf_counter()
                response = await http.post(f"{gateway}/v1/chat/completions", json=body)
                timings["gateway"].append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                progress.advance(task, 2)
    return timings


def report(timings: dict[str, list[float]]) -> dict[str, object]:
    summary = {
        path: {
            "p50": percentile(values, 0.5),
            "p99": percentile(values, 0.99),
            "mean": statistics.fmean(values),
        }
        for path, values in timings.items()
    }
    added = {q: summary["gateway"][q] - summary["direct"][q] for q in ("p50", "p99")}
    table = Table(title=f"Fused latency, stand-in models, {len(timings['direct'])} requests per path (ms)")
    for column in ("path", "p50", "p99", "mean"):
        table.add_column(column, justify="right")
    for path, stats in summary.items():
        table.add_row(path, *(f"{stats[q]:.1f}" for q in ("p50", "p99", "mean")))
    table.add_row("gateway adds", f"{added['p50']:.1f}", f"{added['p99']:.1f}", "")
    Console().print(table)
    return {"requests_per_path": len(timings["direct"]), "ms": summary, "gateway_added_ms": added}


def plot(timings: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for name, values in timings.items():
        ordered = sorted(values)
        axis.plot(ordered, [i / len(ordered) for i in range(1, len(ordered) + 1)], label=name)
    axis.set_xlabel("fused end-to-end latency (ms)")
    axis.set_ylabel("share of requests")
    axis.set_title("Gateway vs direct Kafka path (stand-in models)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, running_stack(Path(scratch), gateways=1) as stack:
        timings = uvloop.run(measure(stack.settings, stack.gateways[0], args.requests))
    summary = report(timings)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(timings, RESULTS / "gateway.png")
    print(f"wrote {RESULTS / 'gateway.json'} and {RESULTS / 'gateway.png'}")


if __name__ == "__main__":
    main()
