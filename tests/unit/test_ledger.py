"""The judge commits only past released requests."""

from fusion.judge.ledger import Ledger


def test_the_committable_offset_waits_for_the_oldest_open_request() -> None:
    ledger = Ledger()
    ledger.record(0, 10, "a")  # plan of a
    ledger.record(0, 11, "b")  # plan of b
    ledger.record(0, 12, None)  # a dead letter
    ledger.record(0, 13, "b")  # answer of b

    assert ledger.committable({0}) == {0: 10}
    ledger.close("a")
    assert ledger.committable({0}) == {0: 11}
    assert ledger.partition_of("b") == 0
    ledger.close("b")
    assert ledger.committable({0}) == {0: 14}
    assert ledger.partition_of("b") is None


def test_forgetting_revoked_partitions_returns_their_open_requests() -> None:
    ledger = Ledger()
    ledger.record(1, 5, "x")
    ledger.record(2, 7, "y")

    assert ledger.forget({1}) == {"x"}
    assert ledger.partition_of("x") is None
    assert ledger.committable({1, 2}) == {2: 7}
