"""Kafka topic names, and the key each one is partitioned by."""

from typing import Final

REQUESTS: Final = "fusion.requests"
"""`FusionRequest`, keyed by request id."""

TASKS: Final = "fusion.tasks"
"""`PanelTask`, keyed by request id and member index so that members run on different workers."""

ANSWERS: Final = "fusion.answers"
"""`PanelPlan` and `PanelAnswer`, keyed by request id so that one judge partition sees a request whole."""

RESULTS: Final = "fusion.results"
"""`FusedResult`, keyed by request id."""

REPLIES_PREFIX: Final = "fusion.replies."
"""Each gateway instance reads its own reply topic, `fusion.replies.<instance>`."""

RELEASED: Final = "fusion.judge.released"
"""The judge's markers of released requests (compacted), keyed by request id like `fusion.answers`, so a
judge taking over a partition knows which of its requests already have their result."""

DLQ: Final = "fusion.dlq"
"""`DeadLetter`, keyed by the original message's key."""

ALL: Final = (REQUESTS, TASKS, ANSWERS, RESULTS, RELEASED, DLQ)


def request_key(request_id: str) -> bytes:
    return request_id.encode()


def task_key(request_id: str, member_index: int) -> bytes:
    return f"{request_id}/{member_index}".encode()
