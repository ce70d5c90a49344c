"""The gateway service: OpenAI's Chat Completions API in front of Fusion (and of any catalog model)."""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import Cookie, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fusion_contracts import AnswerChunk, FusedResult, FusionProgress, FusionRequest
from starlette.exceptions import HTTPException

from fusion import asyncapi
from fusion.activity.rows import KEY_NAME
from fusion.catalog import Catalog
from fusion.gateway import openrouter, translate
from fusion.gateway.answer_stream import AnswerStream
from fusion.gateway.body_limit import BodyLimit
from fusion.gateway.errors import GatewayError
from fusion.gateway.fusions_api import Activity, fusions_routes
from fusion.gateway.held_stream import Releases, hold_stream
from fusion.gateway.idempotency import IdempotencyCache, fingerprint
from fusion.gateway.keys import COOKIE, STUDIO_HEADER, ApiKeys, key_name
from fusion.gateway.link import FusionLink
from fusion.gateway.messages_api import messages_routes
from fusion.gateway.metrics import GatewayMetrics
from fusion.gateway.openai_types import ChatCompletionRequest, ErrorType
from fusion.gateway.responses_api import responses_routes
from fusion.gateway.sse import completion_as_sse, sse
from fusion.gateway.tools import CallModel, FusionRefused, lists_fusion_tool, run_tool_loop
from fusion.gateway.updates import Failed, Finished, KeepAlive, Progress, TextDelta, Update
from fusion.kafka.tap import Reply
from fusion.models import ChatModel, ModelConfigError, ModelError, ModelHTTPError, ModelRouter
from fusion.research.base import CALLER_HEADER
from fusion.settings import Settings
from fusion.studio.routes import studio_routes

log = structlog.get_logger(__name__)

WAIT_MARGIN_S = 5.0
"""Past a fusion's deadline, the gateway waits this much longer before answering 504."""
KEEPALIVE_S = 10.0
MAX_QUEUED_CHUNKS = 1024
"""Chunks of one stream waiting for a slow client; more are dropped (the result fills in for them)."""

T = TypeVar("T")


def shutting_down(request_id: str | None = None, drain_s: float | None = None) -> GatewayError:
    if request_id is None:
        message = "the gateway is shutting down; send the request to another instance"
    else:
        message = (
            f"the gateway is shutting down and stopped waiting for fusion {request_id} after draining"
            f" for {drain_s:g} s; its result will not be delivered here: retry it at another instance"
        )
    return GatewayError(503, message, "api_error", "gateway_shutting_down")


