"""`make bench-scale`: a backlog, then more instances, measured. Two phases on the bench stack (its own
broker, stand-in models, one dispatcher):

- panel workers: a burst of requests whose members take 200 ms piles up on `fusion.tasks` in front of
  one panel worker; after `--scale-at` seconds three more join. Each worker is held to 8 model calls
  at once (`FUSION_WORKER_CONCURRENCY`), as a pod's capacity would be, so one worker is the bottleneck.
- judges: a burst whose judge call takes 200 ms piles up on `fusion.answers` in front of one judge held
  to 4 fusions at once (`FUSION_JUDGE_CONCURRENCY`); then two more join.

Every half second it samples the consumer group's lag on the topic (end offsets minus committed) and
the results published; it writes bench/results/scale_out.json and a plot, scale_out.png: lag and
throughput over time, the moment the instances joined marked. A KEDA trigger on that lag is what would
add the instances in a cluster (infra/k8s, docs/scaling.md).

    python -m bench.scale_out [--requests-workers 1500] [--requests-judges 900] [--scale-at 15]

It uses the test ports: do not run it while the tests run.
"""

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fusion.client import FusionClient
from fusion.kafka.stopping import stop_consumer
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec, Policy, topics
from rich.console import Console

from bench.stack import Stack, running_stack

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_S = 0.5
EXTRA_HEALTH_PORTS = (18231, 18232, 18233, 18234)


@dataclass
class Sample:
    t_s: float
    lag: int
    results: int
    instances: int


@dataclass
class Phase:
    name: str
    topic: str
    group: str
    requests: int
    scaled_from: int
    scaled_to: int
    scaled_at_s: float = 0.0
    drained_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)

    def rate(self, since: float, until: float) -> float:
        """Results per second between two times (from the samples)."""
        inside = [s for s in self.samples if since <= s.t_s <= until]
        if len(inside) < 2:
            return 0.0
        return (inside[-1].results - inside[0].results) / (inside[-1].t_s - inside[0].t_s)


async def partitions_of(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    # From the broker: a consumer without a subscription holds no topic's metadata.
    (described,) = await admin.describe_topics([topic])
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def lag(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, partitions: list[TopicPartition], group: str
) -> int:
    """What the group has not committed yet: end offsets minus committed offsets."""
    ends = await consumer.end_offsets(partitions)
    committed = await admin.list_consumer_group_offsets(group)
    return sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in partitions)


def burst(count: int, members: list[str], judge: str, tag: str) -> list[FusionRequest]:
    return [
        FusionRequest(
            messages=[ChatMessage(role="user", content=f"{tag} {i}")],
            panel=[ModelSpec(model=m, seed=j) for j, m in enumerate(members)],
            judge=ModelSpec(model=judge),
            policy=Policy(deadline_s=600),
        )
        for i in range(count)
    ]


async def run_phase(
    stack: Stack,
    phase: Phase,
    requests: list[FusionRequest],
    scale_at_s: float,
    add: "list[tuple[str, str, dict[str, str], int]]",
) -> None:
    console = Console()
    settings = stack.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    scaling: list[asyncio.Task[None]] = []

    async def scale_up() -> None:
        for label, service, env, port in add:
            await asyncio.to_thread(stack.services.run, label, service, env, port)

    try:
        partitions = await partitions_of(admin, phase.topic)
        consumer.assign(partitions)
        async with FusionClient(settings) as client:
            futures = [await client.submit(request) for request in requests]
            began = time.monotonic()
            instances = phase.scaled_from
            with console.status(f"{phase.name}: draining the backlog") as status:
                while True:
                    now = time.monotonic() - began
                    if not phase.scaled_at_s and now >= scale_at_s:
                        # Started in the background (each waits for its /health): sampling goes on.
                        scaling.append(asyncio.create_task(scale_up()))
                        phase.scaled_at_s = round(now, 2)
                        instances = phase.scaled_to
                    done = sum(1 for f in futures if f.done())
                    sample = Sample(
                        round(now, 2), await lag(admin, consumer, partitions, phase.group), done, instances
                    )
                    phase.samples.append(sample)
                    status.update(
                        f"{phase.name}: {sample.t_s:5.1f} s, {instances} instance(s), lag {sample.lag},"
                        f" {done}/{len(futures)} results"
                    )
                    if done == len(futures):
                        phase.drained_s = sample.t_s
                        break
                    await asyncio.sleep(SAMPLE_S)
            await asyncio.gather(*futures, *scaling)
    finally:
        await stop_consumer(consumer)
        await admin.close()
    for label, *_ in add:
        stack.services.stop(label)


