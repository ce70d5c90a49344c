"""fusion.asyncapi: the committed AsyncAPI document is current, valid AsyncAPI 3.0, and says what the
services' code does."""

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fusion import asyncapi, schemas
from fusion.cli.main import main
from fusion.judge.gathering import duplicate_key
from fusion.kafka.admin import topic_plan
from fusion.settings import Settings
from fusion_contracts import GatewayPresence, topics
from fusion_contracts.common import request_digest

from tests.support.activity import a_request, a_result

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = ROOT / "tests" / "data" / "asyncapi" / "asyncapi-3.0.0.schema.json"
SERVICES = ROOT / "services" / "fusion"

# Who sends and who reads each topic, read off the services' code (the apps, `kafka/dead_letters.py`,
# `gateway/link.py`, `judge/output.py`, `activity/recorder.py`, `client.py`).
EXPECTED_ROLES = {
    ("client", "send", "requests"),
    ("client", "receive", "results"),
    ("client", "receive", "replyTo"),
    ("client", "receive", "answers"),
    ("gateway", "send", "requests"),
    ("gateway", "send", "replies"),
    ("gateway", "receive", "replies"),
    ("dispatcher", "receive", "requests"),
    ("dispatcher", "send", "answers"),
    ("dispatcher", "send", "tasks"),
    ("dispatcher", "send", "dlq"),
    ("panel-worker", "receive", "tasks"),
    ("panel-worker", "send", "answers"),
    ("panel-worker", "send", "dlq"),
    ("judge", "receive", "answers"),
    ("judge", "send", "results"),
    ("judge", "send", "replies"),
    ("judge", "send", "replyTo"),
    ("judge", "send", "released"),
    ("judge", "receive", "released"),
    ("judge", "send", "dlq"),
    ("activity", "receive", "requests"),
    ("activity", "receive", "results"),
    ("activity", "receive", "replies"),
    ("activity", "send", "dlq"),
}

EXPECTED_SENDERS = {
    "FusionRequest": {"client", "gateway"},
    "PanelTask": {"dispatcher"},
    "PanelPlan": {"dispatcher"},
    "PanelRejection": {"dispatcher"},
    "PanelAnswer": {"panel-worker"},
    "FusedResult": {"judge"},
    "AnswerChunk": {"judge"},
    "FusionProgress": {"judge"},
    "GatewayPresence": {"gateway"},
    "DeadLetter": {"dispatcher", "panel-worker", "judge", "activity"},
    "ReleasedMarker": {"judge"},
}

CHANNEL_OF_CONSTANT = {
    "REQUESTS": "requests",
    "TASKS": "tasks",
    "ANSWERS": "answers",
    "RESULTS": "results",
    "REPLIES_PREFIX": "replies",
    "RELEASED": "released",
    "DLQ": "dlq",
}

