"""The Kubernetes manifests in infra/k8s are valid and agree with the code."""

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fusion.catalog import load_catalog
from fusion.kafka.admin import topic_plan
from fusion.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


@pytest.mark.parametrize(
    "doc", [d for d in documents() if "strimzi" not in d["apiVersion"]], ids=lambda d: d["metadata"]["name"]
)
def test_each_standard_resource_validates(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_strimzi_topics_match_fusion_topics_create() -> None:
    declared = {doc["metadata"]["name"]: doc["spec"]["partitions"] for doc in of_kind("KafkaTopic")}

    assert declared == {plan.name: plan.partitions for plan in topic_plan(Settings())}


def test_one_deployment_per_service_serving_health_where_probed() -> None:
    settings = next(doc for doc in of_kind("ConfigMap") if doc["metadata"]["name"] == "fusion-settings")
    health_port = int(settings["data"]["FUSION_HEALTH_PORT"])
    served = {}
    for deployment in of_kind("Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        served[container["args"][1]] = container
        assert container["args"][0] == "serve"
        assert container["ports"][0]["containerPort"] == health_port
        assert container["readinessProbe"]["httpGet"]["path"] == "/health"

    assert set(served) == {"dispatcher", "panel-worker", "judge", "gateway", "activity"}
    assert settings["data"]["FUSION_HEALTH_HOST"] == "0.0.0.0"
    assert settings["data"]["FUSION_GATEWAY_HOST"] == "0.0.0.0"
    assert int(settings["data"]["FUSION_GATEWAY_PORT"]) == health_port


def test_the_gateway_service_targets_the_gateway_pods() -> None:
    (service,) = of_kind("Service")
    (gateway,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "fusion-gateway"]

    assert service["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]


def test_the_catalog_config_map_loads(tmp_path: Path) -> None:
    config = next(doc for doc in of_kind("ConfigMap") if doc["metadata"]["name"] == "fusion-catalog")
    path = tmp_path / "catalog.toml"
    path.write_text(config["data"]["catalog.toml"])

    catalog = load_catalog(path)

    assert catalog.default_preset == "frontier"
    assert len(catalog.preset("frontier").panel) == 3