class Gateway:
    """The request handling, apart from the HTTP framework: fuse, stream, pass through, tool loop."""

    def __init__(self, settings: Settings, catalog: Catalog, link: FusionLink, models: ModelRouter) -> None:
        self.settings = settings
        self.catalog = catalog
        self.link = link
        self.models = models
        self.metrics = GatewayMetrics()
        self.idempotency = IdempotencyCache(
            settings.gateway_idempotency_ttl_s, max_bytes=settings.gateway_idempotency_max_bytes
        )
        self._in_flight = 0
        self.draining = False
        self._cut_off: asyncio.Future[None] | None = None
        self._drain_timer: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def cut_off(self) -> "asyncio.Future[None]":
        """Done once a drain has lasted `gateway_drain_s`: whatever still waits for a fusion stops."""
        if self._cut_off is None:
            self._cut_off = asyncio.get_running_loop().create_future()
        return self._cut_off

    def begin_drain(self) -> None:
        """Shutdown has begun: new requests get 503, and those in flight have `gateway_drain_s` to
        finish; then each gets a 503 (an error event, for a stream) saying the gateway stopped."""
        if self.draining:
            return
        self.draining = True
        drain_s = self.settings.gateway_drain_s
        log.info("gateway draining", in_flight=self._in_flight, drain_s=drain_s)
        self._drain_timer = asyncio.get_running_loop().call_later(drain_s, self._stop_waiting)

    def _stop_waiting(self) -> None:
        cut_off = self.cut_off()
        if not cut_off.done():
            log.warning(
                "drain time over; requests still in flight are answered 503", in_flight=self._in_flight
            )
            cut_off.set_result(None)

    async def _first(self, future: "asyncio.Future[T]", timeout_s: float, request_id: str) -> T:
        """`future`'s result; TimeoutError after `timeout_s`; a 503 once the drain is over."""
        cut_off = self.cut_off()
        await asyncio.wait((future, cut_off), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if future.done():
            return future.result()
        if cut_off.done():
            raise shutting_down(request_id, self.settings.gateway_drain_s)
        raise TimeoutError

    @contextlib.contextmanager
    def admitted(self) -> Any:
        if self.draining:
            raise shutting_down()
        if self._in_flight >= self.settings.gateway_max_in_flight:
            raise GatewayError(
                429,
                f"the gateway has {self._in_flight} requests in flight, its limit; retry shortly",
                "rate_limit_error",
                "too_many_requests",
            )
        self._in_flight += 1
        self.metrics.in_flight.set(self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.set(self._in_flight)

    def fusion_request(self, body: ChatCompletionRequest, stream: bool) -> FusionRequest:
        if lists_fusion_tool(body.tools):
            raise GatewayError.invalid(
                "a fused request cannot call fusion: remove the 'fusion' tool", "tools"
            )
        request_id = uuid.uuid4().hex
        return translate.to_fusion_request(body, self.catalog, request_id, self.link.reply_to, stream)

    async def fuse(self, request: FusionRequest) -> FusedResult:
        future = await self.link.submit(_signed(request))
        try:
            result = await self._first(future, request.policy.deadline_s + WAIT_MARGIN_S, request.request_id)
        except TimeoutError:
            raise GatewayError(
                504,
                f"no fused result within the deadline of {request.policy.deadline_s:g} s",
                "api_error",
                "deadline_exceeded",
            ) from None
        finally:
            self.link.forget(request.request_id)
        self.metrics.results.labels(status=result.status).inc()
        return result

    async def complete(self, body: ChatCompletionRequest) -> dict[str, Any]:
        """A non-streamed response body, for any model name."""
        created = int(time.time())
        if translate.is_fusion_model(body.model):
            result = await self.fuse(self.fusion_request(body, stream=False))
            if error := translate.result_error(result):
                raise error
            return translate.completion(result, body.model, created)
        adapter, upstream = self._passthrough_target(body.model)
        payload = translate.passthrough_body(body, upstream)
        if lists_fusion_tool(body.tools):
            return await run_tool_loop(
                payload,
                self._call(adapter.passthrough),
                self._fuse_question,
                self.settings.gateway_tool_rounds,
            )
        return await self._call(adapter.passthrough)(payload)

    def _passthrough_target(self, model: str) -> tuple[ChatModel, str]:
        if model not in self.catalog.models:
            names = ", ".join(
                [
                    "fusion",
                    *(f"fusion/{p}" for p in sorted(self.catalog.presets)),
                    *sorted(self.catalog.models),
                ]
            )
            raise GatewayError(
                404,
                f"unknown model {model!r}; available: {names}",
                "not_found_error",
                "model_not_found",
                param="model",
            )
        try:
            return self.models.for_model(model)
        except ModelConfigError as error:
            raise GatewayError(503, str(error), "api_error", "provider_not_configured") from error

    @staticmethod
    def _call(passthrough: CallModel) -> CallModel:
        async def call(payload: dict[str, Any]) -> dict[str, Any]:
            try:
                reply: dict[str, Any] = await passthrough(payload)
            except ModelHTTPError as error:
                raise GatewayError(error.status_code, str(error), "api_error", "upstream_error") from error
            except TimeoutError as error:
                raise GatewayError(504, str(error), "api_error", "upstream_timeout") from error
            except ModelConfigError as error:
                raise GatewayError.invalid(str(error), "model") from error
            except ModelError as error:
                raise GatewayError(502, str(error), "api_error", "upstream_error") from error
            return reply

        return call

    async def _fuse_question(self, question: str, preset: str | None) -> FusedResult:
        body = ChatCompletionRequest(
            model=f"fusion/{preset}" if preset else "fusion", messages=[{"role": "user", "content": question}]
        )
        try:
            request = self.fusion_request(body, stream=False)
        except GatewayError as error:
            raise FusionRefused(error.message) from error
        return await self.fuse(request)

    async def stream_fusion(self, body: ChatCompletionRequest) -> tuple[AsyncIterator[str], str]:
        """Publishes first (so errors are still HTTP errors); returns the chat completion's SSE events
        and the request id, which the caller forgets once the events are over (or were never read)."""
        updates, request_id = await self.fusion_updates(self.fusion_request(body, stream=True))
        return chat_events(updates, request_id, body.model), request_id

    async def fusion_updates(self, request: FusionRequest) -> tuple[AsyncIterator[Update], str]:
        """Publishes a streamed request and returns what happens to it, as `Update`s for any API's
        stream to render, and its request id (the caller forgets it once done)."""
        replies: asyncio.Queue[Reply] = asyncio.Queue()

        def deliver(message: Reply) -> None:
            if isinstance(message, AnswerChunk) and replies.qsize() >= MAX_QUEUED_CHUNKS:
                return  # a gap in the stream: the result fills in for it
            replies.put_nowait(message)

        await self.link.submit(_signed(request), deliver)
        return self._updates(request, replies), request.request_id

    async def _next(self, replies: "asyncio.Queue[Reply]", timeout_s: float, request_id: str) -> Reply:
        if not replies.empty():
            return replies.get_nowait()
        getting = asyncio.ensure_future(replies.get())
        try:
            return await self._first(getting, timeout_s, request_id)
        finally:
            getting.cancel()  # when it did not finish: what it would have taken stays in the queue

    async def _updates(
        self, request: FusionRequest, replies: "asyncio.Queue[Reply]"
    ) -> AsyncIterator[Update]:
        request_id = request.request_id
        deadline = time.monotonic() + request.policy.deadline_s + WAIT_MARGIN_S
        answer = AnswerStream()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                yield Failed(
                    GatewayError(504, "no fused result within the deadline", "api_error", "deadline_exceeded")
                )
                return
            try:
                message = await self._next(replies, min(KEEPALIVE_S, left), request_id)
            except TimeoutError:
                yield KeepAlive()
                continue
            except GatewayError as error:  # the drain is over
                yield Failed(error)
                return
            if isinstance(message, AnswerChunk):
                if text := answer.chunk(message):
                    yield TextDelta(text)
                continue
            if isinstance(message, FusionProgress):
                yield Progress(message)
                continue
            self.metrics.results.labels(status=message.status).inc()
            if failure := translate.result_error(message):
                yield Failed(failure)
                return
            # The result is authoritative: the rest of its answer, or all of it after a notice.
            if rest := answer.result(message):
                yield TextDelta(rest)
            yield Finished(message)
            return

    async def stream_passthrough(self, body: ChatCompletionRequest) -> AsyncIterator[bytes]:
        adapter, upstream = self._passthrough_target(body.model)
        payload = translate.passthrough_body(body, upstream)
        stream = adapter.passthrough_stream(payload)
        try:
            first = await anext(stream)
        except ModelHTTPError as error:
            raise GatewayError(error.status_code, str(error), "api_error", "upstream_error") from error
        except StopAsyncIteration:
            first = b""
        except TimeoutError as error:
            raise GatewayError(504, str(error), "api_error", "upstream_timeout") from error
        except ModelError as error:
            raise GatewayError(502, str(error), "api_error", "upstream_error") from error

        async def relay() -> AsyncIterator[bytes]:
            yield first
            async for piece in stream:
                yield piece

        return relay()

    def models_list(self) -> dict[str, Any]:
        names = ["fusion", *(f"fusion/{preset}" for preset in sorted(self.catalog.presets))]
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "fusion"} for name in names]
        data += [
            {"id": name, "object": "model", "created": 0, "owned_by": model.provider}
            for name, model in sorted(self.catalog.models.items())
        ]
        return {"object": "list", "data": data}


