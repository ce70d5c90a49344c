"""What a judge does when it takes over a partition's backlog, with the handler code production runs:
plans past their deadline wait for the answers right behind them, and a rebalance that gives a
partition back keeps the fusions it had under way."""

import asyncio

from faststream.kafka import KafkaBroker, TestKafkaBroker
from fusion.judge.app import JudgeService, register
from fusion.kafka.broker import Outbox
from fusion.observability.metrics import FusionMetrics
from fusion.settings import Settings
from fusion_contracts import FusedResult, PanelPlan, PanelRejection, topics
from fusion_contracts.common import utc_now

from tests.component.support import RESULT_ADAPTER, Capture, FakeModels, a_plan, an_answer, eventually


def overdue_plan(request_id: str) -> PanelPlan:
    """A plan read after its panel deadline, as a judge that takes over a backlog reads it."""
    return a_plan(request_id, members=2, panel_deadline_in_s=-1.0)


async def test_a_plan_past_its_deadline_waits_for_the_answers_already_written_behind_it() -> None:
    broker = KafkaBroker()
    service = register(broker, FakeModels(), Settings(instance_id="t"), FusionMetrics())
    capture = Capture(broker, topics.RESULTS)
    service.end_of = lambda _partition: 3  # the partition holds the plan and both answers
    async with TestKafkaBroker(broker):
        await service.on_message(overdue_plan("late"), partition=0, offset=0)
        await asyncio.sleep(0.05)
        assert capture.records[topics.RESULTS] == []  # not released with no answers
        await service.on_message(an_answer("late", 0), partition=0, offset=1)
        await service.on_message(an_answer("late", 1), partition=0, offset=2)
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1)

    [result] = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert result.answered == 2
    assert result.release == "all"


async def test_a_plan_past_its_deadline_is_released_once_its_partition_is_read_to_the_end() -> None:
    broker = KafkaBroker()
    service = register(broker, FakeModels(), Settings(instance_id="t"), FusionMetrics())
    capture = Capture(broker, topics.RESULTS)
    service.end_of = lambda _partition: 3
    async with TestKafkaBroker(broker):
        await service.on_message(overdue_plan("lonely"), partition=0, offset=0)
        await service.on_message(an_answer("other", 0), partition=0, offset=1)
        service.release_overdue()
        await asyncio.sleep(0.05)
        assert capture.records[topics.RESULTS] == []  # offset 2 not read yet
        await service.on_message(an_answer("other", 1), partition=0, offset=2)
        service.release_overdue()
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 1)

    [result] = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert result.request_id == "lonely"
    assert result.release == "deadline"
    assert result.status == "failed"


def gate_open(models: FakeModels) -> None:
    assert models.gate is not None
    models.gate.set()


class RecordingSink:
    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(
        self, plan: PanelPlan | PanelRejection, result: FusedResult, released_as: str | None = None
    ) -> bool:
        self.published.append(plan.request_id)
        return True


async def test_a_fusion_under_way_survives_a_rebalance_that_gives_its_partition_back() -> None:
    """Eager rebalancing revokes every partition, then hands most back: the request being fused is
    neither forgotten nor gathered again, and its messages read again hold the commit back."""
    models = FakeModels(gate=asyncio.Event())
    sink = RecordingSink()
    broker = KafkaBroker()
    service = JudgeService(models, Outbox(broker), 4, 900.0, sink=sink)
    async with TestKafkaBroker(broker):
        await service.on_message(a_plan("kept", members=2), partition=3, offset=10)
        await service.on_message(an_answer("kept", 0), partition=3, offset=11)
        await service.on_message(an_answer("kept", 1), partition=3, offset=12)
        await asyncio.sleep(0.01)  # released: its judge call waits at the gate

        await service.revoked({3})
        await service.assigned({3})
        assert service.ledger.committable({3}) == {}  # nothing read since the assignment
        await service.on_message(a_plan("kept", members=2), partition=3, offset=10)  # read again
        await service.on_message(an_answer("kept", 0), partition=3, offset=11)
        await service.on_message(an_answer("kept", 1), partition=3, offset=12)
        assert service.ledger.committable({3}) == {3: 10}
        gate_open(models)
        await eventually(lambda: sink.published == ["kept"])
        assert service.ledger.committable({3}) == {3: 13}
        await service.on_message(a_plan("kept", members=2), partition=3, offset=10)  # once more
        await asyncio.sleep(0.05)
    assert sink.published == ["kept"]


async def test_a_fusion_whose_partition_went_to_another_judge_stops() -> None:
    models = FakeModels(gate=asyncio.Event())
    sink = RecordingSink()
    broker = KafkaBroker()
    service = JudgeService(models, Outbox(broker), 4, 900.0, sink=sink)
    async with TestKafkaBroker(broker):
        await service.on_message(a_plan("moved", members=2), partition=5, offset=0)
        await service.on_message(an_answer("moved", 0), partition=5, offset=1)
        await service.on_message(an_answer("moved", 1), partition=5, offset=2)
        await asyncio.sleep(0.01)

        await service.revoked({5})
        await service.assigned({1})  # partition 5 went elsewhere
        gate_open(models)
        await asyncio.sleep(0.05)
        assert sink.published == []
        # Should it come back later, the request is gathered again, not taken for done.
        await service.assigned({5})
        await service.on_message(a_plan("moved", members=2), partition=5, offset=0)
        await service.on_message(an_answer("moved", 0), partition=5, offset=1)
        await service.on_message(an_answer("moved", 1), partition=5, offset=2)
        await eventually(lambda: sink.published == ["moved"])


def a_rejection(request_id: str) -> PanelRejection:
    now = utc_now()
    return PanelRejection(request_id=request_id, error="expired", submitted_at=now, rejected_at=now)


async def test_the_judge_publishes_a_rejection_once_and_never_after_a_plan() -> None:
    """The dispatcher's rejections go through the judge, so a redelivered request that is rejected
    as expired gets no `rejected` result beside the one its first delivery earned."""
    broker = KafkaBroker()
    service = register(broker, FakeModels(), Settings(instance_id="t"), FusionMetrics())
    capture = Capture(broker, topics.RESULTS)
    async with TestKafkaBroker(broker):
        await service.on_message(a_rejection("refused"), partition=0, offset=0)
        await service.on_message(a_rejection("refused"), partition=0, offset=1)  # redelivered
        await service.on_message(a_plan("dispatched", members=1), partition=0, offset=2)
        await service.on_message(an_answer("dispatched", 0), partition=0, offset=3)
        await eventually(lambda: len(capture.records[topics.RESULTS]) == 2)
        await service.on_message(a_rejection("dispatched"), partition=0, offset=4)  # redelivered late
        await asyncio.sleep(0.05)

    results = capture.decoded(topics.RESULTS, RESULT_ADAPTER)
    assert sorted((r.request_id, r.status) for r in results) == [
        ("dispatched", "complete"),
        ("refused", "rejected"),
    ]
    assert service.ledger.committable({0}) == {0: 5}
