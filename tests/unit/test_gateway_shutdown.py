"""How a gateway process stops: the server tells the app before it waits for open connections, and
the deployment gives the drain time to happen."""

from pathlib import Path
from typing import Any

import uvicorn
import yaml
from fusion.cli.main import GATEWAY_BACKSTOP_S
from fusion.runtime import Server
from fusion.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"


async def test_the_server_tells_the_app_before_it_waits_for_connections(monkeypatch: Any) -> None:
    calls: list[str] = []

    async def shutdown(self: uvicorn.Server, sockets: Any = None) -> None:
        calls.append("server shutdown")

    monkeypatch.setattr(uvicorn.Server, "shutdown", shutdown)
    server = Server(uvicorn.Config(app=lambda *_: None), on_shutdown=lambda: calls.append("app told"))
    await server.shutdown()
    assert calls == ["app told", "server shutdown"]


def test_the_gateway_pod_outlives_its_pause_the_drain_and_the_backstop() -> None:
    deployment, *_ = (doc for doc in yaml.safe_load_all((K8S / "base" / "gateway.yaml").read_text()) if doc)
    assert deployment["kind"] == "Deployment"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + Settings().gateway_drain_s + GATEWAY_BACKSTOP_S
