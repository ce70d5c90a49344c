"""The activity recorder on the real broker and a real PostgreSQL: two recorders side by side record
every request once, whichever topic its result went to (fusion.results, a gateway's reply topic), with
its key's name; records read again (a recorder killed, results published twice) change nothing; and
a client whose gateway died collects its answer from another gateway (`GET /v1/fusions/{id}`)."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fusion.activity.rows import usd
from fusion.activity.store import ActivityFilter, ActivityStore
from fusion.client import FusionClient
from fusion.settings import Settings
from fusion_contracts import ChatMessage, FusedResult, FusionRequest, topics
from sqlalchemy import text

from fusion_testing.stack import Services, wait_until

pytestmark = pytest.mark.kafka

GATEWAY_PORTS = (18086, 18087)
RECORDER_PORTS = (18184, 18185)
KEYS = {"team-a": "sk-activity-a", "team-b": "sk-activity-b"}


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[ActivityStore]:
    store = ActivityStore(postgres_url)
    with store.engine.begin() as connection:
        for table in ("model_calls", "fusions", "alembic_version"):
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    yield store
    store.close()


@pytest.fixture(scope="module")
def recorders(services: Services, database: ActivityStore, postgres_url: str) -> Iterator[list[str]]:
    labels = [f"activity-{i}" for i in range(2)]
    for label, port in zip(labels, RECORDER_PORTS, strict=True):
        env = {
            "FUSION_DATABASE_URL": postgres_url,
            "FUSION_HEALTH_PORT": str(port),
            "FUSION_INSTANCE_ID": label,
        }
        services.run(label, "activity", env, port)
    yield labels
    for label in labels:
        if label in services.processes:
            services.stop(label)


@pytest.fixture(scope="module")
def keyed_gateways(services: Services, postgres_url: str, recorders: list[str]) -> Iterator[list[str]]:
    labels = [f"gateway-activity-{i}" for i in range(2)]
    urls = [
        services.start_gateway(
            label, port, FUSION_DATABASE_URL=postgres_url, FUSION_GATEWAY_API_KEYS=json.dumps(KEYS)
        )
        for label, port in zip(labels, GATEWAY_PORTS, strict=True)
    ]
    yield urls
    for label in labels:
        if label in services.processes:
            services.stop(label)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


def recorded(store: ActivityStore, request_ids: list[str], timeout_s: float = 60) -> dict[str, str]:
    """Each request's status once all have their result recorded."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {row.request_id: row for row in store.fusions(ActivityFilter(limit=10_000))}
        statuses = {r: rows[r].status if r in rows else "missing" for r in request_ids}
        if all(s not in ("missing", "pending") for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.5)


async def ask(
    http: httpx.AsyncClient, url: str, key: str, question: str, **fusion: object
) -> dict[str, object]:
    response = await http.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "fusion", "messages": [{"role": "user", "content": question}], "fusion": fusion},
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_every_request_is_recorded_once_whichever_topic_its_result_took(
    client: FusionClient,
    database: ActivityStore,
    keyed_gateways: list[str],
    http: httpx.AsyncClient,
) -> None:
    over_kafka = [
        FusionRequest(messages=[ChatMessage(role="user", content=f"kafka question {i}")], preset="standin")
        for i in range(8)
    ]
    results = await asyncio.gather(*(client.fuse(request) for request in over_kafka))
    answered = await asyncio.gather(
        *(
            ask(http, keyed_gateways[i % 2], KEYS["team-a" if i < 4 else "team-b"], f"gateway question {i}")
            for i in range(6)
        )
    )
    gateway_ids = [str(body["fusion"]["request_id"]) for body in answered]  # type: ignore[index]
    kafka_ids = [request.request_id for request in over_kafka]

    statuses = recorded(database, kafka_ids + gateway_ids)
    assert set(statuses.values()) == {"complete"}, statuses
    with database.engine.connect() as connection:
        counts: dict[str, int] = dict(
            connection.execute(text("SELECT request_id, count(*) FROM fusions GROUP BY request_id")).all()
        )
    assert all(counts[r] == 1 for r in kafka_ids + gateway_ids)

    rows = {row.request_id: row for row in database.fusions(ActivityFilter(limit=10_000))}
    assert [rows[r].key_name for r in gateway_ids] == ["team-a"] * 4 + ["team-b"] * 2
    assert all(rows[r].key_name is None for r in kafka_ids)
    assert {rows[r].result_topic for r in kafka_ids} == {topics.RESULTS}
    assert all((rows[r].result_topic or "").startswith(topics.REPLIES_PREFIX) for r in gateway_ids)
    for result in results:
        row = rows[result.request_id]
        assert (
            row.question
            == next(r for r in over_kafka if r.request_id == result.request_id).messages[0].content
        )
        assert [call.model for call in row.calls] == [m.model for m in result.members] + [result.judge.model]  # type: ignore[union-attr]
        assert usd(sum(call.cost_nanousd for call in row.calls)) == result.cost.total_usd
        assert FusedResult.model_validate(row.result) == result
    assert database.facets().keys == ["team-a", "team-b"]