CODE_OF_SERVICE = {
    "dispatcher": ["dispatcher/*.py"],
    "panel-worker": ["panel_worker/*.py"],
    "judge": ["judge/*.py"],
    "gateway": ["gateway/*.py"],
    "activity": ["activity/*.py"],
    "client": ["client.py", "kafka/tap.py"],
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(asyncapi.DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def roles(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (op["tags"][0]["name"], op["action"], op["channel"]["$ref"].removeprefix("#/channels/"))
        for op in doc["operations"].values()
    }


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def payload_validator(doc: dict[str, Any], message: str) -> jsonschema.Draft7Validator:
    """Validates against a message's payload, its references resolved inside the document."""
    return jsonschema.Draft7Validator(
        {"$ref": doc["components"]["messages"][message]["payload"]["$ref"], "components": doc["components"]}
    )


def key_schema(doc: dict[str, Any], message: str) -> dict[str, Any]:
    key: dict[str, Any] = doc["components"]["messages"][message]["bindings"]["kafka"]["key"]
    return key


# The document is current.


def test_the_committed_document_is_not_stale() -> None:
    assert not asyncapi.is_stale()


def test_the_gateway_serves_the_committed_document() -> None:
    assert asyncapi.served() == asyncapi.DOCUMENT.read_bytes()


def test_a_missing_or_edited_document_is_stale_until_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(asyncapi, "DOCUMENT", tmp_path / "asyncapi.json")
    assert asyncapi.is_stale()
    assert asyncapi.write_document() == tmp_path / "asyncapi.json"
    assert not asyncapi.is_stale()
    (tmp_path / "asyncapi.json").write_text(asyncapi.render().replace("fusion.dlq", "fusion.dead"))
    assert asyncapi.is_stale()


def test_fusion_schemas_writes_and_checks_the_document(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(schemas, "SCHEMA_DIR", tmp_path / "schemas")
    monkeypatch.setattr(asyncapi, "DOCUMENT", tmp_path / "asyncapi.json")
    assert main(["schemas", "--check"]) == 1
    assert f"stale: {tmp_path / 'asyncapi.json'}" in capsys.readouterr().err.splitlines()
    assert main(["schemas"]) == 0
    assert str(tmp_path / "asyncapi.json") in capsys.readouterr().out.splitlines()
    assert main(["schemas", "--check"]) == 0


def test_the_document_ignores_this_environments_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSION_PARTITIONS_TASKS", "99")
    monkeypatch.setenv("FUSION_KAFKA_BOOTSTRAP", "elsewhere:9092")
    assert not asyncapi.is_stale()


# The document is valid AsyncAPI 3.0.


def test_the_document_is_valid_against_the_official_asyncapi_3_schema(doc: dict[str, Any]) -> None:
    official = json.loads(OFFICIAL.read_text(encoding="utf-8"))
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message[:200]}"
        for error in jsonschema.Draft7Validator(official).iter_errors(doc)
    ]
    assert errors == []


def test_the_official_schema_refuses_a_broken_document(doc: dict[str, Any]) -> None:
    """The check above can fail: an AsyncAPI 2 action is refused."""
    official = json.loads(OFFICIAL.read_text(encoding="utf-8"))
    broken = copy.deepcopy(doc)
    broken["operations"]["judge.send.results"]["action"] = "publish"
    assert not jsonschema.Draft7Validator(official).is_valid(broken)


def test_every_reference_resolves_inside_the_document(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert found
    for ref in found:
        assert resolve(doc, ref) is not None, ref


def test_each_operation_sends_or_reads_messages_of_its_own_channel(doc: dict[str, Any]) -> None:
    for name, op in doc["operations"].items():
        channel = op["channel"]["$ref"]
        assert op["messages"], name
        for message in op["messages"]:
            assert message["$ref"].startswith(f"{channel}/messages/"), (name, message)


def test_the_reply_topics_channel_declares_its_parameter(doc: dict[str, Any]) -> None:
    replies = doc["channels"]["replies"]
    assert replies["address"] == topics.REPLIES_PREFIX + "{instance}"
    assert set(re.findall(r"{(\w+)}", replies["address"])) == set(replies["parameters"])


# Every topic and every message is there.


def test_every_topic_has_a_channel(doc: dict[str, Any]) -> None:
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert set(topics.ALL) <= addresses
    assert any(address and address.startswith(topics.REPLIES_PREFIX) for address in addresses)


def test_every_contract_message_is_on_a_channel(doc: dict[str, Any]) -> None:
    on_channels = {name for channel in doc["channels"].values() for name in channel["messages"]}
    contracts = {model.__name__ for model in schemas.MESSAGES}
    assert contracts <= on_channels
    assert on_channels == set(doc["components"]["messages"])


def test_the_payloads_are_the_contracts_json_schemas(doc: dict[str, Any]) -> None:
    components = doc["components"]["schemas"]
    for model in schemas.MESSAGES:
        schema = model.model_json_schema(mode="validation", ref_template="#/components/schemas/{model}")
        defs = schema.pop("$defs", {})
        assert components[model.__name__] == schema, model.__name__
        for name, part in defs.items():
            assert components[name] == part, (model.__name__, name)


def test_messages_of_the_contracts_validate_against_their_payloads(doc: dict[str, Any]) -> None:
    request = a_request(reply_to={"topic": "fusion.replies.gw-1", "partition": 0})
    examples = {
        "FusionRequest": request,
        "FusedResult": a_result(request),
        "GatewayPresence": GatewayPresence(instance_id="gw-1"),
    }
    for name, message in examples.items():
        payload_validator(doc, name).validate(message.model_dump(mode="json"))
    assert not payload_validator(doc, "FusionRequest").is_valid({"messages": "not a list"})


def test_the_keys_are_those_the_services_write(doc: dict[str, Any]) -> None:
    def valid(message: str, key: bytes) -> bool:
        return jsonschema.Draft7Validator(key_schema(doc, message)).is_valid(key.decode())

    assert valid("FusionRequest", topics.request_key("order-4711"))
    assert valid("PanelTask", topics.task_key("order-4711", 3))
    assert not valid("PanelTask", topics.request_key("order-4711"))
    assert valid("ReleasedMarker", b"order-4711")
    assert valid("ReleasedMarker", duplicate_key("order-4711", request_digest(b"{}")).encode())
    assert not valid("ReleasedMarker", b"order-4711#not-a-digest")
    for message in ("PanelPlan", "PanelAnswer", "PanelRejection", "FusedResult", "AnswerChunk"):
        assert key_schema(doc, message) == key_schema(doc, "FusionRequest"), message


def test_the_partitions_are_those_fusion_topics_create_makes(doc: dict[str, Any]) -> None:
    partitions = {
        channel["address"]: channel["bindings"]["kafka"]["partitions"]
        for channel in doc["channels"].values()
        if "bindings" in channel
    }
    defaults = {plan.name: plan.partitions for plan in topic_plan(Settings.model_construct())}
    assert {name: partitions[name] for name in defaults} == defaults
    assert partitions[topics.REPLIES_PREFIX + "{instance}"] == 1


# The operations name the right services.


def test_the_operations_name_the_right_services(doc: dict[str, Any]) -> None:
    assert roles(doc) == EXPECTED_ROLES
    known = {tag["name"] for tag in doc["info"]["tags"]}
    assert {service for service, _, _ in roles(doc)} == known


def test_each_message_is_sent_by_the_right_services(doc: dict[str, Any]) -> None:
    senders: dict[str, set[str]] = {}
    for op in doc["operations"].values():
        if op["action"] == "send":
            for message in op["messages"]:
                senders.setdefault(message["$ref"].rsplit("/", 1)[1], set()).add(op["tags"][0]["name"])
    assert senders == EXPECTED_SENDERS


def test_every_channel_is_written_and_all_but_the_dead_letters_read(doc: dict[str, Any]) -> None:
    by_action = {
        action: {channel for _, act, channel in roles(doc) if act == action} for action in ("send", "receive")
    }
    assert by_action["send"] == set(doc["channels"])
    assert by_action["receive"] == set(doc["channels"]) - {"dlq"}


def test_each_topic_a_service_names_in_its_code_is_one_of_its_channels(doc: dict[str, Any]) -> None:
    """A guard: a service that starts using another topic fails here until the document says so."""
    for service, globs in CODE_OF_SERVICE.items():
        code = "".join(path.read_text(encoding="utf-8") for glob in globs for path in SERVICES.glob(glob))
        named = {CHANNEL_OF_CONSTANT[c] for c in re.findall(r"topics\.([A-Z_]+)\b", code)}
        documented = {channel for who, _, channel in roles(doc) if who == service}
        assert named <= documented, service


def test_the_services_that_dead_letter_are_those_the_document_names(doc: dict[str, Any]) -> None:
    code = "".join(path.read_text(encoding="utf-8") for path in SERVICES.rglob("*.py"))
    inboxes = set(re.findall(r"Inbox\(broker, \"([a-z-]+)\"\)", code))
    assert "undeliverable(" in (SERVICES / "judge" / "output.py").read_text(encoding="utf-8")
    documented = {who for who, action, channel in roles(doc) if (action, channel) == ("send", "dlq")}
    assert inboxes | {"judge"} == documented
