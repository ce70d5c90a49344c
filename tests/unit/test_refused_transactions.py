"""The judge retries a refused transaction start after 2 ms, not aiokafka's fixed 20 ms."""

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from aiokafka.errors import ConcurrentTransactions
from aiokafka.producer import sender as aiokafka_sender
from fusion.judge.output import REFUSED_TXN_START_RETRY_S, retry_refused_transactions_sooner


@pytest.fixture
def restore_aiokafka() -> Iterator[None]:
    before = aiokafka_sender.BACKOFF_OVERRIDE
    yield
    aiokafka_sender.BACKOFF_OVERRIDE = before


def refused_first_partitions() -> float | None:
    """What aiokafka's handler waits after CONCURRENT_TRANSACTIONS for a transaction's first partition."""
    sender = SimpleNamespace(_retry_backoff=0.1, _txn_manager=SimpleNamespace(txn_partitions=set()))
    handler = aiokafka_sender.AddPartitionsToTxnHandler(sender, [])
    response = SimpleNamespace(errors=[("fusion.results", [(0, ConcurrentTransactions.errno)])])
    wait: float | None = handler.handle_response(response)
    return wait


@pytest.mark.usefixtures("restore_aiokafka")
def test_a_refused_transaction_start_is_retried_after_2_ms() -> None:
    aiokafka_sender.BACKOFF_OVERRIDE = 0.02  # aiokafka's own wait (another test may have patched it)
    assert refused_first_partitions() == pytest.approx(0.02)

    retry_refused_transactions_sooner()

    assert refused_first_partitions() == pytest.approx(REFUSED_TXN_START_RETRY_S) == 0.002
