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


def test_catalog(path: Path) -> Path:
    """Stand-in behaviours as catalog models, and the real local models on the test port."""
    path.write_text(
        f"""
[providers.local]
api = "openai"
base_url = "http://127.0.0.1:{LOCAL_MODELS_PORT}/v1"
timeout_s = 300
max_concurrency = 8
structured_output = "json_object"

[providers.standin]
api = "openai"
base_url = "http://127.0.0.1:{STANDIN_PORT}/v1"
max_concurrency = 256
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
        log = (self.log_dir / f"{name}.log").open("ab")
        env = {**self.env, "FUSION_HEALTH_PORT": str(HEALTH_PORTS[name])}
        process = subprocess.Popen(
            [sys.executable, "-m", "fusion.cli.main", "serve", name], env=env, stdout=log, stderr=log
        )
        self.processes[name] = process
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{HEALTH_PORTS[name]}/health"),
            60,
            name,
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

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)
