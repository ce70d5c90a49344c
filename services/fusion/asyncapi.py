"""The AsyncAPI 3.0 document of every Fusion topic, generated into `contracts/asyncapi.json`.

Each topic is a channel with its messages (their payloads are the contracts' JSON Schemas), its key
and partitions; each service's part is an operation (`send` or `receive`) tagged with the service.

This is a generator of its own, not FastStream's: FastStream describes the subscribers and publishers
declared on a broker, and Fusion's services consume through `fusion.kafka.batches` (one batch
subscriber whose records are decoded per contract) and publish through their own producers, so it
would see neither the messages nor the publishers. Stand-in declarations would not be enough
either: FastStream 0.7.8 writes no partitions and no message key into the Kafka bindings, has no
channel parameters (`fusion.replies.{instance}`), and makes one channel per handler, not per topic.
"""

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fusion_contracts
from fusion_contracts import limits, topics
from fusion_contracts.common import RequestDigest, RequestId
from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from fusion.gateway.link import REPLY_RETENTION_MS
from fusion.kafka.admin import BROKER_TIMESTAMPS, TopicPlan, topic_plan
from fusion.schemas import MESSAGES
from fusion.settings import Settings

__all__ = ["DOCUMENT", "ROLES", "Role", "document", "is_stale", "render", "served", "write_document"]

DOCUMENT = Path(fusion_contracts.__file__).resolve().parent.parent / "asyncapi.json"

Service = Literal["dispatcher", "panel-worker", "judge", "gateway", "activity", "client"]
Action = Literal["send", "receive"]

SERVICES: dict[Service, str] = {
    "dispatcher": "`fusion serve dispatcher`: plans each request.",
    "panel-worker": "`fusion serve panel-worker`: runs the members' model calls.",
    "judge": "`fusion serve judge`: gathers the answers, fuses them, publishes the result.",
    "gateway": "`fusion serve gateway`: the OpenAI-compatible HTTP API.",
    "activity": "`fusion serve activity`: records every request and result in the activity database.",
    "client": "Any service using Fusion over Kafka (`FusionClient`, `fusion ask`); see docs/kafka-api.md.",
}


def _body(pattern: str) -> str:
    return pattern.removeprefix("^").removesuffix("$")


_ID = TypeAdapter(RequestId).json_schema()
_DIGEST = _body(TypeAdapter(RequestDigest).json_schema()["pattern"])

KEYS: dict[str, dict[str, Any]] = {
    "request": {**_ID, "description": "The request id (`topics.request_key`)."},
    "task": {
        "type": "string",
        "pattern": f"^{_body(_ID['pattern'])}/[0-9]+$",
        "description": "`<request id>/<member index>` (`topics.task_key`): a request's members land on "
        "different partitions, so they run on different workers.",
    },
    "marker": {
        "type": "string",
        "pattern": f"^{_body(_ID['pattern'])}(#{_DIGEST})?$",
        "description": "The released request's id, or `<request id>#<request digest>` for a rejected "
        "duplicate (another request with an id already used).",
    },
    "instance": {"type": "string", "description": "The gateway's instance id (`FUSION_INSTANCE_ID`)."},
    "original": {
        "type": ["string", "null"],
        "description": f"The key of the message that could not be used (its first "
        f"{limits.MAX_DEAD_LETTER_KEY_BYTES} bytes); null when it had none.",
    },
}
"""Message keys as JSON Schemas of their UTF-8 text."""

SUMMARIES: dict[str, tuple[str, str]] = {
    "FusionRequest": ("request", "A request to fuse: the conversation, the panel, the judge, the policy."),
    "PanelTask": ("task", "One panel member's model call."),
    "PanelPlan": ("request", "What the judge waits for: the request's members, deadlines and reply topic."),
    "PanelAnswer": ("request", "One member's outcome."),
    "PanelRejection": ("request", "A request the dispatcher refused; the judge publishes its result."),
    "FusedResult": ("request", "The fused answer, the analysis, each member's outcome, usage and cost."),
    "AnswerChunk": (
        "request",
        "A piece of the final answer as the judge writes it (requests with `stream`).",
    ),
    "FusionProgress": ("request", "What a fusion is doing (requests with `progress`)."),
    "GatewayPresence": ("instance", "A gateway's sign of life on its own reply topic."),
    "DeadLetter": ("original", "A message a service could not use: the reason and its original bytes."),
}
"""Each contract's key (of `KEYS`) and a one-line summary; its payload is its JSON Schema."""

MARKER = "ReleasedMarker"
REPLIES = ("FusedResult", "AnswerChunk", "FusionProgress")


@dataclass(frozen=True, slots=True)
class Channel:
    address: str | None
    messages: tuple[str, ...]
    description: str
    plan: TopicPlan | None = None
    parameters: dict[str, Any] | None = None


