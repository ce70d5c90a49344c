"""The Kubernetes manifests in infra/k8s are valid and agree with the code.

Kustomize is not installed here, so the overlays are built below as it would build them, for the
features they use (resources, images, replicas, JSON 6902 patches; anything else fails the build).
Standard kinds are validated by kubernetes_validate; Strimzi's and KEDA's by their CRDs' schemas
(tests/data/crds). Then the result is compared with the code: topics and partitions; the KafkaUsers
with the ACL table (`fusion.kafka.acls`), and that table with the consumer groups each service
joins, what it writes and the judge's transactional ids; setting names; ports; and how long each
service takes to stop.
"""

import json
import re
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber.usecase import LogicSubscriber
from fusion.activity import recorder
from fusion.catalog import load_catalog
from fusion.dispatcher import app as dispatcher_app
from fusion.judge import app as judge_app
from fusion.judge.output import transactional_id
from fusion.kafka import acls
from fusion.kafka.admin import topic_plan
from fusion.kafka.transactions import COMMIT_TIMEOUT_S, STOP_TIMEOUT_S
from fusion.panel_worker import app as panel_worker_app
from fusion.settings import Settings
from fusion_contracts import limits, topics

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
CRDS = Path(__file__).resolve().parents[1] / "data" / "crds"
OVERLAYS = ("dev", "prod")
SERVICES = ("dispatcher", "panel-worker", "judge", "gateway", "activity")
CUSTOM_GROUPS = ("keda.sh", "kafka.strimzi.io")

Doc = dict[str, Any]
Resource = tuple[str, str, str]
"""A Kafka ACL's resource: type, name, pattern type."""
Grant = tuple[str, str, str, str]
"""A resource and one operation allowed on it."""


# Building the overlays ---------------------------------------------------------------------------

KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "images", "replicas", "patches"}
PATCH_TARGET_FIELDS = {"group", "version", "kind", "name", "namespace"}


def load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def build(directory: Path) -> list[Doc]:
    """The resources `kustomize build directory` prints, for the features the kustomizations use."""
    kustomization = load(directory / "kustomization.yaml")[0]
    unknown = set(kustomization) - KUSTOMIZE_FIELDS
    assert not unknown, f"{directory}: Kustomize features this test does not build: {unknown}"
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        docs.extend(build(path) if path.is_dir() else load(path))
    for image in kustomization.get("images", []):
        for container in containers(docs):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    for replicas in kustomization.get("replicas", []):
        named(docs, "Deployment", replicas["name"])["spec"]["replicas"] = replicas["count"]
    for patch in kustomization.get("patches", []):
        assert set(patch["target"]) <= PATCH_TARGET_FIELDS, f"{directory}: {patch['target']}"
        targets = [doc for doc in docs if targeted(doc, patch["target"])]
        assert targets, f"{directory}: a patch that changes nothing: {patch['target']}"
        for doc in targets:
            for operation in yaml.safe_load(patch["patch"]):
                apply_operation(doc, operation)
    return docs


