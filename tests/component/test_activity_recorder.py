"""The recorder's handler, as production runs it, on batches made here: what it records, skips,
reads again (the database away) and dead-letters (a value the database refuses for good)."""

from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from fusion.activity import recorder as recorder_module
from fusion.activity.recorder import Recorder
from fusion.activity.store import ActivityFilter, ActivityStore
from fusion.kafka.batches import Fetched
from fusion.settings import Settings
from fusion_contracts import AnswerChunk, GatewayPresence, topics
from pydantic import BaseModel
from sqlalchemy.exc import DataError

from tests.support.activity import a_request, a_result


def record(topic: str, value: BaseModel | bytes, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    raw = value if isinstance(value, bytes) else value.model_dump_json().encode()
    return ConsumerRecord(topic, 0, offset, 0, 0, None, raw, None, len(raw), -1, [])


class Letters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    async def dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> None:
        self.sent.append((record.offset, error))


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "RETRY_S", 0.0)
    monkeypatch.setattr("fusion.kafka.batches.RETRY_BACKOFF_S", (0.0, 0.0))


def a_recorder(url: str) -> Recorder:
    store = ActivityStore(url)
    if url.startswith("sqlite"):
        store.migrate()
    return Recorder(store, Settings(database_url=None))


async def test_requests_and_results_are_recorded_and_the_rest_skipped(tmp_path: Path) -> None:
    recorder = a_recorder(f"sqlite:///{tmp_path / 'a.sqlite'}")
    request = a_request()
    letters = Letters()
    await recorder.handle(
        Fetched((record(topics.REQUESTS, request), record(topics.REQUESTS, b"{not json", 1)), None),
        recorder.on_request,
        letters,  # type: ignore[arg-type]
    )
    reply_topic = topics.REPLIES_PREFIX + "g"
    replies = (
        record(reply_topic, GatewayPresence(instance_id="g")),
        record(reply_topic, AnswerChunk(request_id=request.request_id, seq=0, delta="Ray"), 1),
        record(reply_topic, b"\xff\xfe garbage", 2),
        record(reply_topic, a_result(request), 3),
        record(reply_topic, a_result(request), 4),  # delivered twice
    )
    await recorder.handle(Fetched(replies, None), recorder.on_result, letters)  # type: ignore[arg-type]

    assert (recorder.recorded, recorder.skipped) == (2, 2)
    assert letters.sent == []
    rows = recorder.store.fusions(ActivityFilter())
    assert [(row.request_id, row.status, row.result_topic) for row in rows] == [
        (request.request_id, "complete", reply_topic)
    ]


async def test_nothing_is_skipped_while_the_database_is_away(tmp_path: Path) -> None:
    (tmp_path / "away").mkdir()
    recorder = Recorder(ActivityStore(f"sqlite:///{tmp_path / 'away'}"), Settings())  # a folder: cannot open
    letters = Letters()
    records = (
        record(topics.RESULTS, a_result(a_request())),
        record(topics.RESULTS, a_result(a_request()), 1),
    )
    await recorder.handle(Fetched(records, None), recorder.on_result, letters)  # type: ignore[arg-type]
    assert recorder.recorded == 0
    assert letters.sent == []  # neither recorded nor given up: read again


async def test_a_result_the_database_refuses_for_good_is_dead_lettered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = a_recorder(f"sqlite:///{tmp_path / 'a.sqlite'}")
    refused = a_result(a_request())

    def record_result(result: Any, topic: str) -> bool:
        if result.request_id == refused.request_id:
            raise DataError("INSERT …", {}, ValueError("value out of range"))
        return original(result, topic)

    original = recorder.store.record_result
    monkeypatch.setattr(recorder.store, "record_result", record_result)
    letters = Letters()
    records = (record(topics.RESULTS, refused), record(topics.RESULTS, a_result(a_request()), 1))
    await recorder.handle(Fetched(records, None), recorder.on_result, letters)  # type: ignore[arg-type]
    assert recorder.recorded == 1
    assert [offset for offset, _ in letters.sent] == [0]
    assert "the activity database refused it" in letters.sent[0][1]
