"""The three-node Kafka cluster of infra/kafka-cluster.sh, for the failover tests and the chaos run.

Its ports (19192-19197) are kept apart from the single test broker's (19092-19093) and from `make up`'s,
so the cluster runs beside both (but not beside another run of the cluster: the chaos run and the
failover tests use the same ports and the same data directory).
"""

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from fusion_testing.stack import INFRA

CLUSTER_PORT = 19192
NODES = (1, 2, 3)
SCRIPT = INFRA / "kafka-cluster.sh"


def _env() -> dict[str, str]:
    return {**os.environ, "KAFKA_CLUSTER_PORT": str(CLUSTER_PORT)}


def run_cluster(action: str) -> str:
    """Runs a whole-cluster action of the script (start, stop, reset, status) and returns its stdout."""
    done = subprocess.run(
        [str(SCRIPT), action], check=True, env=_env(), timeout=300, stdout=subprocess.PIPE, text=True
    )
    return done.stdout.strip()


@dataclass(frozen=True)
class Partition:
    leader: int
    replicas: frozenset[int]
    isr: frozenset[int]


def broker_address(node: int) -> str:
    return f"127.0.0.1:{CLUSTER_PORT + node - 1}"


@dataclass
class Cluster:
    bootstrap: str
    started_in_s: float
    """How long `kafka-cluster.sh start` took, from fresh (reset) data."""
    paused: set[int] = field(default_factory=set)
    """Nodes this object paused: a paused broker accepts connections and never answers, so the admin
    calls here leave it out of their bootstrap list."""
    killed: set[int] = field(default_factory=set)
    """Nodes this object killed and has not restarted yet."""

    async def _script(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            str(SCRIPT), *args, env=_env(), stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=120)
        if process.returncode != 0:
            raise RuntimeError(f"kafka-cluster.sh {' '.join(args)} exited with {process.returncode}")
        return stdout.decode().strip()

    async def kill(self, node: int) -> None:
        """SIGKILL: the node's partitions get new leaders only once the controller fences it."""
        await self._script("kill", str(node))
        self.killed.add(node)

    async def restart(self, node: int) -> None:
        """Starts a killed node again on its data; returns once it runs as a broker again."""
        await self._script("restart", str(node))
        self.killed.discard(node)

    async def pause(self, node: int) -> None:
        """SIGSTOP: the node keeps its connections open and answers nothing until resumed."""
        await self._script("pause", str(node))
        self.paused.add(node)

    async def resume(self, node: int) -> None:
        await self._script("resume", str(node))
        self.paused.discard(node)

    async def controller(self) -> int:
        """The node whose controller is active (the metadata quorum's leader)."""
        return int(await self._script("controller"))

    async def describe(self, topic: str) -> dict[int, Partition]:
        """Each partition of the topic: its leader, replicas and in-sync replicas, as the brokers say.

        It asks the brokers one by one, never a paused one: aiokafka's admin client would send its
        request to any broker in the metadata, and wait its whole request timeout on a paused one."""
        answering = [n for n in NODES if n not in self.paused]
        client = AIOKafkaClient(
            bootstrap_servers=",".join(map(broker_address, answering)), request_timeout_ms=5_000
        )
        await client.bootstrap()
        try:
            for node in answering:
                try:
                    response = await client.send(node, MetadataRequest([topic], False))
                    break
                except KafkaError:
                    continue  # a killed broker, still in the metadata until it is fenced
            else:
                raise RuntimeError(f"no broker of {answering} answered")
        finally:
            await client.close()
        (described,) = response.to_object()["topics"]
        if described["error_code"] != 0:
            raise RuntimeError(f"cannot describe {topic}: error code {described['error_code']}")
        return {p["partition"]: _partition(p) for p in described["partitions"]}

    async def wait_for(
        self, topic: str, partition: int, what: str, ok: Callable[[Partition], bool], timeout_s: float = 30
    ) -> Partition:
        """Polls the partition until ok(its state) holds; returns that state."""
        deadline = time.monotonic() + timeout_s
        state: Partition | None = None
        while True:
            try:
                state = (await self.describe(topic))[partition]
                if ok(state):
                    return state
            except (RuntimeError, KeyError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}]: {what} not seen after {timeout_s} s ({state})")
            await asyncio.sleep(0.2)

    async def wait_all_in_sync(self, topic: str, timeout_s: float = 60) -> None:
        """Waits until every partition of the topic has a leader and all three replicas in sync."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                states = await self.describe(topic)
                if states and all(all_in_sync(state) for state in states.values()):
                    return
            except (RuntimeError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not every partition fully in sync after {timeout_s} s")
            await asyncio.sleep(0.5)


def all_in_sync(state: Partition) -> bool:
    return state.leader in NODES and state.isr == frozenset(NODES)


def _partition(described: dict[str, Any]) -> Partition:
    return Partition(
        leader=described["leader"],
        replicas=frozenset(described["replicas"]),
        isr=frozenset(described["isr"]),
    )


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A fresh cluster (its data reset first) from when all three brokers are registered to the end
    of the block; then it is stopped, however the block ends."""
    run_cluster("reset")
    began = time.monotonic()
    try:
        bootstrap = run_cluster("start").splitlines()[-1]
        yield Cluster(bootstrap, time.monotonic() - began)
    finally:
        run_cluster("stop")
