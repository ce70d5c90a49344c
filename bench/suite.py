"""`make bench`: what Fusion adds to the models' own time, how it scales, how quorum cuts the tail,
and how much memory each service holds. Stand-in model server, real broker, services as processes.

    python -m bench.suite [--quick] [--soak 300]

Prints a table, writes bench/results/bench.json and bench/results/bench.png.
"""

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from fusion.catalog import load_catalog
from fusion.client import FusionClient
from fusion.judge.fusing import Judge
from fusion.models import ModelRouter
from fusion.runtime import tune_garbage_collector
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, PanelAnswer, Policy, Usage
from fusion_contracts.common import utc_now
from rich.console import Console
from rich.table import Table

from bench.figures import (
    FLAT_MB,
    Sense,
    meets,
    percentile,
    second_half_growth_mb,
    start_middle_end,
    stayed_flat,
)
from bench.stack import Stack, broker_pid, running_stack

RESULTS = Path(__file__).resolve().parent / "results"
QUESTION = [ChatMessage(role="user", content="How fast is it?")]
T = TypeVar("T")


def request(preset: str, **policy: Any) -> FusionRequest:
    return FusionRequest(messages=QUESTION, preset=preset, policy=Policy(deadline_s=60, **policy))


def overhead_ms(result: FusedResult, elapsed_ms: float) -> float:
    """End to end minus the ideal critical path: the slowest member's model time plus the judge's."""
    slowest = max((m.latency_ms or 0.0) for m in result.members)
    judge = result.judge.latency_ms if result.judge else 0.0
    return elapsed_ms - slowest - judge


HOPS = (
    "request to dispatched",
    "dispatched to last call start",
    "last answer to release",
    "judge outside model calls",
    "result to client",
)


def hops_ms(result: FusedResult, elapsed_ms: float) -> tuple[float, ...] | None:
    """Where a request's time outside the models went, hop by hop (see `HOPS`), from its timings."""
    timings, judge = result.timings, result.judge
    calls = [
        (m.finished_at.timestamp() * 1000, m.latency_ms)
        for m in result.members
        if m.finished_at is not None and m.latency_ms is not None
    ]
    if timings.dispatched_at is None or timings.released_at is None or judge is None or not calls:
        return None
    last_start = max(finished - latency for finished, latency in calls)
    last_answer = max(finished for finished, _ in calls)
    submitted, dispatched = timings.submitted_at.timestamp() * 1000, timings.dispatched_at.timestamp() * 1000
    released, completed = timings.released_at.timestamp() * 1000, timings.completed_at.timestamp() * 1000
    return (
        dispatched - submitted,
        last_start - dispatched,
        released - last_answer,
        completed - released - (judge.latency_ms or 0.0),
        elapsed_ms - (completed - submitted),
    )


RAMP_UP = 1 / 5
"""The share of a closed-loop run left uncounted at its start: the callers' first requests all arrive
at once, a burst (the pipeline filling) that takes seconds to spread out."""


async def closed_loop(
    client: FusionClient, make: Callable[[], FusionRequest], concurrency: int, duration_s: float
) -> list[tuple[float, FusedResult]]:
    """`concurrency` callers, each sending its next request when the last is answered."""
    done: list[tuple[float, FusedResult]] = []
    stop_at = time.monotonic() + duration_s

    async def caller() -> None:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            result = await client.fuse(make())
            done.append(((time.perf_counter() - started) * 1000, result))

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done


async def measure_overhead(
    client: FusionClient, concurrency: int, duration_s: float, preset: str
) -> dict[str, Any]:
    started = utc_now()
    runs = await closed_loop(client, lambda: request(preset), concurrency, duration_s)
    steady = started + timedelta(seconds=duration_s * RAMP_UP)  # requests sent after the ramp-up
    complete = [
        (elapsed, result)
        for elapsed, result in runs
        if result.status == "complete" and result.timings.submitted_at >= steady
    ]
    overheads = [overhead_ms(result, elapsed) for elapsed, result in complete]
    hops = [h for elapsed, result in complete if (h := hops_ms(result, elapsed)) is not None]
    return {
        "p50": percentile(overheads, 0.5),
        "p99": percentile(overheads, 0.99),
        "n": len(overheads),
        "hops": {
            name: {
                "p50": percentile([h[i] for h in hops], 0.5),
                "p99": percentile([h[i] for h in hops], 0.99),
            }
            for i, name in enumerate(HOPS)
        },
    }


