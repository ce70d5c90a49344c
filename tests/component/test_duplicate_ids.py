"""Two different requests with one id: the first is answered as if alone, the second gets a
`rejected` result of its own ("duplicate request id"), once, and their answers never mix. The same
request delivered twice is still one request. Pure rules first, then the judge's handler code."""

import asyncio
from datetime import UTC, datetime

from faststream.kafka import KafkaBroker, TestKafkaBroker
from fusion.judge.app import register
from fusion.judge.gathering import Gathering, Gatherings, duplicate_key
from fusion.observability.metrics import FusionMetrics
from fusion.settings import Settings
from fusion_contracts import PanelAnswer, PanelPlan, topics
from fusion_contracts.common import request_digest

from tests.component.support import RESULT_ADAPTER, Capture, FakeModels, a_plan, an_answer, eventually

FIRST, SECOND = request_digest(b"first request"), request_digest(b"second request")
NOW = datetime(2026, 12, 4, tzinfo=UTC)


def plan(digest: str | None, request_id: str = "r-1") -> PanelPlan:
    return a_plan(request_id).model_copy(update={"request_digest": digest})


def answer(digest: str | None, index: int, text: str = "", request_id: str = "r-1") -> PanelAnswer:
    return an_answer(request_id, index, text=text or None).model_copy(update={"request_digest": digest})


def test_a_second_plan_with_the_same_id_but_another_digest_is_a_duplicate() -> None:
    gatherings = Gatherings()
    assert isinstance(gatherings.add(plan(FIRST), NOW), Gathering)
    assert gatherings.add(plan(SECOND), NOW) == "duplicate"
    assert isinstance(gatherings.add(plan(FIRST), NOW), Gathering)  # delivered again: the same one
    assert isinstance(gatherings.add(plan(None), NOW), Gathering)  # an older dispatcher: no digest


def test_answers_of_the_duplicate_never_fill_in_the_first_requests_members() -> None:
    gatherings = Gatherings()
    gatherings.add(answer(SECOND, 0, "the duplicate's answer"), NOW)  # came before any plan
    gatherings.add(plan(FIRST), NOW)
    assert gatherings.add(answer(SECOND, 1), NOW) == "foreign"
    gathering = gatherings.add(answer(FIRST, 1), NOW)

    assert isinstance(gathering, Gathering)
    assert sorted(gathering.answers) == [1]
    assert gathering.answers[1].request_digest == FIRST


def test_a_duplicate_is_rejected_once_even_after_the_first_is_done() -> None:
    gatherings = Gatherings()
    gatherings.add(plan(FIRST), NOW)
    gatherings.release("r-1")
    gatherings.published("r-1", NOW)
    assert gatherings.add(plan(FIRST), NOW) == "done"
    assert gatherings.add(plan(SECOND), NOW) == "duplicate"

    name = gatherings.add_duplicate("r-1", SECOND)
    assert name == duplicate_key("r-1", SECOND)
    assert gatherings.add_duplicate("r-1", SECOND) is None  # its rejection is under way
    gatherings.published(name, NOW)
    assert gatherings.add(plan(SECOND), NOW) == "done"  # rejected: delivered again, ignored


async def test_the_judge_answers_the_first_request_and_rejects_the_second_with_its_digest() -> None:
    broker = KafkaBroker()
    service = register(broker, FakeModels(), Settings(instance_id="t"), FusionMetrics())
    capture = Capture(broker, topics.RESULTS)
    async with TestKafkaBroker(broker):
        await service.on_message(plan(FIRST), partition=0, offset=0)
        await service.on_message(plan(SECOND), partition=0, offset=1)
        await service.on_message(answer(SECOND, 0, "second: water molecules"), partition=0, offset=2)
        await service.on_message(plan(SECOND), partition=0, offset=3)  # the duplicate, redelivered
        await service.on_message(answer(FIRST, 0, "first: Rayleigh scattering"), partition=0, offset=4)
        await service.on_message(answer(FIRST, 1, "first: shorter wavelengths"), partition=0, offset=5)
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 2)
        await asyncio.sleep(0.1)

    results = {r.request_digest: r for r in capture.decoded(topics.RESULTS, RESULT_ADAPTER)}
    assert len(capture.records[topics.RESULTS]) == 2
    assert results[SECOND].status == "rejected"
    assert "duplicate request id 'r-1'" in (results[SECOND].error or "")
    first = results[FIRST]
    assert first.status == "complete"
    assert [m.text for m in first.members] == ["first: Rayleigh scattering", "first: shorter wavelengths"]