def _channels(settings: Settings) -> dict[str, Channel]:
    plans = {plan.name: plan for plan in topic_plan(settings)}
    instance = "A gateway's `FUSION_INSTANCE_ID`, characters other than `A-Za-z0-9._-` replaced by `-`."
    return {
        "requests": Channel(topics.REQUESTS, ("FusionRequest",), "Requests to fuse.", plans[topics.REQUESTS]),
        "tasks": Channel(topics.TASKS, ("PanelTask",), "One task per panel member.", plans[topics.TASKS]),
        "answers": Channel(
            topics.ANSWERS,
            ("PanelPlan", "PanelAnswer", "PanelRejection"),
            "Everything the judge gathers, told apart by `kind`. Keyed by request id, so one judge "
            "partition sees a request whole.",
            plans[topics.ANSWERS],
        ),
        "results": Channel(
            topics.RESULTS,
            REPLIES,
            "Results of requests without `reply_to`, ahead of them their chunks and progress events; "
            "told apart by `kind`. Read `read_committed`: results are published in transactions.",
            plans[topics.RESULTS],
        ),
        "replies": Channel(
            topics.REPLIES_PREFIX + "{instance}",
            (*REPLIES, "GatewayPresence"),
            "A gateway instance's own reply topic, named in the `reply_to` of every request it "
            "publishes; it creates the topic and a gateway deletes it once silent.",
            # As `fusion.gateway.link` creates it.
            TopicPlan(
                topics.REPLIES_PREFIX + "{instance}",
                1,
                {"retention.ms": str(REPLY_RETENTION_MS), **BROKER_TIMESTAMPS},
            ),
            {"instance": {"description": instance}},
        ),
        "replyTo": Channel(
            None,
            REPLIES,
            "A topic of the client's own that a request names in `reply_to`; it must exist and match "
            "`FUSION_REPLY_TOPICS`, or the result goes to `fusion.results` (and a dead letter says why).",
        ),
        "released": Channel(
            topics.RELEASED,
            (MARKER,),
            "The judge's markers of released requests, one partition per answers partition: a judge "
            "taking a partition over reads which of its requests already have their result.",
            plans[topics.RELEASED],
        ),
        "dlq": Channel(
            topics.DLQ,
            ("DeadLetter",),
            "Messages a service could not use, with the reason. Read by operators, by nothing in Fusion.",
            plans[topics.DLQ],
        ),
    }


@dataclass(frozen=True, slots=True)
class Role:
    service: Service
    action: Action
    channel: str
    messages: tuple[str, ...]
    summary: str


ROLES: tuple[Role, ...] = (
    Role("client", "send", "requests", ("FusionRequest",), "Publish a request."),
    Role("client", "receive", "results", REPLIES, "Read results (without a group), matched by request id."),
    Role("client", "receive", "replyTo", REPLIES, "Read the results of requests that named this topic."),
    Role(
        "client",
        "receive",
        "answers",
        ("PanelPlan", "PanelAnswer"),
        "`fusion ask` only, without a group: each request's plan and answers, to show progress.",
    ),
    Role("gateway", "send", "requests", ("FusionRequest",), "Publish a request naming its reply topic."),
    Role("gateway", "send", "replies", ("GatewayPresence",), "Say it is alive, every minute or so."),
    Role("gateway", "receive", "replies", (*REPLIES, "GatewayPresence"), "Read its own replies."),
    Role("dispatcher", "receive", "requests", ("FusionRequest",), "Plan each request."),
    Role("dispatcher", "send", "answers", ("PanelPlan", "PanelRejection"), "A plan, or a rejection."),
    Role("dispatcher", "send", "tasks", ("PanelTask",), "One task per member, with the plan."),
    Role("dispatcher", "send", "dlq", ("DeadLetter",), "Requests it cannot read or keeps failing to handle."),
    Role("panel-worker", "receive", "tasks", ("PanelTask",), "Run each member's model call."),
    Role("panel-worker", "send", "answers", ("PanelAnswer",), "Each member's outcome."),
    Role("panel-worker", "send", "dlq", ("DeadLetter",), "Tasks it cannot read or keeps failing to handle."),
    Role("judge", "receive", "answers", ("PanelPlan", "PanelAnswer", "PanelRejection"), "Gather by request."),
    Role(
        "judge",
        "send",
        "results",
        REPLIES,
        "For requests without `reply_to` (or whose `reply_to` refused the result): the result, in a "
        "transaction, and ahead of it the chunks and progress events asked for.",
    ),
    Role("judge", "send", "replies", REPLIES, "The same for the gateways' requests."),
    Role("judge", "send", "replyTo", REPLIES, "The same for requests that name the topic."),
    Role("judge", "send", "released", (MARKER,), "A marker in each result's transaction."),
    Role("judge", "receive", "released", (MARKER,), "Without a group, on taking answers partitions over."),
    Role(
        "judge",
        "send",
        "dlq",
        ("DeadLetter",),
        "Answers it cannot read or handle; results their `reply_to` refused.",
    ),
    Role("activity", "receive", "requests", ("FusionRequest",), "Record each request."),
    Role("activity", "receive", "results", REPLIES, "Record each result."),
    Role("activity", "receive", "replies", (*REPLIES, "GatewayPresence"), "Record each gateway's results."),
    Role("activity", "send", "dlq", ("DeadLetter",), "Records the database refuses."),
)
"""Who publishes and who reads what, as the services' code does (checked by tests/unit/test_asyncapi.py)."""