def _bearer(keys: ApiKeys) -> Any:
    async def check(
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
        studio: Annotated[str | None, Header(alias=STUDIO_HEADER)] = None,
        session: Annotated[str | None, Cookie(alias=COOKIE)] = None,
    ) -> None:
        """`Authorization: Bearer <key>`, Anthropic's `x-api-key: <key>` when no Authorization, or
        the Studio's session cookie with its header. The key's name goes with the request."""
        if not keys.required:
            key_name.set(None)
            return
        scheme, _, token = (authorization or "").partition(" ")
        if authorization is None and x_api_key is not None:
            scheme, token = "bearer", x_api_key
        name = keys.name_of(token) if scheme.lower() == "bearer" else None
        if name is None and authorization is None and studio is not None:
            name = keys.name_from_cookie(session)
        if name is None:
            raise GatewayError(
                401,
                "missing or wrong API key: send Authorization: Bearer <key>",
                "authentication_error",
                "invalid_api_key",
            )
        key_name.set(name)

    return check


async def _not_from_fusion(
    caller: Annotated[str | None, Header(alias=CALLER_HEADER)] = None,
) -> None:
    """Fusion's services mark every model call they make: one reaching a gateway would be a panel
    member, a judge or a tool calling Fusion itself, a loop."""
    if caller is not None:
        raise GatewayError(
            403,
            "Fusion cannot call itself: this request comes from a Fusion service (a panel member, a judge "
            "or a research tool); point that model at a provider, not at a Fusion gateway",
            "permission_error",
            "fusion_loop",
        )