async def inprocess_baseline(settings: Settings, runs: int) -> list[float]:
    """The same panel and judge calls in one process: asyncio.gather over the members, then the judge."""
    catalog = load_catalog(settings.catalog)
    preset = catalog.preset("bench-1s")
    models = ModelRouter(catalog)
    judge = Judge(models)
    timings = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            replies = await asyncio.gather(*(models.complete(spec, QUESTION) for spec in preset.panel))
            plan = _plan_like(preset.panel, preset.judge)
            answers = {
                i: PanelAnswer(
                    request_id=plan.request_id,
                    member_index=i,
                    model=spec.model,
                    status="ok",
                    text=reply.text,
                    usage=reply.usage or Usage(),
                    latency_ms=0.0,
                    finished_at=utc_now(),
                )
                for i, (spec, reply) in enumerate(zip(preset.panel, replies, strict=True))
            }
            await judge.fuse(plan, answers, "all", utc_now())
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        await models.aclose()
    return timings


def _plan_like(members: Any, judge: Any) -> Any:
    from datetime import timedelta

    from fusion_contracts import PanelPlan

    now = utc_now()
    return PanelPlan(
        request_id="baseline",
        messages=QUESTION,
        members=members,
        judge=judge,
        quorum=len(members),
        grace_s=0,
        panel_deadline_at=now + timedelta(seconds=60),
        deadline_at=now + timedelta(seconds=90),
        submitted_at=now,
        dispatched_at=now,
    )


async def measure_inprocess_ratio(client: FusionClient, settings: Settings, runs: int) -> dict[str, float]:
    kafka = [
        elapsed for elapsed, _ in await closed_loop(client, lambda: request("bench-1s"), 4, runs * 3.2 / 4)
    ]
    baseline = await inprocess_baseline(settings, runs)
    return {
        "kafka_p50_ms": statistics.median(kafka),
        "inprocess_p50_ms": statistics.median(baseline),
        "ratio": statistics.median(kafka) / statistics.median(baseline),
    }


THROUGHPUT_IN_FLIGHT = (100, 200, 400)
"""The throughput runs' loads: req/s rises with requests in flight until the machine saturates."""


async def measure_throughput(
    client: FusionClient, concurrency: int, duration_s: float
) -> tuple[float, int, float]:
    """Completed fused requests per second in steady state: `concurrency` callers for `duration_s`,
    counting only what completes after a ramp-up (the pipeline filling) and before the end (not the
    requests still in flight then). Also every request completed, and their median latency in ms."""
    started = time.monotonic()
    window = (started + duration_s * RAMP_UP, started + duration_s)
    completed: list[tuple[float, float]] = []

    async def caller() -> None:
        while time.monotonic() < window[1]:
            sent = time.monotonic()
            result = await client.fuse(request("bench-fast"))
            if result.status == "complete":
                now = time.monotonic()
                completed.append((now, 1000 * (now - sent)))

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    in_window = sum(1 for finished, _ in completed if window[0] <= finished <= window[1])
    return in_window / (window[1] - window[0]), len(completed), statistics.median(ms for _, ms in completed)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads, so far."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


def jit_cpu_seconds(pid: int) -> float:
    """CPU time a JVM's JIT compiler threads (C1, C2) have used so far; 0 where there is no such JVM."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            stat = task.read_text()
            if "CompilerThre" in stat.split(")", 1)[0]:
                total += _stat_cpu_seconds(stat)
    return total


def _stat_cpu_seconds(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


WARM_UP_S = 90.0
"""The broker's JIT compiler is still busy 20 s after it starts (a quarter of a core during the run at
100 in flight). After 90 s rather than 20 (two runs each) the overhead at 1 in flight was 11.2 and
12.2 ms against 14.1 and 14.9, and the p99 at 100 in flight 56.9 and 61.4 ms against 67.2 and 70.8."""


class JitMeter:
    """The share of a core the broker's JIT compiler used since the last reading (None: no broker)."""

    def __init__(self, pid: int | None) -> None:
        self._pid = pid
        self._last = (jit_cpu_seconds(self._pid) if self._pid else 0.0), time.monotonic()

    def share(self) -> float | None:
        if self._pid is None:
            return None
        spent, now = jit_cpu_seconds(self._pid), time.monotonic()
        share = (spent - self._last[0]) / (now - self._last[1])
        self._last = spent, now
        return share


