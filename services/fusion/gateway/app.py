"""The gateway service: OpenAI's Chat Completions API in front of Fusion (and of any catalog model)."""

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fusion_contracts import AnswerChunk, FusedResult, FusionRequest
from starlette.exceptions import HTTPException

from fusion.catalog import Catalog
from fusion.gateway import translate
from fusion.gateway.body_limit import BodyLimit
from fusion.gateway.errors import GatewayError
from fusion.gateway.idempotency import IdempotencyCache, fingerprint
from fusion.gateway.link import FusionLink
from fusion.gateway.metrics import GatewayMetrics
from fusion.gateway.openai_types import ChatCompletionRequest, ErrorType
from fusion.gateway.sse import completion_as_sse, sse
from fusion.gateway.tools import CallModel, FusionRefused, lists_fusion_tool, run_tool_loop
from fusion.kafka.tap import Reply
from fusion.models import ChatModel, ModelConfigError, ModelError, ModelHTTPError, ModelRouter
from fusion.settings import Settings

log = structlog.get_logger(__name__)

WAIT_MARGIN_S = 5.0
"""Past a fusion's deadline, the gateway waits this much longer before answering 504."""
KEEPALIVE_S = 10.0


class Gateway:
    """The request handling, apart from the HTTP framework: fuse, stream, pass through, tool loop."""

    def __init__(self, settings: Settings, catalog: Catalog, link: FusionLink, models: ModelRouter) -> None:
        self.settings = settings
        self.catalog = catalog
        self.link = link
        self.models = models
        self.metrics = GatewayMetrics()
        self.idempotency = IdempotencyCache(settings.gateway_idempotency_ttl_s)
        self._in_flight = 0

    @contextlib.contextmanager
    def admitted(self) -> Any:
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
        future = await self.link.submit(request)
        try:
            result = await asyncio.wait_for(future, request.policy.deadline_s + WAIT_MARGIN_S)
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
        payload = {**body.model_dump(exclude_none=True, exclude={"fusion", "stream"}), "model": upstream}
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

    async def stream_fusion(self, body: ChatCompletionRequest) -> AsyncIterator[str]:
        """Publishes first (so errors are still HTTP errors), then yields the SSE events."""
        request = self.fusion_request(body, stream=True)
        replies: asyncio.Queue[Reply] = asyncio.Queue()
        await self.link.submit(request, replies)
        return self._fusion_events(request, body.model, replies)

    async def _fusion_events(
        self, request: FusionRequest, model: str, replies: "asyncio.Queue[Reply]"
    ) -> AsyncIterator[str]:
        created = int(time.time())
        request_id = request.request_id
        deadline = time.monotonic() + request.policy.deadline_s + WAIT_MARGIN_S
        streamed: list[str] = []
        next_seq = 0
        try:
            yield sse(translate.chunk(request_id, model, created, {"role": "assistant", "content": ""}))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    yield sse(
                        GatewayError(
                            504, "no fused result within the deadline", "api_error", "deadline_exceeded"
                        ).body()
                    )
                    break
                try:
                    message = await asyncio.wait_for(replies.get(), min(KEEPALIVE_S, left))
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if isinstance(message, AnswerChunk):
                    if message.seq < next_seq:
                        continue  # a redelivered chunk
                    next_seq = message.seq + 1
                    streamed.append(message.delta)
                    yield sse(translate.chunk(request_id, model, created, {"content": message.delta}))
                    continue
                self.metrics.results.labels(status=message.status).inc()
                for event in self._closing_events(message, model, created, "".join(streamed)):
                    yield event
                break
            yield "data: [DONE]\n\n"
        finally:
            self.link.forget(request_id)

    @staticmethod
    def _closing_events(result: FusedResult, model: str, created: int, streamed: str) -> list[str]:
        if error := translate.result_error(result):
            return [sse(error.body())]
        events = []
        answer = result.answer or ""
        if answer != streamed:
            # The result is authoritative: the rest of the answer, or, when the judge failed after it
            # had started writing, the best panel answer after a notice.
            rest = (
                answer.removeprefix(streamed)
                if answer.startswith(streamed)
                else (f"\n\n[The judge failed; the best panel answer follows.]\n\n{answer}")
            )
            events.append(sse(translate.chunk(result.request_id, model, created, {"content": rest})))
        final = translate.chunk(result.request_id, model, created, {}, finish="stop")
        final["usage"] = translate.usage(result)
        final["fusion"] = translate.fusion_summary(result)
        events.append(sse(final))
        return events

    async def stream_passthrough(self, body: ChatCompletionRequest) -> AsyncIterator[bytes]:
        adapter, upstream = self._passthrough_target(body.model)
        payload = {**body.model_dump(exclude_none=True, exclude={"fusion"}), "model": upstream}
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


