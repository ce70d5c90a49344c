"""A rolling upgrade, halfway: the dispatcher, panel worker and judge (processes, schema 1.0) and a newer
release (another process, schema 1.1: tests/support/upgraded_client.py) on one real broker.

What each side writes, the other reads: the 1.0 services plan, answer and fuse the 1.1 request, plan
and task, ignoring their new fields; this process (a 1.0 client) reads the result a 1.1 judge wrote;
the 1.1 process reads the results the 1.0 judge wrote, with its new fields at their defaults. Messages
of major 2 are dead-lettered by each service with the reason, and the request among them is answered
`rejected` with it.
"""

import asyncio
import contextlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from fusion.client import FusionClient
from fusion.kafka.codec import DecodeError, decode
from fusion.kafka.tap import TopicTap
from fusion.settings import Settings
from fusion_contracts import DeadLetter, topics
from pydantic import TypeAdapter

pytestmark = [pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]
UNSUPPORTED = "unsupported schema version 2; this reader speaks 1"
_LETTER: TypeAdapter[DeadLetter] = TypeAdapter(DeadLetter)


async def test_a_newer_minor_and_the_services_read_each_other_and_the_next_major_is_refused(
    settings: Settings, client: FusionClient
) -> None:
    run = f"upgrade-{uuid.uuid4().hex[:8]}"
    letters: dict[str, DeadLetter] = {}

    def collect(record: Any) -> None:
        with contextlib.suppress(DecodeError):
            letter = decode(_LETTER, record.value)
            if letter.key and letter.key.startswith(run):
                letters[letter.key] = letter

    names = ("request", "dispatch", "result", "v2")
    futures = {name: client.results.expect(f"{run}-{name}") for name in names}
    tap = TopicTap(settings.kafka_bootstrap, topics.DLQ, collect)
    await tap.start()
    try:
        newer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.upgraded_client",
            settings.kafka_bootstrap,
            run,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(newer.communicate(), timeout=120)
        assert newer.returncode == 0, err.decode(errors="replace")[-3000:]
        await asyncio.wait(futures.values(), timeout=30)
        async with asyncio.timeout(30):
            while len(letters) < 3:  # noqa: ASYNC110 - the tap has no event for it
                await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # any further dead letter of this run would be a wrong one
    finally:
        await tap.stop()
        for name in names:
            client.results.forget(f"{run}-{name}")

    # The 1.1 process read the 1.0 judge's results of its request and of its own dispatch.
    read_by_newer = _json_line(out)
    for name in ("request", "dispatch"):
        assert read_by_newer[name]["status"] == "complete", read_by_newer[name]
        assert read_by_newer[name]["tags"] == []  # the 1.0 judge wrote none: the 1.1 default
        assert read_by_newer[name]["judge_confidence"] is None

    # This 1.0 client read the same, and the result the 1.1 judge wrote.
    assert [name for name, future in futures.items() if not future.done()] == []
    results = {name: future.result() for name, future in futures.items()}
    assert results["request"].status == "complete"
    assert results["dispatch"].status == "complete"
    assert results["dispatch"].answered == 1
    assert results["result"].status == "complete"
    assert results["result"].answer == "written by a 1.1 judge"
    assert results["v2"].status == "rejected"
    assert results["v2"].error == f"invalid request: {UNSUPPORTED}"

    # Only the major-2 messages were dead-lettered, each by its reader, with the reason.
    assert {key: (letter.service, letter.error) for key, letter in letters.items()} == {
        f"{run}-v2": ("dispatcher", UNSUPPORTED),
        f"{run}-v2-task": ("panel-worker", UNSUPPORTED),
        f"{run}-v2-plan": ("judge", UNSUPPORTED),
    }


def _json_line(out: bytes) -> dict[str, Any]:
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, out.decode(errors="replace")
    data: dict[str, Any] = json.loads(lines[-1])
    return data