async def with_jit_progress(load: Awaitable[T], jit: JitMeter, every_s: float = 15.0) -> T:
    """Awaits `load` (a warm-up), printing the CPU the broker's JIT compiler used every `every_s`."""
    running = asyncio.ensure_future(load)
    while not running.done():
        await asyncio.wait({running}, timeout=every_s)
        if (share := jit.share()) is not None:
            print(f"  broker's JIT compiler: {100 * share:.0f}% of a core", flush=True)
    return await running


async def warm_up(client: FusionClient, jit: JitMeter, duration_s: float) -> None:
    """Load at 50 in flight while the broker's JIT compiles, with its compiler's CPU every 15 s."""
    load = closed_loop(client, lambda: request("bench-fast"), 50, duration_s)
    await with_jit_progress(load, jit, min(15.0, duration_s))


async def measure_throughput_cpu(
    client: FusionClient, stack: Stack, concurrency: int, duration_s: float
) -> dict[str, Any]:
    """Throughput, and the CPU each process of the machine spent on it: in cores busy and in
    milliseconds per fused request (what limits throughput on a machine whose cores are all busy)."""
    pids = stack.pids()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    rps, requests, p50_ms = await measure_throughput(client, concurrency, duration_s)
    elapsed = time.monotonic() - started
    spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return {
        "in_flight": concurrency,
        "rps": rps,
        "p50_ms": p50_ms,
        "cores_busy": {name: seconds / elapsed for name, seconds in spent.items()},
        "cpu_ms_per_request": {name: 1000 * seconds / requests for name, seconds in spent.items()},
    }


async def measure_peak_throughput(client: FusionClient, stack: Stack, duration_s: float) -> dict[str, Any]:
    """The throughput runs at each of `THROUGHPUT_IN_FLIGHT`; the peak is the one with most req/s."""
    runs = []
    for in_flight in THROUGHPUT_IN_FLIGHT:
        runs.append(await measure_throughput_cpu(client, stack, in_flight, duration_s))
        print(f"  {in_flight} in flight: {runs[-1]['rps']:.1f} requests/s", flush=True)
    return {**max(runs, key=lambda run: run["rps"]), "runs": runs}


async def measure_quorum(client: FusionClient, requests: int) -> dict[str, float]:
    async def p99(make: Callable[[], FusionRequest]) -> float:
        runs = await closed_loop(client, make, 20, requests / 20 * 0.3)
        return percentile([elapsed for elapsed, _ in runs], 0.99)

    wait_all = await p99(lambda: request("bench-straggler"))
    quorum = await p99(lambda: request("bench-straggler", quorum=2, grace_s=0.1))
    return {"p99_all_ms": wait_all, "p99_quorum_ms": quorum, "ratio": quorum / wait_all}


def rss_mb(stack: Stack) -> dict[str, dict[str, float]]:
    figures = {}
    for name, process in stack.services.processes.items():
        status = Path(f"/proc/{process.pid}/status").read_text()
        fields = {
            line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Vm")
        }
        figures[name] = {"rss": int(fields["VmRSS"]) / 1024, "peak": int(fields["VmHWM"]) / 1024}
    return figures


async def measure_memory_in_flight(client: FusionClient, stack: Stack, in_flight: int) -> dict[str, float]:
    futures = [await client.submit(request("bench-hold")) for _ in range(in_flight)]
    await asyncio.sleep(8)  # every plan is in the judge, the workers hold their calls
    peaks = {name: figures["peak"] for name, figures in rss_mb(stack).items()}
    await asyncio.wait_for(asyncio.gather(*futures), timeout=120)
    return peaks


