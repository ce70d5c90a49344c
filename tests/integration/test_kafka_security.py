"""Identity and least privilege on a real broker: infra/kafka-secure.sh starts the local broker's jars
with a SASL/SCRAM-SHA-512 listener, an authorizer that refuses what no ACL allows, a user per service
and the ACLs of fusion.kafka.acls. The services run as processes, each as its own user (its password
from a file, as a mounted Strimzi KafkaUser secret gives it), and fuse requests end to end, over Kafka
and through a gateway, while the activity recorder records them. A user trying what its ACLs do not
allow is refused, naming what; a wrong password and a client without credentials are refused too.

The module starts its own broker (19492, controller 19493) from fresh data, beside the session's.
"""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from fusion.activity.store import ActivityStore
from fusion.client import FusionClient
from fusion.judge.output import GROUP, transactional_id
from fusion.kafka.acls import user
from fusion.kafka.admin import create_topics
from fusion.kafka.broker import Outbox, OwnProducer, build_broker
from fusion.kafka.security import KafkaConnection, client_options
from fusion.kafka.transactions import PartitionProducer
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusionRequest, topics

from fusion_testing.stack import CATALOG, INFRA, Services

pytestmark = [pytest.mark.kafka]

PORT = 19492
BOOTSTRAP = f"127.0.0.1:{PORT}"
HEALTH_PORTS = {"dispatcher": 19481, "panel-worker": 19482, "judge": 19483, "activity": 19484}
GATEWAY_PORT = 19485


def secure_kafka(action: str, *args: str) -> str:
    done = subprocess.run(
        [str(INFRA / "kafka-secure.sh"), action, *args],
        env={**os.environ, "KAFKA_SECURE_PORT": str(PORT)},
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.stdout


def identity(name: str) -> dict[str, str]:
    """The FUSION_KAFKA_* settings that connect as user `name` (`kafka-secure.sh env`)."""
    lines = secure_kafka("env", name).splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def settings_of(name: str) -> Settings:
    env = identity(name)
    fields: dict[str, Any] = {key.removeprefix("FUSION_").lower(): value for key, value in env.items()}
    return Settings(**fields, instance_id=f"tests-{name}")


def question(text: str) -> FusionRequest:
    return FusionRequest(messages=[ChatMessage(role="user", content=text)], preset="standin")


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[str]:
    secure_kafka("reset")
    secure_kafka("start")
    try:
        yield BOOTSTRAP
    finally:
        secure_kafka("stop")


@pytest.fixture(scope="module")
async def secure_topics(secure_broker: str) -> None:
    """Created as `admin`, the super user: no service may create Fusion's topics."""
    await create_topics(settings_of("admin"))


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActivityStore]:
    store = ActivityStore(f"sqlite:///{tmp_path_factory.mktemp('secure-activity') / 'activity.sqlite'}")
    yield store
    store.close()


@pytest.fixture(scope="module")
def secure_services(
    secure_topics: None, standin: str, database: ActivityStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Services, str]]:
    """dispatcher, panel-worker, judge, activity recorder and a gateway, each as its own Kafka user."""
    log_dir = tmp_path_factory.mktemp("secure-service-logs")
    env = {**os.environ, "FUSION_CATALOG": str(CATALOG), "FUSION_LOG_FORMAT": "json"}
    stack = Services(env=env, log_dir=log_dir)
    try:
        for service, port in HEALTH_PORTS.items():
            own = {
                **identity(user(service)),
                "FUSION_HEALTH_PORT": str(port),
                "FUSION_INSTANCE_ID": f"secure-{service}",
            }
            if service == "activity":
                own["FUSION_DATABASE_URL"] = database.engine.url.render_as_string(hide_password=False)
            stack.run(service, service, own, port)
        own = {
            **identity(user("gateway")),
            "FUSION_GATEWAY_PORT": str(GATEWAY_PORT),
            "FUSION_INSTANCE_ID": "secure-gateway",
        }
        stack.run("gateway", "gateway", own, GATEWAY_PORT)
        yield stack, f"http://127.0.0.1:{GATEWAY_PORT}"
    finally:
        stack.stop_all()
        print(f"service logs: {log_dir}")


@pytest.fixture(scope="module")
async def client(secure_services: tuple[Services, str]) -> AsyncIterator[FusionClient]:
    async with FusionClient(settings_of(user("client")), watch_answers=True) as fusion:
        yield fusion


