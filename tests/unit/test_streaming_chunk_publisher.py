"""fusion.judge.streaming.ChunkPublisher: ordered AnswerChunks, one send at a time, deltas joined."""

import asyncio
import random

from fusion.judge.streaming import ChunkPublisher
from fusion_contracts import AnswerChunk


class GatedSend:
    """Records every chunk; each send waits until `release()` lets it finish (when gated)."""

    def __init__(self, gated: bool = True) -> None:
        self.chunks: list[AnswerChunk] = []
        self.in_progress = 0
        self.most_at_once = 0
        self._gated = gated
        self._gate = asyncio.Event()

    async def __call__(self, chunk: AnswerChunk) -> None:
        self.in_progress += 1
        self.most_at_once = max(self.most_at_once, self.in_progress)
        try:
            if self._gated:
                await self._gate.wait()
                self._gate.clear()
            self.chunks.append(chunk)
        finally:
            self.in_progress -= 1

    def release(self) -> None:
        self._gate.set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_deltas_pushed_during_a_send_are_joined_into_the_next_chunk() -> None:
    send = GatedSend()
    publisher = ChunkPublisher("req-1", send)

    await publisher.push("The ")
    await settle()
    assert send.in_progress == 1  # "The " is being sent
    await publisher.push("fused ")
    await publisher.push("answer")
    await publisher.push(".")
    send.release()
    await settle()
    send.release()
    await asyncio.wait_for(publisher.close(), 1)

    assert send.chunks == [
        AnswerChunk(request_id="req-1", seq=0, delta="The ", stream_id=publisher.stream_id),
        AnswerChunk(request_id="req-1", seq=1, delta="fused answer.", stream_id=publisher.stream_id),
    ]


async def test_each_publisher_is_a_stream_of_its_own() -> None:
    """A judge that takes a request over streams it again from seq 0: under another stream id, so a
    reader can tell the two attempts apart instead of joining them."""
    first, second = GatedSend(gated=False), GatedSend(gated=False)
    for send in (first, second):
        publisher = ChunkPublisher("req-1", send)
        await publisher.push("The answer")
        await asyncio.wait_for(publisher.close(), 1)

    [one], [other] = first.chunks, second.chunks
    assert one.seq == other.seq == 0
    assert one.stream_id
    assert other.stream_id
    assert one.stream_id != other.stream_id


async def test_close_waits_for_every_pushed_delta() -> None:
    send = GatedSend()
    publisher = ChunkPublisher("req-1", send)
    await publisher.push("a")
    await settle()
    await publisher.push("b")

    closing = asyncio.create_task(publisher.close())
    await settle()
    assert not closing.done()
    send.release()
    await settle()
    assert not closing.done()  # "b" is still on its way
    send.release()
    await asyncio.wait_for(closing, 1)

    assert "".join(chunk.delta for chunk in send.chunks) == "ab"
    assert len(send.chunks) == 2


async def test_close_without_any_delta_returns_at_once() -> None:
    send = GatedSend()
    publisher = ChunkPublisher("req-1", send)
    await asyncio.wait_for(publisher.close(), 1)
    assert send.chunks == []


async def test_pushes_after_a_flush_ended_start_a_new_one_and_seq_continues() -> None:
    send = GatedSend(gated=False)
    publisher = ChunkPublisher("req-9", send)
    await publisher.push("one ")
    await publisher.close()
    await publisher.push("two")
    await publisher.close()

    assert [(chunk.seq, chunk.delta) for chunk in send.chunks] == [(0, "one "), (1, "two")]
    assert {chunk.request_id for chunk in send.chunks} == {"req-9"}


async def test_a_fast_writer_over_a_slow_link_sends_everything_once_in_order() -> None:
    rng = random.Random(7)
    sent: list[AnswerChunk] = []
    in_progress = 0
    most_at_once = 0

    async def slow_send(chunk: AnswerChunk) -> None:
        nonlocal in_progress, most_at_once
        in_progress += 1
        most_at_once = max(most_at_once, in_progress)
        await asyncio.sleep(rng.choice([0, 0, 0.001, 0.003]))
        sent.append(chunk)
        in_progress -= 1

    publisher = ChunkPublisher("req-1", slow_send)
    words = [f"w{index} " for index in range(300)]
    for word in words:
        await publisher.push(word)
        if rng.random() < 0.3:
            await asyncio.sleep(0)
    await asyncio.wait_for(publisher.close(), 5)

    assert "".join(chunk.delta for chunk in sent) == "".join(words)
    assert [chunk.seq for chunk in sent] == list(range(len(sent)))
    assert len(sent) < len(words)  # deltas were joined
    assert most_at_once == 1  # one send at a time
