"""Which Kafka user each Fusion service connects as, and exactly what that user may do: the one table
that the secure local broker (infra/kafka-secure.sh), its tests, the docs and the Strimzi `KafkaUser`
manifests are made from. Plain data, importable without Kafka.

Every rule allows, from any host; the broker refuses what no rule allows
(`allow.everyone.if.no.acl.found=false`). Read, Write and Delete imply Describe, so Describe is never
listed. IdempotentWrite is implied by Write on any topic since Kafka 3.0, and listed for the services
whose producers are idempotent (all of them) so that older brokers agree.

`python -m fusion.kafka.acls users|bindings` prints the users, or every rule as
`principal resource-type pattern-type name operation` in the Kafka Admin API's enum names.
"""

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fusion_contracts import topics

__all__ = [
    "ACLS",
    "CLUSTER",
    "JUDGE_TRANSACTIONAL_ID_PREFIX",
    "Acl",
    "Operation",
    "PatternType",
    "ResourceType",
    "kafka_bindings",
    "strimzi_acls",
    "user",
]

ResourceType = Literal["topic", "group", "transactionalId", "cluster"]
PatternType = Literal["literal", "prefix"]
Operation = Literal["Read", "Write", "Create", "Delete", "DescribeConfigs", "IdempotentWrite"]

CLUSTER = "kafka-cluster"
"""The name Kafka gives the cluster resource."""

JUDGE_TRANSACTIONAL_ID_PREFIX = "fusion-judge-answers-"
"""The judges' transactional ids, one per answers partition (`fusion.judge.output.transactional_id`)."""


@dataclass(frozen=True)
class Acl:
    """One rule, in the words of Strimzi's `KafkaUser` (`spec.authorization.acls[]`): a resource, by
    type, name and pattern (`prefix`: every name that starts with it), and what the user may do to it."""

    type: ResourceType
    name: str
    pattern: PatternType
    operations: tuple[Operation, ...]


def _topic(name: str, *operations: Operation, prefix: bool = False) -> Acl:
    return Acl("topic", name, "prefix" if prefix else "literal", operations)


def _group(name: str) -> Acl:
    """A consumer group its consumers join and commit in."""
    return Acl("group", name, "literal", ("Read",))


_IDEMPOTENT = Acl("cluster", CLUSTER, "literal", ("IdempotentWrite",))
_DEAD_LETTERS = _topic(topics.DLQ, "Write")
"""Every service that consumes dead-letters what it cannot handle."""

ACLS: Mapping[str, tuple[Acl, ...]] = {
    "dispatcher": (
        _topic(topics.REQUESTS, "Read"),
        _group("fusion-dispatcher"),
        _topic(topics.TASKS, "Write"),
        _topic(topics.ANSWERS, "Write"),  # plans, and rejections of invalid requests
        _DEAD_LETTERS,
        _IDEMPOTENT,
    ),
    "panel-worker": (
        _topic(topics.TASKS, "Read"),
        _group("fusion-panel-workers"),
        _topic(topics.ANSWERS, "Write"),
        _DEAD_LETTERS,
        _IDEMPOTENT,
    ),
    "judge": (
        _topic(topics.ANSWERS, "Read"),
        _group("fusion-judges"),
        _topic(topics.RELEASED, "Read", "Write"),  # its markers, read again on taking a partition over
        _topic(topics.RESULTS, "Write"),
        _topic(topics.REPLIES_PREFIX, "Write", prefix=True),  # results and chunks to a gateway's reply_to
        _DEAD_LETTERS,
        Acl("transactionalId", JUDGE_TRANSACTIONAL_ID_PREFIX, "prefix", ("Write",)),
        _IDEMPOTENT,
    ),
    "gateway": (
        _topic(topics.REQUESTS, "Write"),
        # Its own reply topic: created, read, written (presence) and deleted at shutdown; and the
        # reply topics of gateways gone, dated and deleted by its sweeps.
        _topic(topics.REPLIES_PREFIX, "Create", "Read", "Write", "Delete", prefix=True),
        # The brokers' default.replication.factor, which its reply topic is created with.
        Acl("cluster", CLUSTER, "literal", ("DescribeConfigs", "IdempotentWrite")),
    ),
    "activity": (
        _topic(topics.REQUESTS, "Read"),
        _group("fusion-activity-requests"),
        _topic(topics.RESULTS, "Read"),
        _group("fusion-activity-results"),
        _topic(topics.REPLIES_PREFIX, "Read", prefix=True),
        _group("fusion-activity-replies"),
        _DEAD_LETTERS,
        _IDEMPOTENT,
    ),
    "client": (  # `fusion ask`, `fusion eval`, and any backend that submits requests
        _topic(topics.REQUESTS, "Write"),
        _topic(topics.RESULTS, "Read"),
        _topic(topics.ANSWERS, "Read"),  # the progress `fusion ask` shows
        _IDEMPOTENT,
    ),
}
"""By service (as `fusion serve` names it; `client` for whoever submits requests and reads
`fusion.results`). Creating Fusion's topics (`fusion topics create`) is left to an administrator,
or to Strimzi's `KafkaTopic`s."""


def user(service: str) -> str:
    """The Kafka user (the Strimzi `KafkaUser`'s name) a service connects as."""
    return f"fusion-{service}"


def strimzi_acls(service: str) -> list[dict[str, Any]]:
    """A service's rules as a Strimzi `KafkaUser`'s `spec.authorization.acls` (type `simple`)."""
    rules: list[dict[str, Any]] = []
    for acl in ACLS[service]:
        resource: dict[str, Any] = {"type": acl.type}
        if acl.type != "cluster":
            resource |= {"name": acl.name, "patternType": acl.pattern}
        rules.append({"resource": resource, "operations": list(acl.operations), "host": "*"})
    return rules


_KAFKA_RESOURCE_TYPES: dict[ResourceType, str] = {
    "topic": "TOPIC",
    "group": "GROUP",
    "transactionalId": "TRANSACTIONAL_ID",
    "cluster": "CLUSTER",
}
_KAFKA_PATTERN_TYPES: dict[PatternType, str] = {"literal": "LITERAL", "prefix": "PREFIXED"}
_KAFKA_OPERATIONS: dict[Operation, str] = {
    "Read": "READ",
    "Write": "WRITE",
    "Create": "CREATE",
    "Delete": "DELETE",
    "DescribeConfigs": "DESCRIBE_CONFIGS",
    "IdempotentWrite": "IDEMPOTENT_WRITE",
}


def kafka_bindings() -> list[tuple[str, str, str, str, str]]:
    """Every rule as one ACL binding per operation: principal, resource type, pattern type, resource
    name, operation, in the names of Kafka's Admin API (`ResourceType`, `PatternType`, `AclOperation`)."""
    return [
        (
            f"User:{user(service)}",
            _KAFKA_RESOURCE_TYPES[acl.type],
            _KAFKA_PATTERN_TYPES[acl.pattern],
            acl.name,
            _KAFKA_OPERATIONS[operation],
        )
        for service, acls in ACLS.items()
        for acl in acls
        for operation in acl.operations
    ]


def main(argv: list[str]) -> int:
    if argv == ["users"]:
        print("\n".join(user(service) for service in ACLS))
        return 0
    if argv == ["bindings"]:
        print("\n".join(" ".join(binding) for binding in kafka_bindings()))
        return 0
    print("usage: python -m fusion.kafka.acls users|bindings", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
