"""Bad messages for every consumed topic, by kind, from a fixed seed: none of them is a valid message."""

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fusion_contracts import topics

KINDS = ("random bytes", "truncated JSON", "oversize", "wrong schema_version", "unknown field", "odd unicode")


def valid_examples() -> dict[str, dict[str, Any]]:
    """One valid message per consumed topic, as JSON objects, for the fuzzer to break."""
    now = datetime.now(UTC)
    later = (now + timedelta(seconds=60)).isoformat()
    messages = [{"role": "user", "content": "fuzz"}]
    return {
        topics.REQUESTS: {
            "schema_version": 1,
            "request_id": "fuzz-req",
            "messages": messages,
            "preset": "standin",
        },
        topics.TASKS: {
            "schema_version": 1,
            "request_id": "fuzz-task",
            "member_index": 0,
            "member": {"model": "fast"},
            "messages": messages,
            "deadline_at": later,
            "dispatched_at": now.isoformat(),
        },
        topics.ANSWERS: {
            "kind": "answer",
            "schema_version": 1,
            "request_id": "fuzz-answer",
            "member_index": 0,
            "model": "fast",
            "status": "ok",
            "text": "x",
            "latency_ms": 1.0,
            "finished_at": now.isoformat(),
        },
    }


def bad_messages(topic: str, per_kind: int, seed: int = 7) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(f"{seed}/{topic}")
    base = valid_examples()[topic]
    text = json.dumps(base)
    for index in range(per_kind):
        yield "random bytes", rng.randbytes(rng.randint(1, 400))
        yield "truncated JSON", text[: rng.randint(1, len(text) - 2)].encode()
        yield "oversize", json.dumps({**base, "padding": "x" * rng.randint(300_000, 1_500_000)}).encode()
        yield (
            "wrong schema_version",
            json.dumps({**base, "schema_version": rng.choice([0, 2, "1", None])}).encode(),
        )
        yield "unknown field", json.dumps({**base, f"surprise_{index}": rng.random()}).encode()
        yield "odd unicode", _odd_unicode(rng, base)


def _odd_unicode(rng: random.Random, base: dict[str, Any]) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:  # not UTF-8 at all
        return json.dumps(base).encode("utf-16")
    if choice == 1:  # a lone surrogate escape inside an id
        return json.dumps(base).replace('"request_id": "', '"request_id": "\\ud800').encode()
    if choice == 2:  # zero-width and right-to-left marks in an id that must be plain
        return json.dumps({**base, "request_id": "fu\u200bzz\u202e"}, ensure_ascii=False).encode()
    return b"\xef\xbb\xbf\x00" + json.dumps(base).encode()  # a BOM and a NUL before the JSON
