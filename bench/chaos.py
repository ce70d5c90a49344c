"""`make chaos`: the scale-out run. Requests through 2 dispatchers, 3 panel workers, 2 judges and 2
gateways on the three-broker cluster while every service type is killed twice, a judge is paused past
its session timeout twice, the judges are scaled 2 -> 3 -> 2 and the panel workers 3 -> 1 -> 3, a broker
is killed and started again and a gateway restarted. Half the requests go through the gateways with the
`openai` SDK, half straight to Kafka. The run itself is `fusion_testing.chaos` (its docstring says what
is counted how), which the tests run short.

    python -m bench.chaos [--requests 2000] [--rate 8] [--kills 2] [--pauses 2] [--seed 1]

Prints `sent=N results=N lost=0 duplicated=0 mismatched=0 client_errors=E p50_ms=… p99_ms=…`, then each
path, each fault and any loss or logged error in detail, and writes it all as JSON to
bench/results/chaos.json. The services' logs stay in .cache/chaos-logs/<time>/. It exits 1 when a
request was lost, duplicated or answered with another's answer.

It uses the cluster's ports (19192-19197), the stand-in's (18099) and 18201-18222 for the services:
do not run it while the tests run.
"""

import argparse
import asyncio
import json
import logging
import os
import time
from pathlib import Path

from bench.stack import unwound_on_sigterm
from fusion_testing.chaos import ChaosConfig, ChaosReport, create_cluster_topics, run_chaos, service_env
from fusion_testing.cluster import Cluster, running_cluster
from fusion_testing.stack import ROOT, Services, running_standin

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs per service type")
    parser.add_argument("--pauses", type=int, default=2, help="judge pauses past the session timeout")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    config = ChaosConfig(args.requests, args.rate, kills=args.kills, pauses=args.pauses, seed=args.seed)
    cache = Path(os.environ.get("FUSION_CACHE", ROOT / ".cache"))
    log_dir = cache / "chaos-logs" / time.strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True)
    # This process's own Kafka clients log every broker they lose while the faults run: into a file
    # beside the services' logs, so the progress display stays readable.
    client_log = logging.FileHandler(log_dir / "bench-client.txt")
    client_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger("aiokafka").addHandler(client_log)
    logging.getLogger("aiokafka").propagate = False

    async def go(cluster: Cluster) -> ChaosReport:
        await create_cluster_topics(cluster)
        services = Services(env=service_env(), log_dir=log_dir)
        return await run_chaos(cluster, services, config, show_progress=True)

    began = time.monotonic()
    with unwound_on_sigterm(), running_cluster() as cluster, running_standin(latency_ms=20):
        print(f"cluster {cluster.bootstrap} up in {cluster.started_in_s:.1f} s; service logs in {log_dir}")
        report = asyncio.run(go(cluster))
    took_s = time.monotonic() - began
    print(report.line())
    print(report.details())
    print(f"whole run {took_s:.0f} s (cluster start and stop included)")
    RESULTS.mkdir(exist_ok=True)
    data = {
        **report.as_json(),
        "config": {
            "requests": args.requests,
            "rate": args.rate,
            "kills": args.kills,
            "pauses": args.pauses,
            "seed": args.seed,
        },
        "cluster_started_in_s": round(cluster.started_in_s, 1),
        "whole_run_s": round(took_s, 1),
    }
    (RESULTS / "chaos.json").write_text(json.dumps(data, indent=2) + "\n")
    raise SystemExit(0 if report.lost == report.duplicated == report.mismatched == 0 else 1)


if __name__ == "__main__":
    main()