def _bearer(settings: Settings) -> Any:
    async def check(authorization: Annotated[str | None, Header()] = None) -> None:
        expected = settings.gateway_api_key
        if expected is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.encode(), expected.get_secret_value().encode()
        ):
            raise GatewayError(
                401,
                "missing or wrong API key: send Authorization: Bearer <key>",
                "authentication_error",
                "invalid_api_key",
            )

    return check


def create_app(settings: Settings, catalog: Catalog) -> FastAPI:
    link = FusionLink(settings)
    models = ModelRouter(catalog)
    gateway = Gateway(settings, catalog, link, models)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        connecting = asyncio.create_task(link.connect_forever())
        try:
            yield
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            await link.close()
            await models.aclose()

    app = FastAPI(
        title="Fusion gateway",
        version="0.1.0",
        description="OpenAI-compatible chat completions: `fusion`, `fusion/<preset>`, or any catalog model.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.gateway_max_body_bytes)
    app.state.gateway = gateway
    authorized = [Depends(_bearer(settings))]

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
        kind = "fusion" if translate.is_fusion_model(body.model) else "model"
        gateway.metrics.requests.labels(kind=kind, stream=str(body.stream).lower()).inc()
        if idempotency_key:
            return await _idempotent(gateway, body, await request.body(), idempotency_key)
        with gateway.admitted():
            if not body.stream:
                return JSONResponse(await gateway.complete(body))
        return await _streamed(gateway, body)

    @app.get("/v1/models", dependencies=authorized)
    async def list_models() -> dict[str, Any]:
        return gateway.models_list()

    @app.get("/health")
    async def health() -> JSONResponse:
        if link.ready.is_set():
            return JSONResponse({"status": "ok", "kafka": "connected", "reply_topic": link.reply_topic})
        return JSONResponse({"status": "starting", "kafka": "unreachable"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)

    return app


async def _streamed(gateway: Gateway, body: ChatCompletionRequest) -> Response:
    """Streams, holding an in-flight slot until the stream ends."""
    admission = gateway.admitted()
    admission.__enter__()
    try:
        if translate.is_fusion_model(body.model):
            events: AsyncIterator[Any] = await gateway.stream_fusion(body)
        elif lists_fusion_tool(body.tools):
            events = completion_as_sse(await gateway.complete(body))
        else:
            events = await gateway.stream_passthrough(body)
    except BaseException:
        admission.__exit__(None, None, None)
        raise

    async def held() -> AsyncIterator[Any]:
        try:
            async for event in events:
                yield event
        finally:
            admission.__exit__(None, None, None)

    return StreamingResponse(held(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _idempotent(gateway: Gateway, body: ChatCompletionRequest, raw: bytes, key: str) -> Response:
    entry, owner = gateway.idempotency.claim(key, fingerprint(raw))
    if owner:
        try:
            with gateway.admitted():
                response = (200, await gateway.complete(body))
        except GatewayError as error:
            response = (error.status, error.body())
        except BaseException as error:
            gateway.idempotency.abandon(key, entry, error)
            raise
        gateway.idempotency.settle(key, entry, response)
    status, payload = await asyncio.shield(entry.response)
    if body.stream and status == 200:
        return StreamingResponse(completion_as_sse(payload), media_type="text/event-stream")
    return JSONResponse(payload, status_code=status, headers={"Idempotent-Replayed": str(not owner).lower()})