def targeted(doc: Doc, target: dict[str, str]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    found = {"group": group, "version": version, "kind": doc["kind"], **doc["metadata"]}
    # Kustomize matches a target's name as a regular expression of the whole name.
    return all(re.fullmatch(wanted, str(found.get(field, ""))) for field, wanted in target.items())


def apply_operation(doc: Doc, operation: dict[str, Any]) -> None:
    """One JSON 6902 operation: add, replace or remove."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) and last != "-" else last
    match operation["op"]:
        case "add" if isinstance(node, list):
            node.insert(len(node) if key == "-" else key, operation["value"])
        case "add":
            node[key] = operation["value"]
        case "replace":
            assert key in node or isinstance(node, list), f"replace of a missing {operation['path']}"
            node[key] = operation["value"]
        case "remove":
            del node[key]
        case other:
            raise AssertionError(f"JSON 6902 operation not built here: {other}")


@cache
def built(overlay: str) -> tuple[Doc, ...]:
    return tuple(build(K8S / "overlays" / overlay))


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    (doc,) = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    return doc


def containers(docs: Iterable[Doc]) -> Iterator[Doc]:
    for deployment in of_kind(docs, "Deployment"):
        yield from deployment["spec"]["template"]["spec"]["containers"]


def deployment_of(docs: Iterable[Doc], service: str) -> Doc:
    return named(docs, "Deployment", f"fusion-{service}")


def test_kubectl_apply_k_infra_k8s_applies_the_prod_overlay() -> None:
    assert build(K8S) == list(built("prod"))


def test_every_base_manifest_is_in_the_base_kustomization() -> None:
    listed = load(K8S / "base" / "kustomization.yaml")[0]["resources"]

    assert sorted(listed) == sorted(
        p.name for p in (K8S / "base").glob("*.yaml") if p.stem != "kustomization"
    )


# Validating against the schemas ------------------------------------------------------------------


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The CRD's schema of that version, closed: an object with `properties` takes no others unless
    the CRD says so. The API server would prune unknown fields silently, and kubectl's strict field
    validation refuse them; either way a misspelt field would be lost, so it fails here."""
    group, _, version = api_version.partition("/")
    return closed(json.loads((CRDS / f"{group}_{version}_{kind}.json").read_text()))


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    tightened = dict(schema)
    if "properties" in schema:
        tightened["properties"] = {name: closed(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            tightened["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            tightened[key] = closed(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            tightened[key] = [closed(sub) for sub in schema[key]]
    return tightened


def every_resource() -> Iterator[Any]:
    for overlay in OVERLAYS:
        for doc in built(overlay):
            yield pytest.param(doc, id=f"{overlay}:{doc['kind']}/{doc['metadata']['name']}")
    for doc in load(K8S / "secret.example.yaml"):
        yield pytest.param(doc, id=f"example:{doc['kind']}/{doc['metadata']['name']}")


@pytest.mark.parametrize("doc", list(every_resource()))
def test_each_resource_validates_against_its_schema(doc: Doc) -> None:
    if doc["apiVersion"].partition("/")[0] in CUSTOM_GROUPS:
        jsonschema.validate(doc, crd_schema(doc["apiVersion"], doc["kind"]), cls=jsonschema.Draft7Validator)
    else:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_closed_schemas_refuse_a_misspelt_field() -> None:
    scaled = named(built("prod"), "ScaledObject", "fusion-judge")
    misspelt = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 8}}

    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        jsonschema.validate(misspelt, crd_schema("keda.sh/v1alpha1", "ScaledObject"))


# What the code does, found from the code ---------------------------------------------------------

ANY: Any = object()
"""Models and stores the services are registered with: never called while handlers are registered."""

REGISTRATIONS: dict[str, Callable[[KafkaBroker, Settings], object]] = {
    "dispatcher": lambda broker, settings: dispatcher_app.register(broker, load_catalog(), settings=settings),
    "panel-worker": lambda broker, settings: panel_worker_app.register(broker, ANY, settings),
    "judge": lambda broker, settings: judge_app.register(broker, ANY, settings),
    "activity": lambda broker, settings: recorder.register(
        broker, recorder.Recorder(ANY, settings), settings
    ),
}


def topic_resource(name_or_pattern: str) -> Resource:
    """A subscription's topic, or pattern of topics, as an ACL resource."""
    if name_or_pattern == "^" + re.escape(topics.REPLIES_PREFIX) + ".*":
        return ("topic", topics.REPLIES_PREFIX, "prefix")
    assert not name_or_pattern.startswith("^"), f"a pattern with no ACL here: {name_or_pattern}"
    return ("topic", name_or_pattern, "literal")


@cache
def subscriptions() -> dict[str, frozenset[tuple[Resource, str]]]:
    """Each service's (topic, consumer group) pairs, from its handlers registered on a broker that
    never connects. The gateway has none: it reads its reply topic without a group."""
    found = {"gateway": frozenset[tuple[Resource, str]]()}
    for service, register in REGISTRATIONS.items():
        broker = KafkaBroker("localhost:9092")
        register(broker, Settings())
        pairs: set[tuple[Resource, str]] = set()
        for subscriber in broker.subscribers:
            assert isinstance(subscriber, LogicSubscriber)
            assert subscriber.group_id is not None, f"{service} consumes without a group"
            pairs |= {(topic_resource(name), subscriber.group_id) for name in subscriber.topic_names}
        found[service] = frozenset(pairs)
    return found


def grants(resource: Resource, *operations: str) -> set[Grant]:
    return {(*resource, operation) for operation in operations}


def literal_topic(name: str) -> Resource:
    return ("topic", name, "literal")


def reply_topic_resource(pattern: str) -> Resource:
    """A FUSION_REPLY_TOPICS pattern (fnmatch) as an ACL resource: a name, or a prefix and `*`."""
    stem = pattern.removesuffix("*")
    assert not set("*?[") & set(stem), f"{pattern}: Kafka ACLs take only a name or a prefix"
    return ("topic", stem, "prefix" if stem != pattern else "literal")


def judge_transactional_ids() -> Resource:
    prefix = transactional_id(0).removesuffix("0")
    assert transactional_id(7) == f"{prefix}7"
    return ("transactionalId", prefix, "prefix")


def expected_acls() -> dict[str, set[Grant]]:
    """What each service's user must be allowed, and nothing more: reading what it consumes, in its
    groups (found above), and what its code writes (Outbox.send, Inbox.dead_letter), creates or
    deletes (the gateway's reply topics), reads without a group, and its transactions."""
    expected: dict[str, set[Grant]] = {service: set() for service in SERVICES}
    for service, consumed in subscriptions().items():
        for topic, group in consumed:
            expected[service] |= grants(topic, "Read", "Describe")
            expected[service] |= grants(("group", group, "literal"), "Read", "Describe")

    def writes(*resources: Resource) -> set[Grant]:
        return set().union(*(grants(resource, "Write", "Describe") for resource in resources))

    dlq, released = literal_topic(topics.DLQ), literal_topic(topics.RELEASED)
    replies = ("topic", topics.REPLIES_PREFIX, "prefix")
    expected["dispatcher"] |= writes(literal_topic(topics.TASKS), literal_topic(topics.ANSWERS), dlq)
    expected["panel-worker"] |= writes(literal_topic(topics.ANSWERS), dlq)
    expected["judge"] |= writes(released, dlq, *map(reply_topic_resource, Settings().reply_topics))
    expected["judge"] |= grants(released, "Read", "Describe")  # the markers, read without a group
    expected["judge"] |= grants(judge_transactional_ids(), "Write", "Describe")
    expected["gateway"] |= writes(literal_topic(topics.REQUESTS))
    expected["gateway"] |= grants(replies, "Create", "Delete", "Read", "Write", "Describe")
    expected["gateway"] |= grants(("cluster", acls.CLUSTER, "literal"), "DescribeConfigs")
    expected["activity"] |= writes(dlq)
    return expected


def allowed(rules: Iterable[Doc]) -> set[Grant]:
    """Strimzi ACL rules (a KafkaUser's `spec.authorization.acls`) as grants."""
    found: set[Grant] = set()
    for rule in rules:
        assert rule.get("type", "allow") == "allow"
        assert rule.get("host", "*") == "*"
        resource = rule["resource"]
        name = resource.get("name", acls.CLUSTER if resource["type"] == "cluster" else None)
        found |= grants((resource["type"], name, resource.get("patternType", "literal")), *rule["operations"])
    return found


IMPLYING_DESCRIBE = {"Read", "Write", "Delete"}


def as_kafka_grants(table: Iterable[acls.Acl]) -> set[Grant]:
    """A service's row of the ACL table as the grants Kafka makes of it: Describe wherever Read, Write
    or Delete is allowed, and without IdempotentWrite, which Write implies on any broker since 2.8."""
    found: set[Grant] = set()
    for acl in table:
        operations = {str(operation) for operation in acl.operations} - {"IdempotentWrite"}
        if operations & IMPLYING_DESCRIBE:
            operations.add("Describe")
        found |= grants((acl.type, acl.name, acl.pattern), *operations)
    return found


# Agreeing with the code --------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_strimzi_topics_match_fusion_topics_create(overlay: str) -> None:
    declared = {doc["metadata"]["name"]: doc for doc in of_kind(built(overlay), "KafkaTopic")}
    plan = topic_plan(Settings())

    partitions = {name: doc["spec"]["partitions"] for name, doc in declared.items()}

    assert partitions == {p.name: p.partitions for p in plan}
    for p in plan:
        config = {key: str(value) for key, value in declared[p.name]["spec"]["config"].items()}
        assert config | p.config == config, p.name
        assert config["max.message.bytes"] == str(limits.MAX_MESSAGE_BYTES)
        assert int(config["min.insync.replicas"]) <= declared[p.name]["spec"]["replicas"]


def test_one_deployment_per_service_serving_health_where_probed() -> None:
    docs = built("prod")
    settings = named(docs, "ConfigMap", "fusion-settings")["data"]
    health_port = int(settings["FUSION_HEALTH_PORT"])
    served = {}
    for deployment in of_kind(docs, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        served[container["args"][1]] = container
        assert container["args"][0] == "serve"
        assert container["ports"] == [{"name": "health", "containerPort": health_port}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "health"}

    assert set(served) == set(SERVICES)
    assert settings["FUSION_HEALTH_HOST"] == settings["FUSION_GATEWAY_HOST"] == "0.0.0.0"
    assert int(settings["FUSION_GATEWAY_PORT"]) == health_port


def test_the_gateway_service_targets_the_gateway_pods() -> None:
    docs = built("prod")
    (service,) = of_kind(docs, "Service")

    assert service["spec"]["selector"] == deployment_of(docs, "gateway")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "health"


def test_the_catalog_config_map_loads(tmp_path: Path) -> None:
    config = named(built("prod"), "ConfigMap", "fusion-catalog")
    path = tmp_path / "catalog.toml"
    path.write_text(config["data"]["catalog.toml"])

    catalog = load_catalog(path)

    assert catalog.default_preset == "frontier"
    assert len(catalog.preset("frontier").panel) == 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_s_kafka_user_is_its_row_of_the_acl_table(overlay: str) -> None:
    users = {user["metadata"]["name"]: user for user in of_kind(built(overlay), "KafkaUser")}

    assert set(users) == {acls.user(service) for service in SERVICES} | {"fusion-keda"}
    for service in SERVICES:
        rules = users[acls.user(service)]["spec"]["authorization"]
        assert rules["type"] == "simple"
        assert allowed(rules["acls"]) == allowed(acls.strimzi_acls(service)), service


@pytest.mark.parametrize("service", SERVICES)
def test_the_acl_table_allows_what_the_code_does_and_nothing_more(service: str) -> None:
    assert as_kafka_grants(acls.ACLS[service]) == expected_acls()[service]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_may_only_describe_the_groups_and_topics_it_scales_on(overlay: str) -> None:
    docs = built(overlay)
    scaled_on: set[Grant] = set()
    for scaler in of_kind(docs, "ScaledObject"):
        for trigger in scaler["spec"]["triggers"]:
            metadata = trigger["metadata"]
            scaled_on |= grants(literal_topic(metadata["topic"]), "Describe")
            scaled_on |= grants(("group", metadata["consumerGroup"], "literal"), "Describe")

    assert allowed(named(docs, "KafkaUser", "fusion-keda")["spec"]["authorization"]["acls"]) == scaled_on


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_kafka_users_are_made_where_their_services_mount_them(overlay: str) -> None:
    docs = built(overlay)
    (cluster,) = {topic["metadata"]["labels"]["strimzi.io/cluster"] for topic in of_kind(docs, "KafkaTopic")}
    for user in of_kind(docs, "KafkaUser"):
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert user["metadata"]["namespace"] == "fusion"
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}


def environment(docs: Iterable[Doc], deployment: Doc) -> dict[str, str]:
    """The container's environment from its ConfigMaps and its own `env` (the Secrets aside)."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        if "configMapRef" in source:
            env |= named(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
    return env | {var["name"]: var["value"] for var in container.get("env", [])}


def mounted_secret(deployment: Doc, path: str) -> tuple[str, str]:
    """The Secret and key whose file the container sees at `path`."""
    pod = deployment["spec"]["template"]["spec"]
    file = PurePosixPath(path)
    (mount,) = [
        m for m in pod["containers"][0]["volumeMounts"] if PurePosixPath(m["mountPath"]) == file.parent
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (key,) = [item["key"] for item in volume["secret"]["items"] if item["path"] == file.name]
    return volume["secret"]["secretName"], key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_connects_to_kafka_as_its_own_user(overlay: str) -> None:
    docs = built(overlay)
    users = {user["metadata"]["name"] for user in of_kind(docs, "KafkaUser")}
    for service in SERVICES:
        deployment = deployment_of(docs, service)
        env = environment(docs, deployment)

        assert env["FUSION_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["FUSION_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["FUSION_KAFKA_SASL_USERNAME"] == deployment["metadata"]["name"] in users
        password = mounted_secret(deployment, env["FUSION_KAFKA_SASL_PASSWORD_FILE"])
        assert password == (env["FUSION_KAFKA_SASL_USERNAME"], "password")
        ca = mounted_secret(deployment, env["FUSION_KAFKA_SSL_CA_FILE"])
        assert ca == ("fusion-kafka-cluster-ca-cert", "ca.crt")


@pytest.mark.parametrize("service", SERVICES)
def test_the_settings_each_service_is_given_are_settings_it_reads(service: str, tmp_path: Path) -> None:
    """Every variable names a setting, and together they pass the settings' own checks (the Kafka
    security ones fit together); the files named are stood in for by files here."""
    env = environment(built("prod"), deployment_of(built("prod"), service))
    values: dict[str, str] = {}
    for name, value in env.items():
        field = name.removeprefix("FUSION_").lower()
        assert name.startswith("FUSION_"), name
        assert field in Settings.model_fields, name
        values[field] = value
        if field.endswith("_file"):
            values[field] = str(tmp_path / field)
            (tmp_path / field).write_text("stand-in\n")

    settings = Settings.model_validate(values)

    assert settings.kafka_security_protocol == "SASL_SSL"


# Scaling -----------------------------------------------------------------------------------------

LAG_SCALED = {"dispatcher", "panel-worker", "judge"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_lag_scaled_stages_scale_on_their_own_group_up_to_their_partitions(overlay: str) -> None:
    docs = built(overlay)
    partitions = {plan.name: plan.partitions for plan in topic_plan(Settings())}
    scaled = {}
    for scaler in of_kind(docs, "ScaledObject"):
        service = scaler["spec"]["scaleTargetRef"]["name"].removeprefix("fusion-")
        scaled[service] = spec = scaler["spec"]
        (trigger,) = spec["triggers"]
        metadata = trigger["metadata"]

        assert trigger["type"] == "kafka"
        assert (literal_topic(metadata["topic"]), metadata["consumerGroup"]) in subscriptions()[service]
        assert spec["maxReplicaCount"] == partitions[metadata["topic"]]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]  # the CRD's own CEL rule, and never 0
        assert int(metadata["lagThreshold"]) > 0
        assert int(metadata["activationLagThreshold"]) >= 0
        assert metadata["offsetResetPolicy"] == "earliest"
        assert "replicas" not in deployment_of(docs, service)["spec"]  # an apply would reset the count

    assert set(scaled) == LAG_SCALED


@pytest.mark.parametrize("service", sorted(LAG_SCALED))
def test_scaling_down_waits_and_goes_one_at_a_time(service: str) -> None:
    behavior = named(built("prod"), "ScaledObject", f"fusion-{service}")["spec"]["advanced"]
    scale_down = behavior["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]

    assert scale_down["stabilizationWindowSeconds"] >= 300
    assert [(policy["type"], policy["value"]) for policy in scale_down["policies"]] == [("Pods", 1)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_reads_the_lag_as_its_own_user_over_tls(overlay: str) -> None:
    docs = built(overlay)
    (auth,) = of_kind(docs, "TriggerAuthentication")
    plain = {
        ref["parameter"]: named(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
        for ref in auth["spec"]["configMapTargetRef"]
    }
    secret = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}

    assert plain == {"sasl": "scram_sha512", "tls": "enable", "username": "fusion-keda"}
    assert secret == {
        "password": ("fusion-keda", "password"),
        "ca": ("fusion-kafka-cluster-ca-cert", "ca.crt"),
    }
    for scaler in of_kind(docs, "ScaledObject"):
        (trigger,) = scaler["spec"]["triggers"]
        target = deployment_of(docs, scaler["spec"]["scaleTargetRef"]["name"].removeprefix("fusion-"))
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
        # KEDA reads the bootstrap address from the Deployment's own environment.
        assert trigger["metadata"]["bootstrapServersFromEnv"] in environment(docs, target)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_scales_on_cpu_and_the_recorder_not_at_all(overlay: str) -> None:
    docs = built(overlay)
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]

    assert hpa["spec"]["scaleTargetRef"]["name"] == "fusion-gateway"
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert "replicas" not in deployment_of(docs, "gateway")["spec"]
    assert deployment_of(docs, "activity")["spec"]["replicas"] >= 1


# Disruptions, placement and shutdown -------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_disruption_budget_and_spreads_over_zones_and_nodes(service: str) -> None:
    docs = built("prod")
    deployment = deployment_of(docs, service)
    labels = deployment["spec"]["selector"]["matchLabels"]
    (budget,) = [
        b for b in of_kind(docs, "PodDisruptionBudget") if b["spec"]["selector"]["matchLabels"] == labels
    ]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]

    assert budget["spec"].get("maxUnavailable") == 1 or budget["spec"].get("minAvailable") == 1
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(c["labelSelector"]["matchLabels"] == labels and c["maxSkew"] == 1 for c in spread)


DRAIN_S = 25.0
"""How long the dispatchers, panel workers and judges wait at shutdown for the work in flight
(`drain_and_commit`, `JudgeService.drain`)."""
CLOSE_S = 10.0
"""Room for what follows: committing offsets, flushing producers, closing clients."""
SHUTDOWN_S = {
    "dispatcher": DRAIN_S,
    "panel-worker": DRAIN_S,
    # Then the transaction under way may take its commit timeout, and each producer its stop timeout.
    "judge": DRAIN_S + COMMIT_TIMEOUT_S + STOP_TIMEOUT_S,
    # The batch in hand is written and committed; one cut short is read again.
    "activity": 0.0,
}


@pytest.mark.parametrize("service", sorted(SHUTDOWN_S))
def test_each_pod_outlives_its_service_s_shutdown(service: str) -> None:
    """The gateway's own drain: tests/unit/test_gateway_shutdown.py."""
    pod = deployment_of(built("prod"), service)["spec"]["template"]["spec"]

    assert pod["terminationGracePeriodSeconds"] >= SHUTDOWN_S[service] + CLOSE_S


# NetworkPolicies ---------------------------------------------------------------------------------

DNS = {("UDP", 53), ("TCP", 53)}
CALLS = {
    "dispatcher": set(),
    "panel-worker": {("TCP", 443), ("TCP", 80)},  # model providers; web pages for research tools
    "judge": {("TCP", 443)},
    "gateway": {("TCP", 443), ("TCP", 5432)},  # model providers; the activity database (the Studio)
    "activity": {("TCP", 5432)},
}


def selects(policy: Doc, labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    matched = all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        matched = matched and labels.get(expression["key"]) in expression["values"]
    return matched


def policies_of(docs: Iterable[Doc], service: str, direction: str) -> list[Doc]:
    labels = deployment_of(docs, service)["spec"]["template"]["metadata"]["labels"]
    return [
        policy
        for policy in of_kind(docs, "NetworkPolicy")
        if selects(policy, labels) and direction in policy["spec"]["policyTypes"]
    ]


def test_the_namespace_denies_all_traffic_that_no_policy_allows() -> None:
    deny = named(built("prod"), "NetworkPolicy", "fusion-default-deny")["spec"]

    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_reaches_only_dns_kafka_and_what_it_calls(service: str) -> None:
    docs = built("prod")
    kafka_port = int(
        named(docs, "ConfigMap", "fusion-settings")["data"]["FUSION_KAFKA_BOOTSTRAP"].rpartition(":")[2]
    )
    reached = set()
    for policy in policies_of(docs, service, "Egress"):
        for rule in policy["spec"].get("egress", []):
            reached |= {(port["protocol"], port["port"]) for port in rule["ports"]}

    assert reached == DNS | {("TCP", kafka_port)} | CALLS[service]


def test_kafka_is_reached_only_at_the_brokers_of_the_cluster_that_holds_the_topics() -> None:
    docs = built("prod")
    (topic_namespace,) = {topic["metadata"]["namespace"] for topic in of_kind(docs, "KafkaTopic")}
    (cluster,) = {topic["metadata"]["labels"]["strimzi.io/cluster"] for topic in of_kind(docs, "KafkaTopic")}
    (rule,) = named(docs, "NetworkPolicy", "fusion-kafka")["spec"]["egress"]
    (peer,) = rule["to"]

    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": topic_namespace}
    assert peer["podSelector"]["matchLabels"] == {
        "strimzi.io/cluster": cluster,
        "strimzi.io/broker-role": "true",
    }
    assert (
        f".{topic_namespace}.svc:"
        in named(docs, "ConfigMap", "fusion-settings")["data"]["FUSION_KAFKA_BOOTSTRAP"]
    )


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_reached_only_on_its_health_port_and_the_gateway_on_its_api(service: str) -> None:
    docs = built("prod")
    reached = set()
    for policy in policies_of(docs, service, "Ingress"):
        for rule in policy["spec"].get("ingress", []):
            peers = tuple(json.dumps(peer, sort_keys=True) for peer in rule.get("from", [])) or ("anywhere",)
            reached |= {(port["port"], peer) for port in rule["ports"] for peer in peers}
    prometheus = json.dumps(
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    )

    expected = {("health", prometheus)} | ({("health", "anywhere")} if service == "gateway" else set())
    assert reached == expected
