"""The ACL table (fusion.kafka.acls) against the code it describes: the consumer groups the services
join, the judges' transactional ids, and every topic read and written by someone; and the forms it is
rendered in (Strimzi's KafkaUser ACLs, the Admin API's bindings)."""

import re
import subprocess
import sys
from pathlib import Path

from fusion.judge.output import GROUP, transactional_id
from fusion.kafka.acls import ACLS, JUDGE_TRANSACTIONAL_ID_PREFIX, kafka_bindings, strimzi_acls, user
from fusion_contracts import topics

SERVICES = Path(__file__).resolve().parents[2] / "services" / "fusion"
SUBSCRIPTION = re.compile(r'BatchSubscription\(\s*broker,\s*[^,]+,\s*"([^"]+)"')


def groups_in_the_code() -> set[str]:
    found = {GROUP}
    for path in SERVICES.rglob("*.py"):
        found |= set(SUBSCRIPTION.findall(path.read_text()))
    return found


def test_the_table_names_every_consumer_group_the_services_join_and_no_other() -> None:
    in_table = {acl.name for acls in ACLS.values() for acl in acls if acl.type == "group"}

    assert len(groups_in_the_code()) >= 6
    assert in_table == groups_in_the_code()


def test_the_judges_transactional_ids_fall_under_the_tables_prefix() -> None:
    assert all(transactional_id(p).startswith(JUDGE_TRANSACTIONAL_ID_PREFIX) for p in (0, 7, 123))
    judge = [acl for acl in ACLS["judge"] if acl.type == "transactionalId"]
    assert [(acl.name, acl.pattern, acl.operations) for acl in judge] == [
        (JUDGE_TRANSACTIONAL_ID_PREFIX, "prefix", ("Write",))
    ]


def test_every_topic_is_written_by_some_service_and_read_by_some_service() -> None:
    def who(operation: str, topic: str) -> set[str]:
        return {
            service
            for service, acls in ACLS.items()
            for acl in acls
            if acl.type == "topic" and operation in acl.operations and acl.name == topic
        }

    for topic in (*topics.ALL, topics.REPLIES_PREFIX):
        assert who("Write", topic), topic
        if topic != topics.DLQ:  # dead letters are for whoever operates Fusion
            assert who("Read", topic), topic
    assert who("Write", topics.RESULTS) == {"judge"}
    assert who("Write", topics.DLQ) == {"dispatcher", "panel-worker", "judge", "activity"}


def test_strimzi_acls_name_no_cluster_and_use_strimzis_words() -> None:
    judge = strimzi_acls("judge")

    assert {"resource": {"type": "cluster"}, "operations": ["IdempotentWrite"], "host": "*"} in judge
    assert {
        "resource": {"type": "transactionalId", "name": "fusion-judge-answers-", "patternType": "prefix"},
        "operations": ["Write"],
        "host": "*",
    } in judge


def test_the_admin_api_bindings_are_one_per_operation_for_each_services_user() -> None:
    bindings = kafka_bindings()

    assert len(bindings) == sum(len(acl.operations) for acls in ACLS.values() for acl in acls)
    assert ("User:fusion-judge", "TRANSACTIONAL_ID", "PREFIXED", "fusion-judge-answers-", "WRITE") in bindings
    assert ("User:fusion-gateway", "CLUSTER", "LITERAL", "kafka-cluster", "DESCRIBE_CONFIGS") in bindings
    assert {principal for principal, *_ in bindings} == {f"User:{user(service)}" for service in ACLS}


def test_the_table_imports_without_kafka_clients() -> None:
    code = "import sys, fusion.kafka.acls; print(sorted(m for m in sys.modules if m.startswith(CLIENTS)))"
    code = code.replace("CLIENTS", repr(("aiokafka", "faststream", "kafka")))
    shown = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)

    assert shown.stdout.strip() == "[]"
