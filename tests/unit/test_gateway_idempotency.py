"""fusion.gateway.idempotency: one run per Idempotency-Key, retries wait for it or replay it; memory
bounded by count and bytes, and never at the cost of an attempt still running."""

import asyncio

import pytest
from fusion.gateway.errors import GatewayError
from fusion.gateway.idempotency import IdempotencyCache, fingerprint

OK = (200, b'{"id":"chatcmpl-1"}')


def test_fingerprint_is_the_bodys_sha256() -> None:
    assert fingerprint(b"{}") == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert fingerprint(b'{"a": 1}') != fingerprint(b'{"a":1}')


async def test_the_first_claim_owns_the_entry() -> None:
    cache = IdempotencyCache(ttl_s=60)
    entry, owner = cache.claim("key-1", "fp")
    assert owner is True
    assert entry.fingerprint == "fp"
    assert not entry.response.done()


async def test_a_second_claim_with_the_same_body_waits_for_the_first() -> None:
    cache = IdempotencyCache(ttl_s=60)
    first, _ = cache.claim("key-1", "fp")
    second, owner = cache.claim("key-1", "fp")
    assert owner is False
    assert second is first

    waiting = asyncio.ensure_future(asyncio.shield(second.response))
    await asyncio.sleep(0)
    assert not waiting.done()
    cache.settle("key-1", first, OK)
    assert await asyncio.wait_for(waiting, 1) == OK


async def test_a_settled_response_is_replayed() -> None:
    cache = IdempotencyCache(ttl_s=60)
    entry, _ = cache.claim("key-1", "fp")
    cache.settle("key-1", entry, (400, b'{"error":{"message":"bad"}}'))  # a client error is kept
    again, owner = cache.claim("key-1", "fp")
    assert owner is False
    assert again.response.result() == (400, b'{"error":{"message":"bad"}}')


async def test_the_same_key_with_another_body_is_a_409() -> None:
    cache = IdempotencyCache(ttl_s=60)
    cache.claim("key-1", "fp-a")
    with pytest.raises(GatewayError) as caught:
        cache.claim("key-1", "fp-b")
    assert caught.value.status == 409
    assert caught.value.error_type == "invalid_request_error"
    assert caught.value.code == "idempotency_key_reused"


async def test_keys_are_independent() -> None:
    cache = IdempotencyCache(ttl_s=60)
    cache.claim("key-1", "fp-a")
    _, owner = cache.claim("key-2", "fp-b")
    assert owner is True


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_a_server_error_or_a_429_is_not_kept(status: int) -> None:
    cache = IdempotencyCache(ttl_s=60)
    entry, _ = cache.claim("key-1", "fp")
    waiter, _ = cache.claim("key-1", "fp")
    cache.settle("key-1", entry, (status, b'{"error":{}}'))

    assert waiter.response.result() == (status, b'{"error":{}}')  # a retry already waiting gets it
    fresh, owner = cache.claim("key-1", "fp")
    assert owner is True
    assert fresh is not entry
    assert not fresh.response.done()


async def test_settling_twice_keeps_the_first_response() -> None:
    cache = IdempotencyCache(ttl_s=60)
    entry, _ = cache.claim("key-1", "fp")
    cache.settle("key-1", entry, OK)
    cache.settle("key-1", entry, (400, b"{}"))
    assert entry.response.result() == OK


async def test_abandon_removes_the_entry_and_fails_its_waiters() -> None:
    cache = IdempotencyCache(ttl_s=60)
    entry, _ = cache.claim("key-1", "fp")
    waiter, _ = cache.claim("key-1", "fp")
    cache.abandon("key-1", entry, RuntimeError("client went away"))

    with pytest.raises(RuntimeError, match="client went away"):
        await asyncio.shield(waiter.response)
    fresh, owner = cache.claim("key-1", "fp")
    assert owner is True
    assert fresh is not entry


async def test_abandon_after_settle_keeps_the_response_for_waiters() -> None:
    cache = IdempotencyCache(ttl_s=60)
    entry, _ = cache.claim("key-1", "fp")
    cache.settle("key-1", entry, OK)
    cache.abandon("key-1", entry, RuntimeError("late"))
    assert entry.response.result() == OK