async def bytes_per_request(bootstrap: str, requests: int) -> dict[str, float]:
    """Bytes (key and value) each topic held per request over the run: what sizes the brokers."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(
            [topics.REQUESTS, topics.TASKS, topics.ANSWERS, topics.RESULTS, topics.RELEASED]
        )
    finally:
        await admin.close()
    sizes: dict[str, float] = {}
    for entry in described:
        partitions = [TopicPartition(entry["topic"], p["partition"]) for p in entry["partitions"]]
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            total = 0
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                    total += sum(len(r.key or b"") + len(r.value or b"") for r in records)
            sizes[entry["topic"]] = round(total / requests, 1)
        finally:
            await stop_consumer(consumer)
    return sizes


def plot(phases: list[Phase], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(phases), figsize=(6.5 * len(phases), 4.2))
    for axis, phase in zip(axes, phases, strict=True):
        times = [s.t_s for s in phase.samples]
        axis.plot(times, [s.lag for s in phase.samples], color="tab:red", label=f"lag on {phase.topic}")
        axis.set_xlabel("seconds")
        axis.set_ylabel("lag (messages)", color="tab:red")
        rates = [0.0] + [
            (b.results - a.results) / (b.t_s - a.t_s)
            for a, b in zip(phase.samples, phase.samples[1:], strict=False)
        ]
        smooth = [
            sum(rates[max(0, i - 3) : i + 1]) / len(rates[max(0, i - 3) : i + 1]) for i in range(len(rates))
        ]
        twin = axis.twinx()
        twin.plot(times, smooth, color="tab:blue", label="results/s")
        twin.set_ylabel("fused results per second", color="tab:blue")
        axis.axvline(phase.scaled_at_s, color="grey", linestyle="--")
        axis.text(
            phase.scaled_at_s,
            axis.get_ylim()[1] * 0.95,
            f" {phase.scaled_from} -> {phase.scaled_to}",
            color="grey",
        )
        axis.set_title(f"{phase.name}: {phase.requests} requests at once")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests-workers", type=int, default=1500)
    parser.add_argument("--requests-judges", type=int, default=900)
    parser.add_argument("--scale-at", type=float, default=15.0)
    args = parser.parse_args()
    worker_env = {"FUSION_WORKER_CONCURRENCY": "8"}
    judge_env = {"FUSION_JUDGE_CONCURRENCY": "4"}
    with tempfile.TemporaryDirectory() as scratch, running_stack(Path(scratch)) as stack:
        services = stack.services
        workers = Phase("panel workers", topics.TASKS, "fusion-panel-workers", args.requests_workers, 1, 4)
        judges = Phase("judges", topics.ANSWERS, "fusion-judges", args.requests_judges, 1, 3)

        def instance(
            label: str, service: str, env: dict[str, str], port: int
        ) -> tuple[str, str, dict[str, str], int]:
            return label, service, {**env, "FUSION_HEALTH_PORT": str(port), "FUSION_INSTANCE_ID": label}, port

        # Phase 1: one worker held to 8 calls, then four.
        services.stop("panel-worker")
        services.run(*instance("worker-1", "panel-worker", worker_env, EXTRA_HEALTH_PORTS[0]))
        extra_workers = [
            instance(f"worker-{i + 2}", "panel-worker", worker_env, EXTRA_HEALTH_PORTS[i + 1])
            for i in range(3)
        ]
        asyncio.run(
            run_phase(
                stack,
                workers,
                burst(workers.requests, ["m200", "m200"], "m20", "workers"),
                args.scale_at,
                extra_workers,
            )
        )
        services.stop("worker-1")
        services.start("panel-worker")

        # Phase 2: one judge held to 4 fusions, then three.
        services.stop("judge")
        services.run(*instance("judge-1", "judge", judge_env, EXTRA_HEALTH_PORTS[0]))
        extra_judges = [
            instance(f"judge-{i + 2}", "judge", judge_env, EXTRA_HEALTH_PORTS[i + 1]) for i in range(2)
        ]
        asyncio.run(
            run_phase(
                stack,
                judges,
                burst(judges.requests, ["m20", "m20"], "m200", "judges"),
                args.scale_at,
                extra_judges,
            )
        )
        sizes = asyncio.run(
            bytes_per_request(stack.settings.kafka_bootstrap, workers.requests + judges.requests)
        )

    report: dict[str, Any] = {
        "settings": {"worker_concurrency": 8, "judge_concurrency": 4, "member_ms": 200, "judge_ms": 200}
    }
    report["bytes_per_request"] = sizes  # two-member panels
    print(f"bytes per request (two-member panels): {sizes}")
    for phase in (workers, judges):
        before = phase.rate(2.0, phase.scaled_at_s)
        after = phase.rate(phase.scaled_at_s + 3.0, phase.drained_s)
        report[phase.name] = {
            **{k: v for k, v in asdict(phase).items() if k != "samples"},
            "results_per_s_before": round(before, 1),
            "results_per_s_after": round(after, 1),
            "speed_up": round(after / before, 2) if before else None,
            "samples": [asdict(s) for s in phase.samples],
        }
        print(
            f"{phase.name}: {phase.scaled_from} -> {phase.scaled_to} at {phase.scaled_at_s} s:"
            f" {before:.1f} -> {after:.1f} results/s; drained at {phase.drained_s} s"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale_out.json").write_text(json.dumps(report, indent=1) + "\n")
    plot([workers, judges], RESULTS / "scale_out.png")
    print(f"written: {RESULTS / 'scale_out.json'}, {RESULTS / 'scale_out.png'}")


if __name__ == "__main__":
    main()