def _topic_configuration(config: dict[str, str]) -> dict[str, Any]:
    """The topic's settings as `fusion.kafka.admin` creates it, typed as the Kafka binding wants them."""
    typed: dict[str, Any] = {}
    for name, value in {"max.message.bytes": str(limits.MAX_MESSAGE_BYTES), **config}.items():
        if name == "cleanup.policy":
            typed[name] = value.split(",")
        elif name.endswith((".ms", ".bytes")):
            typed[name] = int(value)
        else:
            typed[name] = value
    return dict(sorted(typed.items()))


def _channel(channel: Channel) -> dict[str, Any]:
    out: dict[str, Any] = {"address": channel.address, "description": channel.description}
    if channel.parameters:
        out["parameters"] = channel.parameters
    out["messages"] = {name: {"$ref": f"#/components/messages/{name}"} for name in channel.messages}
    if channel.plan is not None:
        out["bindings"] = {
            "kafka": {
                "partitions": channel.plan.partitions,
                "topicConfiguration": _topic_configuration(channel.plan.config),
                "bindingVersion": "0.5.0",
            }
        }
    return out


def _operation(role: Role) -> dict[str, Any]:
    return {
        "action": role.action,
        "channel": {"$ref": f"#/channels/{role.channel}"},
        "summary": role.summary,
        "tags": [{"name": role.service}],
        "messages": [{"$ref": f"#/channels/{role.channel}/messages/{name}"} for name in role.messages],
    }


def _operation_id(role: Role) -> str:
    return f"{role.service}.{role.action}.{role.channel}"


def _messages() -> dict[str, Any]:
    messages: dict[str, Any] = {}
    for model in MESSAGES:
        key, summary = SUMMARIES[model.__name__]
        messages[model.__name__] = {
            "name": model.__name__,
            "summary": summary,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
            "bindings": {"kafka": {"key": KEYS[key], "bindingVersion": "0.5.0"}},
        }
    messages[MARKER] = {
        "name": MARKER,
        "summary": "This request has its result: written with the result, in its transaction.",
        "contentType": "application/octet-stream",
        "payload": {"type": "string", "maxLength": 0, "description": "Empty: the key names the request."},
        "bindings": {"kafka": {"key": KEYS["marker"], "bindingVersion": "0.5.0"}},
    }
    return messages


def _schemas() -> dict[str, Any]:
    """Every contract's JSON Schema (as in `contracts/schemas/`), their shared parts once each."""
    _, defs = models_json_schema(
        [(model, "validation") for model in MESSAGES], ref_template="#/components/schemas/{model}"
    )
    return dict(sorted(defs["$defs"].items()))


def document(settings: Settings | None = None) -> dict[str, Any]:
    """The document; by default for the settings' defaults, whatever this environment's `FUSION_*`."""
    settings = settings or Settings.model_construct()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Fusion",
            "version": str(limits.SCHEMA_VERSION),
            "description": "Fusion's Kafka topics. Every value is JSON (UTF-8) except the markers' (empty); "
            "`schema_version` is the contracts' major (the version above), and readers ignore fields "
            'they do not know (docs/kafka-api.md, "Versions"). Generated by `fusion schemas` from '
            "`contracts/fusion_contracts/`: do not edit.",
            "tags": [{"name": name, "description": text} for name, text in SERVICES.items()],
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": settings.kafka_bootstrap,
                "protocol": "kafka",
                "description": "The brokers of `FUSION_KAFKA_BOOTSTRAP` (its default here).",
            }
        },
        "channels": {name: _channel(channel) for name, channel in _channels(settings).items()},
        "operations": {_operation_id(role): _operation(role) for role in ROLES},
        "components": {"schemas": _schemas(), "messages": _messages()},
    }


def render() -> str:
    return json.dumps(document(), indent=2) + "\n"


@functools.cache
def served() -> bytes:
    """What the gateway serves at `/asyncapi.json`: the committed document (the tests keep them
    equal), rendered here because an installed package does not carry `contracts/asyncapi.json`."""
    return render().encode()


def write_document() -> Path:
    DOCUMENT.write_text(render(), encoding="utf-8")
    return DOCUMENT


def is_stale() -> bool:
    """Whether the committed document is missing or differs from the contracts."""
    return not DOCUMENT.is_file() or DOCUMENT.read_text(encoding="utf-8") != render()