async def test_results_read_again_are_not_recorded_again(
    client: FusionClient,
    database: ActivityStore,
    services: Services,
    recorders: list[str],
    settings: Settings,
) -> None:
    """A recorder killed mid-stream, then started again (its uncommitted records come again), and
    every result published a second time."""
    requests = [
        FusionRequest(messages=[ChatMessage(role="user", content=f"again {i}")], preset="standin")
        for i in range(10)
    ]
    pending = [asyncio.create_task(client.fuse(request)) for request in requests]
    await asyncio.sleep(0.3)
    services.kill(recorders[0])
    results = await asyncio.gather(*pending)
    services.run(
        recorders[0],
        "activity",
        {
            "FUSION_DATABASE_URL": str(database.engine.url.render_as_string(hide_password=False)),
            "FUSION_HEALTH_PORT": str(RECORDER_PORTS[0]),
            "FUSION_INSTANCE_ID": recorders[0],
        },
        RECORDER_PORTS[0],
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for result in results:
            await producer.send_and_wait(
                topics.RESULTS, result.model_dump_json().encode(), key=result.request_id.encode()
            )
    finally:
        await producer.stop()

    ids = [request.request_id for request in requests]
    assert set(recorded(database, ids).values()) == {"complete"}
    await asyncio.sleep(3)  # the duplicates read too
    with database.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT count(*) FROM fusions WHERE request_id = ANY(:ids)"), {"ids": ids}
        ).scalar()
        calls = connection.execute(
            text("SELECT count(*) FROM model_calls WHERE request_id = ANY(:ids)"), {"ids": ids}
        ).scalar()
    assert rows == 10
    assert calls == sum(len(r.members) + 1 for r in results)


async def test_a_client_whose_gateway_died_collects_its_answer_from_another(
    services: Services, database: ActivityStore, keyed_gateways: list[str], http: httpx.AsyncClient
) -> None:
    first, second = keyed_gateways
    asked = asyncio.create_task(
        ask(http, first, KEYS["team-a"], "the slow question", panel=["slow3", "fast"], judge="fast")
    )
    # The request is on its way once the gateway published it; then the gateway dies under the call.
    await asyncio.sleep(1.0)
    services.kill("gateway-activity-0")
    with pytest.raises(httpx.HTTPError):
        await asked
    wait_until(
        lambda: any(
            r.question == "the slow question" and r.result for r in database.fusions(ActivityFilter())
        ),
        60,
        "the slow question recorded",
    )
    row = next(r for r in database.fusions(ActivityFilter()) if r.question == "the slow question")

    collected = await http.get(
        f"{second}/v1/fusions/{row.request_id}", headers={"Authorization": f"Bearer {KEYS['team-a']}"}
    )
    assert collected.status_code == 200, collected.text
    result = FusedResult.model_validate(collected.json())
    assert result.request_id == row.request_id
    assert result.status == "complete"
    assert result.answer

    # Another key does not see it; an unknown id is a 404; no key is a 401.
    other = await http.get(
        f"{second}/v1/fusions/{row.request_id}", headers={"Authorization": f"Bearer {KEYS['team-b']}"}
    )
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "fusion_not_found"
    unknown = await http.get(
        f"{second}/v1/fusions/nope", headers={"Authorization": f"Bearer {KEYS['team-a']}"}
    )
    assert unknown.status_code == 404
    assert (await http.get(f"{second}/v1/fusions/{row.request_id}")).status_code == 401
