"""A result's destination: the request's reply_to when allowed and real, fusion.results otherwise."""

import asyncio

from fusion.judge.destinations import Destination, Destinations, check
from fusion_contracts import ReplyTo, topics

PATTERNS = ("fusion.results", "fusion.replies.*")


def test_no_reply_to_goes_to_the_results_topic() -> None:
    assert check(None, PATTERNS, None) == Destination(topics.RESULTS, None)


def test_an_allowed_existing_topic_and_partition_are_used() -> None:
    assert check(ReplyTo(topic="fusion.replies.gw-1", partition=2), PATTERNS, {0, 1, 2}) == Destination(
        "fusion.replies.gw-1", 2
    )


def test_a_topic_outside_the_allowed_set_is_refused() -> None:
    place = check(ReplyTo(topic="billing.events"), PATTERNS, {0})
    assert place.topic == topics.RESULTS
    assert place.refused is not None
    assert "not allowed" in place.refused


def test_a_missing_topic_or_partition_is_refused() -> None:
    missing = check(ReplyTo(topic="fusion.replies.gone"), PATTERNS, None)
    assert (missing.topic, missing.partition) == (topics.RESULTS, None)
    assert missing.refused is not None
    assert "does not exist" in missing.refused
    beyond = check(ReplyTo(topic="fusion.results", partition=99), PATTERNS, set(range(8)))
    assert (beyond.topic, beyond.partition) == (topics.RESULTS, None)
    assert beyond.refused is not None
    assert "partition 99" in beyond.refused


async def test_a_lookup_that_never_answers_is_bounded_and_remembered() -> None:
    lookups: list[str] = []

    async def never(topic: str) -> set[int] | None:
        lookups.append(topic)
        await asyncio.sleep(3600)
        return None

    destinations = Destinations(PATTERNS, never, lookup_timeout_s=0.05)
    first = await destinations.of(ReplyTo(topic="fusion.replies.nowhere"))
    second = await destinations.of(ReplyTo(topic="fusion.replies.nowhere"))
    assert first.topic == second.topic == topics.RESULTS
    assert lookups == ["fusion.replies.nowhere"]
