"""Hot paths leave no reference cycles behind: what they allocate is freed as soon as it is unused.

Garbage in a cycle waits for the cyclic collector, survives into its older generations and makes every
collection longer; under load those collections paused a service for tens of milliseconds
(bench/PERFORMANCE.md). Each test runs one hot path with the collector off, then asks it what it had
to free.
"""

import asyncio
import contextlib
import gc
import json
from collections.abc import Iterator
from typing import Any, cast

import httpx
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaMessage
from fusion.fences import Fences
from fusion.judge.prompts import LabelledAnswer, final_messages
from fusion.kafka.batches import Fetched, each_record, hand_over, whole_message
from fusion.models import ModelCall
from fusion.models.anthropic import AnthropicModel
from fusion.models.http import Endpoint
from fusion.models.openai_compat import OpenAICompatModel
from fusion_contracts import ChatMessage

from tests.unit.test_batches import a_record

HI = [ChatMessage(role="user", content="6 x 7?")]
OPENAI_OK = {"choices": [{"message": {"content": "forty-two"}}], "usage": {"prompt_tokens": 3}}
ANTHROPIC_OK = {"content": [{"type": "text", "text": "forty-two"}], "usage": {"input_tokens": 3}}
SSE = b'data: {"choices": [{"delta": {"content": "forty-two"}}]}\n\ndata: [DONE]\n\n'


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[str]]:
    """Yields a list that, after the block, names the type of each object that only the cyclic
    collector could free."""
    found: list[str] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(f"{type(item).__module__}.{type(item).__qualname__}" for item in gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


def provider(body: dict[str, Any] | bytes) -> Endpoint:
    def respond(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
        return httpx.Response(200, json=body)

    return Endpoint("http://provider.test/v1/", httpx.MockTransport(respond))


def of_httpx(garbage: list[str]) -> list[str]:
    return [name for name in garbage if name.startswith("httpx.")]


async def test_a_model_call_leaves_no_cycle() -> None:
    openai, anthropic = (
        OpenAICompatModel(provider(OPENAI_OK), "p"),
        AnthropicModel(provider(ANTHROPIC_OK), "p"),
    )
    for warm_up in (True, False):  # the first call sets up the clients' connection state
        with cyclic_garbage() as garbage:
            assert (await openai.complete(ModelCall("m", HI))).text == "forty-two"
            assert (await anthropic.complete(ModelCall("m", HI))).text == "forty-two"
        if not warm_up:
            assert of_httpx(garbage) == []


async def test_a_streamed_model_call_leaves_no_cycle() -> None:
    model = OpenAICompatModel(provider(SSE), "p")

    async def ignore(delta: str) -> None:
        pass

    for warm_up in (True, False):
        with cyclic_garbage() as garbage:
            assert (await model.complete(ModelCall("m", HI), on_delta=ignore)).text == "forty-two"
            for _ in range(3):  # the loop closes the line iterators the reader stopped early
                await asyncio.sleep(0)
        if not warm_up:
            assert of_httpx(garbage) == []


async def test_a_handled_batch_leaves_no_cycle() -> None:
    handled: list[int] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        handled.append(record.offset)

    async def handle_batch(batch: Fetched) -> None:
        await each_record(batch, handle)

    with cyclic_garbage() as garbage:
        message = KafkaMessage((a_record(1), a_record(2)), b"", consumer=cast(Any, None))
        message.set_decoder(whole_message)
        assert await message.decode() is message  # as FastStream decodes it before the handler runs
        await hand_over(message, handle_batch)
        del message
    assert handled == [1, 2]
    assert [name for name in garbage if "faststream" in name] == []


def test_the_fusion_prompt_leaves_no_cycle() -> None:
    answers = [LabelledAnswer(label=1, member_index=0, text="Blue light scatters more.")]
    analysis = {"consensus": ["Answer 1 explains scattering."]}
    with cyclic_garbage() as garbage:
        # as the judge writes it: the analysis it read, dumped, then the prompt
        final_messages(Fences.new(), HI, answers, json.dumps(analysis, ensure_ascii=False))
    assert garbage == []