def recorded(store: ActivityStore, request_ids: list[str], timeout_s: float = 60) -> dict[str, str | None]:
    """The topic each request's result was recorded from, once all are."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {r: store.fusion(r) for r in request_ids}
        if all(row and row.result_topic for row in rows.values()) or time.monotonic() > deadline:
            return {r: row.result_topic if row else None for r, row in rows.items()}
        time.sleep(0.5)


async def test_each_service_as_its_own_user_fuses_a_request_end_to_end(
    client: FusionClient, secure_services: tuple[Services, str], database: ActivityStore
) -> None:
    _, gateway = secure_services
    progress: list[object] = []

    result = await client.fuse(question("What is SCRAM?"), on_progress=progress.append)
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            f"{gateway}/v1/chat/completions",
            json={"model": "fusion/standin", "messages": [{"role": "user", "content": "And ACLs?"}]},
        )

    assert result.status == "complete"
    assert [member.status for member in result.members] == ["ok", "ok", "ok"]
    assert len(progress) == 4  # the plan and three answers, read from fusion.answers as fusion-client
    assert response.status_code == 200, response.text
    fusion = response.json()["fusion"]
    assert fusion["status"] == "complete"
    assert "And ACLs?" in response.json()["choices"][0]["message"]["content"]
    # The recorder read both results, from fusion.results and from the gateway's reply topic.
    topics_recorded = recorded(database, [result.request_id, fusion["request_id"]])
    assert topics_recorded[result.request_id] == topics.RESULTS
    assert (topics_recorded[fusion["request_id"]] or "").startswith(topics.REPLIES_PREFIX)


async def reply_topics() -> list[str]:
    admin = AIOKafkaAdminClient(**KafkaConnection.of(settings_of("admin")).client_args())
    await admin.start()
    try:
        return sorted(name for name in await admin.list_topics() if name.startswith(topics.REPLIES_PREFIX))
    finally:
        await admin.close()


async def test_the_gateway_creates_and_deletes_its_reply_topic_as_its_own_user(
    secure_services: tuple[Services, str],
) -> None:
    stack, _ = secure_services
    assert await reply_topics() == ["fusion.replies.secure-gateway"]

    stack.stop("gateway")

    assert await reply_topics() == []


async def test_the_panel_workers_user_may_not_publish_results(secure_topics: None) -> None:
    settings = settings_of(user("panel-worker"))
    producer = OwnProducer(settings, "fusion-panel-worker")
    await producer.start()
    try:
        outbox = Outbox(build_broker(settings, "fusion-panel-worker"), producer)
        await outbox.send(topics.DLQ, ChatMessage(role="user", content="allowed"), b"k")  # a control

        with pytest.raises(TopicAuthorizationFailedError) as refused:
            await outbox.send(topics.RESULTS, ChatMessage(role="user", content="forged"), b"forged-1")
    finally:
        await producer.stop()

    print(f"\npanel worker publishing to fusion.results: {refused.value!r}")
    assert str(refused.value) == "[Error 29] TopicAuthorizationFailedError: fusion.results"


async def test_the_panel_workers_user_may_not_open_a_judges_transaction(secure_topics: None) -> None:
    impostor = PartitionProducer(KafkaConnection.of(settings_of(user("panel-worker"))), transactional_id(0))

    with pytest.raises(TransactionalIdAuthorizationFailed) as refused:
        await impostor.open()

    print(f"\npanel worker opening {transactional_id(0)}: {refused.value!r}")
    assert str(refused.value) == f"[Error 53] TransactionalIdAuthorizationFailed: {transactional_id(0)}"


async def read(settings: Settings, topic: str, group: str | None) -> None:
    """Starts a consumer of `topic` (in `group`) as the settings' user, and fetches once."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=BOOTSTRAP, group_id=group, **client_options(settings)
    )
    try:
        await consumer.start()
        await consumer.getmany(timeout_ms=5_000)
    finally:
        await consumer.stop()


async def test_a_client_may_read_results_but_not_tasks(secure_topics: None) -> None:
    settings = settings_of(user("client"))
    await read(settings, topics.RESULTS, None)

    with pytest.raises(TopicAuthorizationFailedError) as refused:
        await read(settings, topics.TASKS, None)

    print(f"\nclient reading fusion.tasks: {refused.value!r}")
    assert str(refused.value) == "[Error 29] TopicAuthorizationFailedError: fusion.tasks"


async def test_a_client_may_not_join_the_judges_group(secure_topics: None) -> None:
    with pytest.raises(GroupAuthorizationFailedError) as refused:
        await read(settings_of(user("client")), topics.RESULTS, GROUP)

    print(f"\nclient joining {GROUP}: {refused.value!r}")
    assert str(refused.value) == f"[Error 30] GroupAuthorizationFailedError: {GROUP}"


AUTHENTICATION_FAILED = (
    "[Error 58] SaslAuthenticationFailed: Authentication failed during authentication due to invalid "
    "credentials with SASL mechanism SCRAM-SHA-512"
)


async def test_a_wrong_password_is_refused_as_such(
    secure_topics: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password")
    settings = settings_of(user("client")).model_copy(update={"kafka_sasl_password_file": wrong})
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, **client_options(settings))

    with pytest.raises(KafkaConnectionError):  # aiokafka logs why, and raises that it could not connect
        await producer.start()
    await producer.stop()

    [reason] = [r.getMessage() for r in caplog.records if r.name == "aiokafka" and r.levelname == "ERROR"]
    print(f"\nwrong password: {reason}")
    assert reason == f'Unable connect to "{BOOTSTRAP}": {AUTHENTICATION_FAILED}'


def test_a_service_with_a_wrong_password_exits_saying_so(secure_topics: None, tmp_path: Path) -> None:
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password")
    env = {
        **os.environ,
        **identity(user("dispatcher")),
        "FUSION_KAFKA_SASL_PASSWORD_FILE": str(wrong),
        "FUSION_HEALTH_PORT": str(HEALTH_PORTS["dispatcher"] + 10),
        "FUSION_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "fusion.cli.main", "serve", "dispatcher"]

    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode != 0
    assert AUTHENTICATION_FAILED in done.stdout + done.stderr
    assert "not-the-password" not in done.stdout + done.stderr


async def test_a_client_without_credentials_gets_nothing(
    secure_topics: None, caplog: pytest.LogCaptureFixture
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)

    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()

    # The broker answers nothing but a SASL handshake: it closes the connection (and logs
    # "Unexpected Kafka request of type METADATA during SASL handshake").
    reasons = [r.getMessage() for r in caplog.records if r.name == "aiokafka"]
    print(f"\nno credentials: {reasons}")
    closed = f"KafkaConnectionError: Connection at {BOOTSTRAP} closed"
    assert f'Unable to request metadata from "{BOOTSTRAP}": {closed}' in reasons