async def measure_soak(client: FusionClient, stack: Stack, seconds: float) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    load = asyncio.create_task(closed_loop(client, lambda: request("bench-fast"), 20, seconds))
    for i in range(int(seconds // 15)):
        await asyncio.sleep(15)
        for name, figures in rss_mb(stack).items():
            samples.setdefault(name, []).append(figures["rss"])
        now = ", ".join(f"{name} {values[-1]:.0f} MB" for name, values in samples.items())
        print(f"  soak {15 * (i + 1):4d}/{seconds:.0f} s: {now}", flush=True)
    await load
    return samples


async def second_set(stack: Stack) -> None:
    ports = {"dispatcher": 18191, "panel-worker": 18192, "judge": 18193}
    for name, port in ports.items():
        await asyncio.to_thread(
            stack.services.run, f"{name}-2", name, {"FUSION_HEALTH_PORT": str(port)}, port
        )
    await asyncio.sleep(8)  # the groups rebalance over both sets


async def run(stack: Stack, quick: bool, soak_s: float) -> dict[str, Any]:
    scale = 0.3 if quick else 1.0
    out: dict[str, Any] = {}
    async with FusionClient(stack.settings) as client:
        print(
            f"warming up: {WARM_UP_S * scale:.0f} s at 50 in flight (the broker's JIT compiles) ...",
            flush=True,
        )
        jit = JitMeter(broker_pid())
        await warm_up(client, jit, WARM_UP_S * scale)
        # This process measures: its own collections (one full collection paused it 100 ms) would
        # count as Fusion's overhead. It collects as rarely as the services do.
        tune_garbage_collector()
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("overhead_single_ms", lambda: measure_overhead(client, 1, 20 * scale, "bench-fast")),
            ("overhead_ms", lambda: measure_overhead(client, 100, 30 * scale, "bench-realistic")),
            ("inprocess", lambda: measure_inprocess_ratio(client, stack.settings, max(int(20 * scale), 5))),
            ("quorum", lambda: measure_quorum(client, max(int(400 * scale), 100))),
            ("throughput", lambda: measure_peak_throughput(client, stack, 20 * scale)),
            ("rss_mb", lambda: measure_memory_in_flight(client, stack, 1000)),
        ]
        out["broker_jit_cores"] = {}
        for key, step in steps:
            print(f"measuring {key} ...", flush=True)
            jit.share()
            out[key] = await step()
            if (share := jit.share()) is not None:  # how much the broker still compiled meanwhile
                out["broker_jit_cores"][key] = share
        if soak_s > 0:
            print(f"soak: {soak_s:.0f} s at steady load ...", flush=True)
            out["soak_rss_mb"] = await measure_soak(client, stack, soak_s)
        print("measuring throughput with two processes of each service ...", flush=True)
        await second_set(stack)
        out["throughput_2x"] = await measure_peak_throughput(client, stack, 20 * scale)
    return out


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "overhead_ms": {"p50": raw["overhead_ms"]["p50"], "p99": raw["overhead_ms"]["p99"]},
        "overhead_single_ms": {
            "p50": raw["overhead_single_ms"]["p50"],
            "p99": raw["overhead_single_ms"]["p99"],
        },
        "inprocess_ratio": raw["inprocess"]["ratio"],
        "throughput_rps": raw["throughput"]["rps"],
        "throughput_rps_2x": raw["throughput_2x"]["rps"],
        "quorum_p99_ratio": raw["quorum"]["ratio"],
        "rss_mb": raw["rss_mb"],
        "soak_growth_mb": {  # over the soak's second half; flat when at most FLAT_MB
            name: second_half_growth_mb(samples) for name, samples in raw.get("soak_rss_mb", {}).items()
        },
        "details": raw,
    }


Getter = Callable[[dict[str, Any]], float]

TARGETS: list[tuple[str, Getter, tuple[Sense, float] | None]] = [
    ("overhead_ms.p50", lambda s: s["overhead_ms"]["p50"], ("≤", 15)),
    ("overhead_ms.p99", lambda s: s["overhead_ms"]["p99"], ("≤", 60)),
    ("overhead_single_ms.p50", lambda s: s["overhead_single_ms"]["p50"], ("≤", 10)),
    ("inprocess_ratio", lambda s: s["inprocess_ratio"], ("≤", 1.03)),
    ("throughput_rps", lambda s: s["throughput_rps"], ("≥", 200)),
    ("throughput_rps_2x", lambda s: s["throughput_rps_2x"], None),
    ("quorum_p99_ratio", lambda s: s["quorum_p99_ratio"], ("≤", 0.5)),
]


