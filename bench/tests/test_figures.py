"""The benchmarks' arithmetic: the figures `make bench` and `make bench-floor` report and judge."""

import math
from datetime import UTC, datetime, timedelta

from fusion_contracts.result import FusedResult, JudgeOutcome, MemberOutcome, Timings

from bench.figures import meets, percentile, second_half_growth_mb, start_middle_end, stayed_flat
from bench.kafka_floor import critical_path_ms
from bench.relay_floor import Gathering
from bench.relay_floor import overhead_ms as relay_overhead_ms
from bench.suite import hops_ms, overhead_ms, summarise

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def fused(members: list[tuple[float, float]], judge_ms: float) -> FusedResult:
    """A result whose members (finished at ms, model latency ms) were released 3 ms after the last
    answer, and whose judge answered in `judge_ms` plus 0.5 ms of its own; submitted at 0."""
    last = max(finished for finished, _ in members)
    return FusedResult(
        request_id="r-1",
        status="complete",
        members=[
            MemberOutcome(index=i, model="m", status="ok", latency_ms=latency, finished_at=at(finished))
            for i, (finished, latency) in enumerate(members)
        ],
        judge=JudgeOutcome(model="j", status="ok", latency_ms=judge_ms),
        timings=Timings(
            submitted_at=at(0),
            dispatched_at=at(2),
            released_at=at(last + 3),
            completed_at=at(last + 3 + judge_ms + 0.5),
            total_ms=last + 3 + judge_ms + 0.5,
        ),
    )


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 0.0) == 1
    assert percentile(values, 0.5) == 51  # rank round(49.5) = 50, zero-based
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7
    assert math.isnan(percentile([], 0.5))


def test_overhead_is_end_to_end_minus_the_slowest_member_and_the_judge() -> None:
    result = fused([(24.0, 20.0), (30.0, 25.0), (26.0, 21.0)], judge_ms=40.0)
    assert overhead_ms(result, elapsed_ms=80.0) == 80.0 - 25.0 - 40.0


def test_hops_split_the_overhead_from_the_results_timestamps() -> None:
    # Member calls start at 4, 5 and 5 ms; the last answer is in at 30 ms.
    result = fused([(24.0, 20.0), (30.0, 25.0), (26.0, 21.0)], judge_ms=40.0)
    hops = hops_ms(result, elapsed_ms=80.0)
    assert hops is not None
    request, dispatch, release, judge, result_to_client = hops
    assert request == 2.0
    assert math.isclose(dispatch, 3.0)  # dispatched at 2, last call started at 5
    assert math.isclose(release, 3.0)
    assert math.isclose(judge, 0.5)
    assert math.isclose(result_to_client, 80.0 - 73.5)


def test_hops_need_the_dispatch_and_release_timestamps() -> None:
    result = fused([(24.0, 20.0)], judge_ms=40.0)
    undispatched = result.model_copy(
        update={"timings": result.timings.model_copy(update={"dispatched_at": None})}
    )
    assert hops_ms(undispatched, elapsed_ms=80.0) is None


def test_a_target_is_met_on_its_own_side_and_never_by_nothing_measured() -> None:
    assert meets(10.0, 10, "≤")
    assert not meets(10.1, 10, "≤")
    assert meets(200.0, 200, "≥")
    assert not meets(199.9, 200, "≥")
    assert not meets(math.nan, 10, "≤")
    assert not meets(math.nan, 200, "≥")


def test_memory_is_flat_when_only_its_first_half_grew() -> None:
    # The seventh round's judge: one step while its bounded memory of released ids filled, 75–90 s in.
    judge = [96.40] * 5 + [97.83] * 15
    assert start_middle_end(judge) == (96.40, 97.83, 97.83)
    assert stayed_flat(judge)
    assert stayed_flat([81.85] * 20)


def test_memory_that_keeps_growing_is_not_flat() -> None:
    leak = [100 + 0.2 * i for i in range(20)]  # 0.2 MB every 15 s: 2 MB over the second half
    assert math.isclose(second_half_growth_mb(leak), 2.0)
    assert not stayed_flat(leak)
    assert not stayed_flat([100.0])  # one sample says nothing


def test_summary_carries_each_services_growth_over_the_soak() -> None:
    raw = {
        "overhead_ms": {"p50": 20.0, "p99": 70.0},
        "overhead_single_ms": {"p50": 14.0, "p99": 19.0},
        "inprocess": {"ratio": 1.01},
        "throughput": {"rps": 290.0},
        "throughput_2x": {"rps": 260.0},
        "quorum": {"ratio": 0.2},
        "rss_mb": {"judge": 96.0},
        "soak_rss_mb": {
            "judge": [96.4, 96.4, 97.8, 97.8, 97.8],
            "panel-worker": [114.0, 114.0, 115.0, 116.5],
        },
    }
    summary = summarise(raw)
    assert summary["soak_growth_mb"]["judge"] == 0.0
    assert math.isclose(summary["soak_growth_mb"]["panel-worker"], 2.5)
    assert summary["overhead_single_ms"] == {"p50": 14.0, "p99": 19.0}


def test_the_floors_critical_path_is_three_hops_and_one_transaction() -> None:
    figures = {
        "produce_acked_ms": {"p50": 0.3, "p99": 1.0},
        "produce_to_consume_ms": {"p50": 0.5, "p99": 2.0},
        "transaction_to_read_committed_ms": {"p50": 1.5, "p99": 4.0},
    }
    assert math.isclose(critical_path_ms(figures), 3 * 0.5 + 1.5)


def test_relay_judge_releases_once_the_plan_and_every_answer_are_in() -> None:
    gathering = Gathering()
    assert not gathering.add({"kind": "answer", "latency_ms": 30.0})  # before its plan
    assert not gathering.add({"kind": "plan", "members": 2, "judge_ms": [20.0, 20.0]})
    assert gathering.add({"kind": "answer", "latency_ms": 25.0})
    assert gathering.latencies == [30.0, 25.0]
    assert gathering.judge_ms == [20.0, 20.0]


def test_relay_overhead_is_measured_as_fusions() -> None:
    result = {"latencies": [21.0, 35.5, 20.5], "judge_latency_ms": 41.0}
    assert relay_overhead_ms(90.0, result) == 90.0 - 35.5 - 41.0
