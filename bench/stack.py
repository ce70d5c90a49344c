"""The whole stack as processes for a benchmark run: broker, stand-in models, services, gateways.

It uses the test ports (see fusion_testing/stack.py): do not run a benchmark while the tests run.
"""

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fusion.kafka.admin import create_topics
from fusion.settings import Settings

from fusion_testing.stack import (
    BOOTSTRAP,
    CATALOG,
    GATEWAY_PORTS,
    KAFKA_PORT,
    ROOT,
    STANDIN_URL,
    Services,
    run_infra,
    running_standin,
)


@dataclass
class Stack:
    settings: Settings
    services: Services
    gateways: list[str]
    standin: str
    standin_pid: int

    def pids(self) -> dict[str, int]:
        """Every process of the run on this machine: services, broker, stand-in models, this client."""
        pids = {name: process.pid for name, process in self.services.processes.items()}
        if (broker := broker_pid()) is not None:
            pids["broker"] = broker
        pids["stand-in models"] = self.standin_pid
        pids["bench client"] = os.getpid()
        return pids


def broker_pid() -> int | None:
    """The bench broker's process id, while it runs."""
    cache = Path(os.environ.get("FUSION_CACHE", ROOT / ".cache"))
    pid_file = cache / f"kafka-{KAFKA_PORT}" / "pid"
    return int(pid_file.read_text()) if pid_file.exists() else None


@contextlib.contextmanager
def unwound_on_sigterm() -> Iterator[None]:
    """A SIGTERM (a job's timeout, `kill`) unwinds the run as Ctrl-C does, so the broker, the stand-in
    and the services are stopped with it rather than left running."""

    def exit_now(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def running_stack(scratch: Path, gateways: int = 1, standin_latency_ms: float = 20) -> Iterator[Stack]:
    with unwound_on_sigterm():
        yield from _stack(scratch, gateways, standin_latency_ms)


def _stack(scratch: Path, gateways: int, standin_latency_ms: float) -> Iterator[Stack]:
    env = {
        **os.environ,
        "FUSION_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "FUSION_CATALOG": str(CATALOG),
        "FUSION_LOG_LEVEL": "WARNING",
        "FUSION_LOG_FORMAT": "json",
    }
    services = Services(env=env, log_dir=scratch)
    settings = Settings(kafka_bootstrap=BOOTSTRAP, catalog=CATALOG, instance_id="bench")
    with contextlib.ExitStack() as undo:  # stops what started, in reverse order, however the run ends
        run_infra("kafka.sh", "reset", KAFKA_PORT=str(KAFKA_PORT))
        run_infra("kafka.sh", "start", KAFKA_PORT=str(KAFKA_PORT))
        undo.callback(run_infra, "kafka.sh", "stop", KAFKA_PORT=str(KAFKA_PORT))
        standin = undo.enter_context(running_standin(standin_latency_ms))
        undo.callback(services.stop_all)
        asyncio.run(create_topics(settings))
        for name in ("dispatcher", "panel-worker", "judge"):
            services.start(name)
        urls = [services.start_gateway(f"gateway-{i}", GATEWAY_PORTS[i]) for i in range(gateways)]
        yield Stack(settings, services, urls, STANDIN_URL, standin.pid)