def create_app(settings: Settings, catalog: Catalog) -> FastAPI:
    link = FusionLink(settings)
    models = ModelRouter(catalog)
    gateway = Gateway(settings, catalog, link, models)
    activity = Activity(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        connecting = asyncio.create_task(link.connect_forever())
        try:
            yield
        finally:
            # The server has drained (`Gateway.begin_drain`); the reply topic goes only if no result
            # can still come to it.
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            await link.close()
            await models.aclose()
            activity.close()

    app = FastAPI(
        title="Fusion gateway",
        version="0.1.0",
        description="OpenAI-compatible chat completions: `fusion`, `fusion/<preset>`, or any catalog model.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.gateway_max_body_bytes)
    app.state.gateway = gateway
    app.state.begin_drain = gateway.begin_drain  # called by the server when shutdown begins
    keys = ApiKeys(settings)
    authorized = [Depends(_bearer(keys)), Depends(_not_from_fusion)]

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, error: GatewayError) -> JSONResponse:
        gateway.metrics.errors.labels(status=str(error.status)).inc()
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in problem['loc'] if p != 'body') or 'body'}: {problem['msg']}"
            for problem in error.errors()[:5]
        )
        return await gateway_error(_, GatewayError.invalid(f"invalid request body: {problems}", None))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        kind: ErrorType = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            GatewayError(error.status_code, str(error.detail), kind).body(), status_code=error.status_code
        )

    @app.post("/v1/chat/completions", dependencies=authorized, response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest,
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        body = _read_openrouter_shapes(body)
        kind = "fusion" if translate.is_fusion_model(body.model) else "model"
        gateway.metrics.requests.labels(kind=kind, stream=str(body.stream).lower()).inc()
        if idempotency_key:
            return await _idempotent(gateway, body, await request.body(), idempotency_key)
        with gateway.admitted():
            if not body.stream:
                return JSONResponse(await gateway.complete(body))
        return await _streamed(gateway, body)

    app.include_router(responses_routes(gateway), dependencies=authorized)
    app.include_router(messages_routes(gateway), dependencies=authorized)
    app.include_router(fusions_routes(activity), dependencies=authorized)
    app.include_router(studio_routes(gateway, keys, activity, catalog))

    @app.get("/v1/models", dependencies=authorized)
    async def list_models() -> dict[str, Any]:
        return gateway.models_list()

    @app.get("/health")
    async def health() -> JSONResponse:
        if gateway.draining:
            body = {"status": "draining", "in_flight": gateway.in_flight, "reply_topic": link.reply_topic}
            return JSONResponse(body, status_code=503)
        if link.ready.is_set() and not link.replies.alive:  # no result could reach anyone: restart
            body = {
                "status": "stuck",
                "reason": "the reply topic is not read",
                "reply_topic": link.reply_topic,
            }
            return JSONResponse(body, status_code=503)
        if link.ready.is_set():
            return JSONResponse({"status": "ok", "kafka": "connected", "reply_topic": link.reply_topic})
        return JSONResponse({"status": "starting", "kafka": "unreachable"}, status_code=503)

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_document() -> Response:
        return Response(asyncapi.served(), media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)

    return app


def _signed(request: FusionRequest) -> FusionRequest:
    """The request with the name of the key it came with, for the activity (never the key)."""
    name = key_name.get()
    metadata = {k: v for k, v in request.metadata.items() if k != KEY_NAME}
    if name is not None:
        metadata[KEY_NAME] = name
    return request.model_copy(update={"metadata": metadata})


def _read_openrouter_shapes(body: ChatCompletionRequest) -> ChatCompletionRequest:
    """The request with OpenRouter's fusion shapes (the `openrouter/fusion` slug, the `fusion` plugin,
    the `openrouter:fusion` server tool) read into the gateway's own model name and `fusion` object."""
    routed = openrouter.route(body.model, body.fusion, body.plugins, body.tools)
    return body.model_copy(update={"model": routed.model, "fusion": routed.fusion, "tools": routed.tools})


async def chat_events(updates: AsyncIterator[Update], request_id: str, model: str) -> AsyncIterator[str]:
    """A fusion's updates as a chat completion's server-sent events."""
    created = int(time.time())
    yield sse(translate.chunk(request_id, model, created, {"role": "assistant", "content": ""}))
    async for update in updates:
        if isinstance(update, KeepAlive):
            yield ": keep-alive\n\n"
        elif isinstance(update, TextDelta):
            yield sse(translate.chunk(request_id, model, created, {"content": update.text}))
        elif isinstance(update, Progress):  # an extension standard clients ignore: no choices
            yield sse(translate.progress_chunk(request_id, model, created, update.event))
        elif isinstance(update, Failed):
            yield sse(update.error.body())
        else:
            final = translate.chunk(request_id, model, created, {}, finish="stop")
            final["usage"] = translate.usage(update.result)
            final["fusion"] = translate.fusion_summary(update.result)
            yield sse(final)
    yield "data: [DONE]\n\n"


async def _streamed(gateway: Gateway, body: ChatCompletionRequest) -> Response:
    """Streams, holding an in-flight slot (and, for a fusion, its reply route) until the stream ends."""

    async def start(release: Releases) -> AsyncIterator[Any]:
        if translate.is_fusion_model(body.model):
            events, request_id = await gateway.stream_fusion(body)
            release.append(lambda: gateway.link.forget(request_id))
            return events
        if lists_fusion_tool(body.tools):
            return completion_as_sse(await gateway.complete(body))
        return await gateway.stream_passthrough(body)

    return await hold_stream(gateway.admitted(), start)


async def _idempotent(gateway: Gateway, body: ChatCompletionRequest, raw: bytes, key: str) -> Response:
    entry, owner = gateway.idempotency.claim(key, fingerprint(raw))
    if owner:
        try:
            with gateway.admitted():
                response = (200, _rendered(await gateway.complete(body)))
        except GatewayError as error:
            response = (error.status, _rendered(error.body()))
        except BaseException as error:
            gateway.idempotency.abandon(key, entry, error)
            raise
        gateway.idempotency.settle(key, entry, response)
    status, content = await asyncio.shield(entry.response)
    if body.stream and status == 200:
        return StreamingResponse(completion_as_sse(json.loads(content)), media_type="text/event-stream")
    headers = {"Idempotent-Replayed": str(not owner).lower()}
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def _rendered(payload: dict[str, Any]) -> bytes:
    return bytes(JSONResponse(payload).body)
