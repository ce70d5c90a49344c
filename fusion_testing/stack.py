"""The real parts a test session or a benchmark runs: the broker, the stand-in model server, the
services as processes, and the catalog that points them at each other.

Ports are kept apart from `make up`'s defaults, so tests run beside a developer's running stack (but
not beside a benchmark: both use these ports).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"

CATALOG = Path(__file__).resolve().with_name("catalog.toml")
"""Extends the built-in catalog (FUSION_CATALOG) with stand-in models on STANDIN_PORT and the local
models on LOCAL_MODELS_PORT."""

KAFKA_PORT = 19092
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
STANDIN_PORT = 18099
STANDIN_URL = f"http://127.0.0.1:{STANDIN_PORT}"
LOCAL_MODELS_PORT = 18088
TEST_SITE_PORT = 18120
"""fusion_testing/test_site.py, which panel members fetch (the panel worker allows it on purpose)."""
SEARCH_PORT = 18121
"""fusion_testing/search_standin.py, the catalog's `standin-search` and `standin-brave` backends."""
CORPUS = ROOT / "tests" / "data" / "corpus"
"""The documents the tests index for search_documents."""
HEALTH_PORTS = {"dispatcher": 18181, "panel-worker": 18182, "judge": 18183}
GATEWAY_PORTS = (18080, 18081, 18082, 18083, 18084, 18085)


def run_infra(script: str, action: str, **env: str) -> None:
    subprocess.run([str(INFRA / script), action], check=True, env={**os.environ, **env}, timeout=600)


def wait_until(
    ready: Callable[[], bool], timeout_s: float, what: str, alive: Callable[[], bool] = lambda: True
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if not alive():
            raise RuntimeError(f"{what} exited before it was ready")
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout_s} s")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).is_success
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running_standin(latency_ms: float = 50.0) -> Iterator[subprocess.Popen[bytes]]:
    """The stand-in model server on STANDIN_PORT, from when it answers to the end of the block; then it
    is killed (it holds stalled calls open on purpose). `latency_ms` is how long the model ids without
    a behaviour of their own take."""
    command = ["-m", "fusion_testing.standin", "--port", str(STANDIN_PORT), "--latency-ms", str(latency_ms)]
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT)  # not installed: found from the root
    try:
        wait_until(lambda: http_ok(f"{STANDIN_URL}/v1/stats"), 30, "stand-in", lambda: process.poll() is None)
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


@dataclass
class Services:
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        """One of dispatcher, panel-worker, judge, with its health endpoint on the test port."""
        self.run(name, name, {"FUSION_HEALTH_PORT": str(HEALTH_PORTS[name])}, HEALTH_PORTS[name])

    def start_instance(self, label: str, service: str, health_port: int) -> None:
        """One more instance of `service` beside the others: its own instance id and health port."""
        self.run(
            label,
            service,
            {"FUSION_HEALTH_PORT": str(health_port), "FUSION_INSTANCE_ID": f"tests-{label}"},
            health_port,
        )

    def pause(self, label: str) -> None:
        """SIGSTOP: the process keeps its sockets but sends nothing, heartbeats included."""
        self.processes[label].send_signal(signal.SIGSTOP)

    def resume(self, label: str) -> None:
        self.processes[label].send_signal(signal.SIGCONT)

    def start_gateway(self, label: str, port: int, ready: bool = True, **env: str) -> str:
        """A gateway instance (`label` names it, as its instance id) on `port`; returns its base URL."""
        settings = {"FUSION_GATEWAY_PORT": str(port), "FUSION_INSTANCE_ID": f"tests-{label}", **env}
        self.run(label, "gateway", settings, port if ready else None)
        url = f"http://127.0.0.1:{port}"
        if not ready:  # up, but not connected to Kafka: wait for the HTTP server alone
            process = self.processes[label]
            wait_until(lambda: _answers(f"{url}/health"), 60, label, alive=lambda: process.poll() is None)
        return url

    def run(self, label: str, service: str, extra_env: dict[str, str], health_port: int | None) -> None:
        log = (self.log_dir / f"{label}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "fusion.cli.main", "serve", service],
            env={**self.env, **extra_env},
            stdout=log,
            stderr=log,
        )
        self.processes[label] = process
        if health_port is not None:
            wait_until(
                lambda: http_ok(f"http://127.0.0.1:{health_port}/health"),
                60,
                label,
                alive=lambda: process.poll() is None,
            )

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self, label: str) -> None:
        """SIGKILL: no shutdown hook runs, nothing is drained or committed."""
        process = self.processes.pop(label)
        process.kill()
        process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)