async def test_an_entry_expires_after_its_ttl() -> None:
    cache = IdempotencyCache(ttl_s=0.05)
    entry, _ = cache.claim("key-1", "fp-a")
    cache.settle("key-1", entry, OK)
    _, owner = cache.claim("key-1", "fp-a")
    assert owner is False

    await asyncio.sleep(0.1)

    fresh, owner = cache.claim("key-1", "fp-b")  # no 409: the old body is forgotten
    assert owner is True
    assert fresh.fingerprint == "fp-b"


async def test_expiry_keeps_younger_entries() -> None:
    cache = IdempotencyCache(ttl_s=0.4)
    old, _ = cache.claim("old", "fp")
    cache.settle("old", old, OK)
    await asyncio.sleep(0.3)
    young, _ = cache.claim("young", "fp")
    cache.settle("young", young, OK)
    await asyncio.sleep(0.15)  # "old" is past its ttl, "young" is not

    _, old_owner = cache.claim("old", "fp")
    _, young_owner = cache.claim("young", "fp")
    assert old_owner is True
    assert young_owner is False


async def test_the_oldest_entries_go_beyond_max_entries() -> None:
    cache = IdempotencyCache(ttl_s=60, max_entries=2)
    for key in ("a", "b", "c", "d"):
        entry, _ = cache.claim(key, "fp")
        cache.settle(key, entry, OK)
    _, owner_a = cache.claim("a", "fp-other")  # forgotten, so no 409
    assert owner_a is True
    _, owner_d = cache.claim("d", "fp")
    assert owner_d is False


async def test_an_attempt_still_running_is_never_evicted_by_count() -> None:
    """A fusion runs up to 900 s: a retry meanwhile must wait for it, however many keys came since."""
    cache = IdempotencyCache(ttl_s=60, max_entries=2)
    running, _ = cache.claim("running", "fp")
    for key in ("b", "c", "d", "e"):
        entry, _ = cache.claim(key, "fp")
        cache.settle(key, entry, OK)

    retry, owner = cache.claim("running", "fp")
    assert owner is False
    assert retry is running
    assert len(cache) == 3  # the running one and the two newest responses


async def test_an_attempt_still_running_outlives_the_ttl() -> None:
    cache = IdempotencyCache(ttl_s=0.05)
    running, _ = cache.claim("running", "fp")
    await asyncio.sleep(0.1)

    retry, owner = cache.claim("running", "fp")
    assert owner is False
    assert retry is running
    cache.settle("running", running, OK)
    assert cache.claim("running", "fp")[1] is False  # kept for its ttl from when it was settled
    await asyncio.sleep(0.1)
    assert cache.claim("running", "fp")[1] is True


async def test_kept_responses_are_bounded_by_bytes_oldest_first() -> None:
    body = b"x" * 10_000
    cache = IdempotencyCache(ttl_s=60, max_bytes=35_000)
    for key in ("a", "b", "c", "d"):
        entry, _ = cache.claim(key, "fp")
        cache.settle(key, entry, (200, body))

    assert cache.kept_bytes <= 35_000
    assert [cache.claim(key, "fp")[1] for key in ("d", "c", "b")] == [False, False, False]
    _, owner_a = cache.claim("a", "fp")
    assert owner_a is True  # the oldest went to make room


async def test_a_response_larger_than_the_budget_is_given_to_waiters_but_not_kept() -> None:
    cache = IdempotencyCache(ttl_s=60, max_bytes=1_000)
    entry, _ = cache.claim("big", "fp")
    waiter, _ = cache.claim("big", "fp")
    cache.settle("big", entry, (200, b"x" * 5_000))

    assert waiter.response.result() == (200, b"x" * 5_000)
    assert cache.kept_bytes == 0
    assert cache.claim("big", "fp")[1] is True


async def test_an_attempt_still_running_is_never_evicted_by_bytes() -> None:
    cache = IdempotencyCache(ttl_s=60, max_bytes=12_000)
    running, _ = cache.claim("running", "fp")
    for key in ("b", "c", "d"):
        entry, _ = cache.claim(key, "fp")
        cache.settle(key, entry, (200, b"x" * 10_000))

    assert cache.claim("running", "fp") == (running, False)
    assert cache.running == 1
