"""`make chaos` in small, on a three-broker cluster of its own: 200 requests, half through two gateways
with the `openai` SDK and half straight to Kafka, through 2 dispatchers, 3 panel workers and 2 judges,
while each service type is SIGKILLed once, a judge is paused past its session timeout, the judges are
scaled 2 -> 3 -> 2 and the panel workers 3 -> 1 -> 3, a broker is killed and started again and a gateway
restarted (see fusion_testing/chaos.py for the run and what it counts).

The module starts its own cluster on 19192-19197 from fresh data, and its own services (health ports
18201-18220, gateways 18221-18222), beside the session's single broker and services; it shares only
the session's stand-in models. Run with -s to see the figures, every fault and any logged error.
"""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fusion.gateway.link import reply_topic_for
from fusion.kafka.broker import build_broker
from fusion.settings import Settings

from fusion_testing.chaos import ChaosConfig, create_cluster_topics, run_chaos, service_env
from fusion_testing.cluster import NODES, Cluster, running_cluster
from fusion_testing.stack import Services

pytestmark = [pytest.mark.kafka]

REQUESTS = 200
RATE = 4.0
"""Requests per second: the faults, one after another, fit in the 50 s that the requests take."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as cluster:
        print(f"\ncluster: {cluster.bootstrap} started from fresh data in {cluster.started_in_s:.1f} s")
        yield cluster


async def test_a_gateway_on_the_cluster_gives_its_reply_topic_the_clusters_replication(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A reply topic with one replica goes offline with its broker: the gateway's replies, and every
    judge transaction that carries one of them, wait until that broker is back."""
    await create_cluster_topics(cluster)
    services = Services(env=service_env(), log_dir=tmp_path)
    try:
        await asyncio.to_thread(services.start_gateway, "replicated", 18221)
        reply_topic = reply_topic_for("tests-replicated")
        (partition,) = (await cluster.describe(reply_topic)).values()
    finally:
        await asyncio.to_thread(services.stop_all)

    assert partition.replicas == frozenset(NODES)


async def test_a_service_bootstraps_from_a_list_of_brokers(cluster: Cluster) -> None:
    """`FUSION_KAFKA_BOOTSTRAP=a:1,b:2,c:3` (FastStream once took it for one host)."""
    broker = build_broker(Settings(kafka_bootstrap=cluster.bootstrap, instance_id="tests-list"), "tests")
    try:
        await asyncio.wait_for(broker.connect(), timeout=20)
    finally:
        await broker.stop()


async def test_a_short_chaos_run_on_the_cluster_loses_doubles_and_mixes_up_nothing(
    cluster: Cluster, standin: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    await create_cluster_topics(cluster)
    log_dir = tmp_path_factory.mktemp("chaos-cluster-logs")
    services = Services(env=service_env(), log_dir=log_dir)
    began = time.monotonic()

    report = await run_chaos(cluster, services, ChaosConfig(REQUESTS, RATE, kills=1, pauses=1, seed=7))

    print(f"\n{report.line()} ({time.monotonic() - began:.0f} s; service logs: {log_dir})")
    print(report.details())
    assert report.sent == REQUESTS
    assert report.fault_counts == {
        "kills.dispatcher": 1,
        "kills.panel-worker": 1,
        "kills.judge": 1,
        "kills.gateway": 1,
        "pauses": 1,
        "scaled.judge": 2,
        "scaled.panel-worker": 2,
        "broker_kills": 1,
        "broker_restarts": 1,
        "gateway_restarts": 1,
    }
    assert report.kafka.client_errors == 0, "a request straight to Kafka was never acknowledged"
    assert (report.lost, report.duplicated, report.mismatched) == (0, 0, 0)
    assert report.results + report.client_errors == report.sent
