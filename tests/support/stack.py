"""The real parts a test session runs: the broker, a stand-in model server, the services as processes.

Ports are kept apart from `make up`'s defaults, so tests run beside a developer's running stack.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

KAFKA_PORT = 19092
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
STANDIN_PORT = 18099
LOCAL_MODELS_PORT = 18088
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


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def test_catalog(path: Path) -> Path:
    """Stand-in behaviours as catalog models, and the real local models on the test port."""
    path.write_text(
        f"""
default_preset = "standin"

[providers.local]
api = "openai"
base_url = "http://127.0.0.1:{LOCAL_MODELS_PORT}/v1"
timeout_s = 300
max_concurrency = 8
structured_output = "json_object"

[providers.standin]
api = "openai"
base_url = "http://127.0.0.1:{STANDIN_PORT}/v1"
max_concurrency = 1024
structured_output = "json_object"

[providers.nowhere]
api = "openai"
base_url = "http://127.0.0.1:9/v1"

[models.fast]
provider = "standin"
id = "sleep-20"

[models.slow]
provider = "standin"
id = "sleep-1000"

[models.stall]
provider = "standin"
id = "stall"

[models.broken]
provider = "standin"
id = "fail-500"

[models.unreachable-a]
provider = "nowhere"
id = "a"

[models.unreachable-b]
provider = "nowhere"
id = "b"

[models.unreachable-c]
provider = "nowhere"
id = "c"

[models.slow3]
provider = "standin"
id = "sleep-3000"

[models.slow-judge]
provider = "standin"
id = "sleep-600"

[models.toolmodel]
provider = "standin"
id = "sleep-10"

[providers.keyed]
api = "openai"
base_url = "http://127.0.0.1:{STANDIN_PORT}/v1"
key_env = "FUSION_TEST_KEY_NOBODY_SETS"

[models.needs-key]
provider = "keyed"
id = "sleep-10"

[models.priced]
provider = "standin"
id = "sleep-10"
input_usd_per_mtok = "3.5"
output_usd_per_mtok = "17.25"

[models.billed]
provider = "standin"
id = "billed"
input_usd_per_mtok = "1"
output_usd_per_mtok = "1"

[providers.leaky]
api = "openai"
base_url = "http://127.0.0.1:{STANDIN_PORT}/v1"
key_env = "FUSION_TEST_LEAKY_KEY"

[models.leaky]
provider = "leaky"
id = "echo-auth"

[models.realistic]
provider = "standin"
id = "jitter-200-1500"

[models.realistic-judge]
provider = "standin"
id = "jitter-100-400"

[presets.chaos]
panel = [
  {{ model = "realistic" }},
  {{ model = "realistic", temperature = 0.9 }},
  {{ model = "realistic", seed = 2 }},
]
judge = {{ model = "realistic-judge" }}

[models.m20]
provider = "standin"
id = "sleep-20"

[models.m1s]
provider = "standin"
id = "sleep-1000"

[models.m200]
provider = "standin"
id = "sleep-200"

[models.straggler]
provider = "standin"
id = "straggle-200-10-5"

[models.m30s]
provider = "standin"
id = "sleep-30000"

[models.real-a]
provider = "standin"
id = "jitter-300-900"

[models.real-b]
provider = "standin"
id = "jitter-400-1200"

[models.real-c]
provider = "standin"
id = "jitter-200-1500"

[models.real-judge]
provider = "standin"
id = "jitter-100-400"

[presets.bench-realistic]
panel = [{{ model = "real-a" }}, {{ model = "real-b" }}, {{ model = "real-c" }}]
judge = {{ model = "real-judge" }}

[presets.bench-fast]
panel = [{{ model = "m20" }}, {{ model = "m20", seed = 1 }}, {{ model = "m20", seed = 2 }}]
judge = {{ model = "m20" }}

[presets.bench-1s]
panel = [{{ model = "m1s" }}, {{ model = "m1s", seed = 1 }}, {{ model = "m1s", seed = 2 }}]
judge = {{ model = "m1s" }}

[presets.bench-straggler]
panel = [{{ model = "m200" }}, {{ model = "m200", seed = 1 }}, {{ model = "straggler" }}]
judge = {{ model = "m20" }}

[presets.bench-hold]
panel = [{{ model = "m30s" }}, {{ model = "m30s", seed = 1 }}, {{ model = "m30s", seed = 2 }}]
judge = {{ model = "m20" }}

[presets.standin]
panel = [{{ model = "fast" }}, {{ model = "fast", temperature = 0.9 }}, {{ model = "fast", seed = 3 }}]
judge = {{ model = "fast" }}
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Services:
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        """One of dispatcher, panel-worker, judge, with its health endpoint on the test port."""
        self.run(name, name, {"FUSION_HEALTH_PORT": str(HEALTH_PORTS[name])}, HEALTH_PORTS[name])

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
