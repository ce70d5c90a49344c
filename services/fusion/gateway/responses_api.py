"""`POST /v1/responses`: OpenAI's Responses API in front of the gateway, for every model it serves.

A request is translated at the edge into the gateway's canonical `ChatCompletionRequest` (messages,
`fusion` options, sampling), answered by the Gateway's own paths (fusion or pass-through, plain or
streamed) and rendered in the Responses shape (`responses_shapes`, `responses_stream`). OpenRouter's
Fusion shapes (the slug, the plugin, the server tool) are read by `fusion.gateway.openrouter`.
`previous_response_id` continues a conversation this instance keeps (`fusion.gateway.response_store`).
"""

import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from fusion.gateway import openrouter, translate
from fusion.gateway.held_stream import Releases, hold_stream
from fusion.gateway.openai_types import ChatCompletionRequest
from fusion.gateway.response_store import Message, ResponseStore
from fusion.gateway.responses_shapes import (
    ResponseFrame,
    ResponsesRequest,
    chat_request,
    fused_response,
    fusion_item_id,
    passthrough_response,
    previous_response_not_found,
)
from fusion.gateway.responses_stream import Keep, ResponseEvents, fusion_events, passthrough_events

if TYPE_CHECKING:
    from fusion.gateway.app import Gateway


# --- the routes ----------------------------------------------------------------------------------


class Responses:
    """The Responses API on a gateway: its routes' work, and the store of this instance's responses
    for `previous_response_id`."""

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        settings = gateway.settings
        self.store = ResponseStore(
            settings.gateway_idempotency_ttl_s, max_bytes=settings.gateway_idempotency_max_bytes
        )

    def history(self, body: ResponsesRequest) -> list[Message]:
        if body.previous_response_id is None:
            return []
        found = self.store.conversation(body.previous_response_id, time.monotonic())
        if found is None:
            raise previous_response_not_found(
                body.previous_response_id, self.store.ttl_s, self.gateway.settings.instance_id
            )
        return found

    def keeper(self, body: ResponsesRequest, frame: ResponseFrame, conversation: list[Message]) -> Keep:
        def keep(answer: str) -> None:
            if body.store:
                self.store.keep(frame.id, conversation, answer, time.monotonic())

        return keep

    async def create(self, body: ResponsesRequest) -> Response:
        chat, conversation = chat_request(body, self.history(body))
        kind = "fusion" if translate.is_fusion_model(chat.model) else "model"
        self.gateway.metrics.requests.labels(kind=kind, stream=str(body.stream).lower()).inc()
        if body.stream:
            return await self.streamed(body, chat, conversation)
        with self.gateway.admitted():
            return await self.plain(body, chat, conversation)

    async def plain(
        self, body: ResponsesRequest, chat: ChatCompletionRequest, conversation: list[Message]
    ) -> Response:
        gateway, now = self.gateway, time.time()
        if translate.is_fusion_model(chat.model):
            result = await gateway.fuse(gateway.fusion_request(chat, stream=False))
            if error := translate.result_error(result):
                raise error
            frame = ResponseFrame.start(body, result.request_id, now)
            answer = result.answer or ""
            rendered = fused_response(frame, result, answer)
        else:
            frame = ResponseFrame.start(body, uuid.uuid4().hex, now)
            rendered, answer = passthrough_response(frame, await gateway.complete(chat))
        self.keeper(body, frame, conversation)(answer)
        return JSONResponse(rendered)

    async def streamed(
        self, body: ResponsesRequest, chat: ChatCompletionRequest, conversation: list[Message]
    ) -> Response:
        """Streams, holding an in-flight slot (and, for a fusion, its reply route) until the stream
        ends, however it ends (see `HeldStream`)."""
        gateway = self.gateway

        async def start(release: Releases) -> AsyncIterator[str]:
            if translate.is_fusion_model(chat.model):
                # The panel's progress comes as OpenRouter's response.fusion_call.* events.
                request = gateway.fusion_request(chat, stream=True).model_copy(update={"progress": True})
                updates, request_id = await gateway.fusion_updates(request)
                release.append(lambda: gateway.link.forget(request_id))
                frame = ResponseFrame.start(body, request_id, time.time())
                keep = self.keeper(body, frame, conversation)
                started = openrouter.fusion_item_started(fusion_item_id(request_id))
                return fusion_events(updates, ResponseEvents(frame, [started]), keep)
            chunks = await gateway.stream_passthrough(chat)
            frame = ResponseFrame.start(body, uuid.uuid4().hex, time.time())
            return passthrough_events(chunks, ResponseEvents(frame), self.keeper(body, frame, conversation))

        return await hold_stream(gateway.admitted(), start)


def responses_routes(gateway: "Gateway") -> APIRouter:
    responses = Responses(gateway)
    router = APIRouter()

    @router.post("/v1/responses", response_model=None)
    async def create_response(body: ResponsesRequest) -> Response:
        return await responses.create(body)

    return router