def report(summary: dict[str, Any]) -> None:
    table = Table(title="Fusion benchmark (stand-in models, 2 cores)")
    for column in ("figure", "measured", "target", "met"):
        table.add_column(column)
    for name, get, target in TARGETS:
        value = get(summary)
        table.add_row(
            name,
            f"{value:.3f}" if value < 10 else f"{value:.1f}",
            f"{target[0]} {target[1]}" if target else "",
            "" if target is None else ("yes" if meets(value, target[1], target[0]) else "NO"),
        )
    for name, peak in summary["rss_mb"].items():
        table.add_row(f"rss_mb.{name} (1000 in flight)", f"{peak:.0f}", "", "")
    for name, samples in summary["details"].get("soak_rss_mb", {}).items():
        if not samples:
            continue
        table.add_row(
            f"soak memory (MB), {name}",
            " → ".join(f"{mb:.1f}" for mb in start_middle_end(samples)),
            f"2nd half ≤ +{FLAT_MB:.0f}",
            "yes" if stayed_flat(samples) else f"NO (+{second_half_growth_mb(samples):.1f})",
        )
    Console().print(table)
    hops = Table(title="Where the overhead goes, per hop (ms, p50 / p99)")
    for column in ("hop", "1 in flight", "100 in flight"):
        hops.add_column(column)
    single, loaded = (
        summary["details"]["overhead_single_ms"]["hops"],
        summary["details"]["overhead_ms"]["hops"],
    )
    for name in HOPS:
        hops.add_row(
            name,
            f"{single[name]['p50']:.1f} / {single[name]['p99']:.1f}",
            f"{loaded[name]['p50']:.1f} / {loaded[name]['p99']:.1f}",
        )
    Console().print(hops)
    sweep = Table(title="Throughput by requests in flight (3-member panels, 20 ms models)")
    for column in ("in flight", "req/s, 1 of each", "p50 ms", "cores busy", "req/s, 2 of each", "p50 ms "):
        sweep.add_column(column)
    for one, two in zip(
        summary["details"]["throughput"]["runs"], summary["details"]["throughput_2x"]["runs"], strict=True
    ):
        sweep.add_row(
            str(one["in_flight"]),
            f"{one['rps']:.1f}",
            f"{one['p50_ms']:.0f}",
            f"{sum(one['cores_busy'].values()):.2f}",
            f"{two['rps']:.1f}",
            f"{two['p50_ms']:.0f}",
        )
    Console().print(sweep)
    cpu = summary["details"]["throughput"]
    usage = Table(title=f"CPU at peak throughput ({cpu['rps']:.0f} requests/s, {cpu['in_flight']} in flight)")
    for column in ("process", "cores busy", "CPU ms per request"):
        usage.add_column(column)
    for name, cores in cpu["cores_busy"].items():
        usage.add_row(name, f"{cores:.2f}", f"{cpu['cpu_ms_per_request'][name]:.2f}")
    total = sum(cpu["cores_busy"].values())
    usage.add_row("all", f"{total:.2f} of {os.cpu_count()}", f"{sum(cpu['cpu_ms_per_request'].values()):.2f}")
    Console().print(usage)
    jit = summary["details"].get("broker_jit_cores", {})
    if jit:
        shares = ", ".join(f"{key} {100 * cores:.0f}%" for key, cores in jit.items())
        Console().print(f"The broker's JIT compiler while each was measured (% of a core): {shares}")


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4))
    names = ["overhead p50", "overhead p99", "single p50"]
    values = [
        summary["overhead_ms"]["p50"],
        summary["overhead_ms"]["p99"],
        summary["overhead_single_ms"]["p50"],
    ]
    targets = [15, 60, 10]
    axes[0].bar(names, values, color="tab:blue", label="measured")
    axes[0].scatter(names, targets, color="tab:red", marker="_", s=600, label="target")
    axes[0].set_ylabel("ms over the models' own time (log)")
    axes[0].set_yscale("log")
    axes[0].legend()
    soak = summary["details"].get("soak_rss_mb", {})
    for name, samples in soak.items():
        axes[1].plot([15 * (i + 1) for i in range(len(samples))], samples, label=name)
    axes[1].set_xlabel("seconds at steady load")
    axes[1].set_ylabel("RSS (MB)")
    axes[1].set_title("memory over the soak")
    if soak:
        axes[1].legend()
    for key, label in (("throughput", "1 process of each service"), ("throughput_2x", "2 of each")):
        runs = summary["details"][key]["runs"]
        axes[2].plot(
            [run["in_flight"] for run in runs], [run["rps"] for run in runs], marker="o", label=label
        )
    axes[2].axhline(200, color="tab:red", linestyle="--", label="target")
    axes[2].set_xlabel("fused requests in flight")
    axes[2].set_ylabel("fused requests per second")
    axes[2].set_title("throughput (3-member panels, 20 ms models)")
    axes[2].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument(
        "--soak", type=float, default=300.0, help="seconds of steady load for the memory check"
    )
    args = parser.parse_args()
    logs = Path(".cache/bench-logs")
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    with running_stack(logs, gateways=0) as stack:
        raw = uvloop.run(run(stack, args.quick, args.soak))
    summary = summarise(raw)
    report(summary)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    plot(summary, RESULTS / "bench.png")
    print(f"wrote {RESULTS / 'bench.json'} and {RESULTS / 'bench.png'}")


if __name__ == "__main__":
    main()
