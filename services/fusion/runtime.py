"""Running one service as a process: its broker inside an ASGI app that serves the health endpoint."""

import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
import uvicorn
from faststream.asgi import AsgiFastStream, AsgiResponse, HttpHandler, get
from faststream.kafka import KafkaBroker
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import make_asgi_app
from starlette.types import ASGIApp

from fusion.liveness import Progress
from fusion.observability.metrics import FusionMetrics
from fusion.settings import Settings

log = structlog.get_logger(__name__)


def service_app(
    broker: KafkaBroker,
    metrics: FusionMetrics,
    progress: Progress,
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> AsgiFastStream:
    return AsgiFastStream(
        broker,
        logger=logging.getLogger("fusion.app"),
        asgi_routes=[
            ("/health", health_check(broker, progress)),
            ("/metrics", make_asgi_app(metrics.registry)),
        ],
        on_startup=list(on_startup),
        on_shutdown=list(on_shutdown),
    )


def health_check(broker: KafkaBroker, progress: Progress) -> HttpHandler:
    """204 while the broker answers and nothing is stuck (see `fusion.liveness`); 500 with the
    reason otherwise, so an orchestrator restarts the service."""

    @get(include_in_schema=False)
    async def health(_scope: Any) -> AsgiResponse:
        stuck = progress.stuck()
        if stuck is not None:
            log.error("unhealthy: stuck", reason=stuck)
            return AsgiResponse(f"stuck: {stuck}".encode(), 500)
        if not await broker.ping(timeout=5.0):
            return AsgiResponse(b"broker unreachable", 500)
        return AsgiResponse(b"", 204)

    return health


GC_THRESHOLDS = (10_000, 20, 20)
"""A young collection after 10,000 net allocations rather than 700; the older generations as rarely."""


def tune_garbage_collector() -> None:
    """Takes every object alive at start-up (modules, classes, schemas, the app) out of the cyclic
    garbage collector's walks, so a full collection only walks what serving allocated and pauses the
    service for less. Then collects rarely.

    The hot paths make no reference cycles (tests/unit/test_reference_cycles.py), so the collector
    finds next to nothing to free; with the default thresholds (700, 10, 10) it would still walk the
    objects of every call in flight many times a second, pausing every request in the process each
    time. `GC_THRESHOLDS` keeps such walks rare."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Server(uvicorn.Server):
    """uvicorn's server, telling the app (`on_shutdown`) the moment shutdown begins: before it waits
    for the connections still open, so the app can finish them in time (the gateway's drain)."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(sockets)


def serve(
    app: ASGIApp,
    settings: Settings,
    service: str,
    host: str,
    port: int,
    *,
    graceful_s: float = 30.0,
    on_shutdown: Callable[[], None] | None = None,
) -> None:
    """Blocks until SIGINT or SIGTERM; the broker stops after in-flight handlers return. Requests
    still open `graceful_s` after the signal are cancelled."""
    tune_garbage_collector()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=round(graceful_s),
        # libuv's event loop, cheaper per wake-up than asyncio's, which every Kafka message and
        # model call costs; httptools parses the HTTP requests (health, metrics, the gateway's API).
        loop="uvloop",
        http="httptools",
    )
    try:
        Server(config, on_shutdown).run()
    finally:
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            provider.shutdown()  # flushes the spans still queued for export
