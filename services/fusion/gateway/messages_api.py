"""Anthropic's Messages API, `POST /v1/messages`: the request becomes the gateway's chat completion at
the edge, runs on the Gateway's paths (a fusion or a pass-through, plain or streamed), and its outcome
is rendered in Anthropic's shapes (`anthropic_shapes`), errors included."""

import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from fusion.gateway import anthropic_shapes as shapes
from fusion.gateway import translate
from fusion.gateway.anthropic_shapes import MessagesRequest
from fusion.gateway.errors import GatewayError
from fusion.gateway.held_stream import Releases, hold_stream
from fusion.gateway.openai_types import ChatCompletionRequest
from fusion.gateway.updates import Failed, KeepAlive, Progress, TextDelta, Update
from fusion.models import ModelError

if TYPE_CHECKING:
    from fusion.gateway.app import Gateway

__all__ = ["fusion_events", "messages_routes", "passthrough_events"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def messages_routes(gateway: "Gateway") -> APIRouter:
    router = APIRouter(route_class=_anthropic_route(gateway))

    @router.post("/v1/messages", response_model=None)
    async def create_message(body: MessagesRequest) -> Response:
        """Anthropic's Messages API, for `fusion`, `fusion/<preset>` or any catalog model."""
        fused = translate.is_fusion_model(body.model)
        kind = "fusion" if fused else "model"
        gateway.metrics.requests.labels(kind=kind, stream=str(body.stream).lower()).inc()
        chat = shapes.to_chat_request(body)
        if not body.stream:
            with gateway.admitted():
                return JSONResponse(await _message(gateway, body, chat))
        # The stream holds an in-flight slot (and a fusion its reply route) until it ends.

        async def start(release: Releases) -> AsyncIterator[str]:
            if fused:
                updates, request_id = await gateway.fusion_updates(gateway.fusion_request(chat, stream=True))
                release.append(lambda: gateway.link.forget(request_id))
                return fusion_events(updates, f"msg_{request_id}", body.model)
            chunks = await gateway.stream_passthrough(chat)
            stream = shapes.PassthroughEvents(_message_id(), body.model, body.stop_sequences)
            return passthrough_events(chunks, stream)

        return await hold_stream(gateway.admitted(), start)

    return router


async def _message(gateway: "Gateway", body: MessagesRequest, chat: ChatCompletionRequest) -> dict[str, Any]:
    if translate.is_fusion_model(chat.model):
        result = await gateway.fuse(gateway.fusion_request(chat, stream=False))
        if error := translate.result_error(result):
            raise error
        return shapes.message_from_result(result, body.model)
    completion = await gateway.complete(chat)
    return shapes.message_from_completion(completion, _message_id(), body.model, body.stop_sequences)


def _message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


async def fusion_events(updates: AsyncIterator[Update], message_id: str, model: str) -> AsyncIterator[str]:
    """A fusion's updates as Anthropic's server-sent events: a ping while it waits, the text as the
    judge writes it, then the end with usage and the `fusion` object, or an `error` event."""
    try:
        for start in shapes.stream_start(message_id, model):
            yield start
        async for update in updates:
            if isinstance(update, KeepAlive | Progress):  # no progress is asked for: see to_chat_request
                yield shapes.PING
            elif isinstance(update, TextDelta):
                yield shapes.text_delta(update.text)
            elif isinstance(update, Failed):
                yield shapes.error_event(update.error)
            else:
                extra = {"fusion": translate.fusion_summary(update.result)}
                for end in shapes.stream_end(("end_turn", None), shapes.result_usage(update.result), extra):
                    yield end
    finally:
        await _close(updates)


async def passthrough_events(
    chunks: AsyncIterator[bytes], stream: shapes.PassthroughEvents
) -> AsyncIterator[str]:
    """A passed-through model's chat-completion stream as Anthropic's server-sent events; a failure
    once the stream has begun is an `error` event."""
    try:
        for start in stream.start():
            yield start
        try:
            async for chunk in chunks:
                for translated in stream.feed(chunk):
                    yield translated
                if stream.over:
                    return
        except TimeoutError as error:
            failure = GatewayError(504, str(error), "api_error", "upstream_timeout")
        except ModelError as error:
            failure = GatewayError(502, str(error), "api_error", "upstream_error")
        else:
            for end in stream.end():
                yield end
            return
        for failed in stream.fail(failure):
            yield failed
    finally:
        await _close(chunks)


async def _close(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _anthropic_route(gateway: "Gateway") -> type[APIRoute]:
    class AnthropicRoute(APIRoute):
        """Answers every error of its requests in Anthropic's shape, those raised before the endpoint
        runs included (the key check, the loop guard, a body that does not validate), which the app's
        handlers would answer in OpenAI's."""

        def get_route_handler(self) -> Handler:
            handle = super().get_route_handler()

            async def handler(request: Request) -> Response:
                try:
                    return await handle(request)
                except GatewayError as error:
                    return _error_response(gateway, error)
                except RequestValidationError as error:
                    message = shapes.invalid_body_message(error.errors())
                    return _error_response(gateway, GatewayError.invalid(message, None))
                except HTTPException as error:
                    failure = GatewayError(error.status_code, str(error.detail), "invalid_request_error")
                    return _error_response(gateway, failure)

            return handler

    return AnthropicRoute


def _error_response(gateway: "Gateway", error: GatewayError) -> JSONResponse:
    gateway.metrics.errors.labels(status=str(error.status)).inc()
    return JSONResponse(shapes.error_body(error), status_code=error.status)
