"""The panel worker commits an offset only once every earlier task of its partition is answered."""

from fusion.kafka.offsets import OffsetTracker


def test_out_of_order_completions_commit_only_the_contiguous_prefix() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.start("p0", offset)

    assert tracker.finish("p0", 12) == 10  # 10 and 11 still running: a crash must read from 10 again
    assert tracker.finish("p0", 10) == 11  # 11 is the next to read again after a crash
    assert tracker.finish("p0", 11) == 13  # all done: past the highest
    assert tracker.in_flight() == 0


def test_partitions_are_tracked_apart() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.start("a", 5)
    tracker.start("b", 7)

    assert tracker.finish("b", 7) == 8
    assert tracker.in_flight() == 1
    assert tracker.finish("a", 5) == 6


def test_nothing_is_committed_again_while_the_prefix_has_not_moved() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in (1, 2, 3):
        tracker.start("p", offset)

    assert tracker.finish("p", 3) == 1
    assert tracker.finish("p", 2) is None  # 1 still running


def test_a_commit_never_goes_backwards() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.start("p", 1)
    assert tracker.finish("p", 1) == 2
    tracker.start("p", 1)  # redelivered after a rebalance

    assert tracker.finish("p", 1) is None
