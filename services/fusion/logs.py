"""structlog, configured once per process: JSON when not on a terminal, readable on one.

Standard-library loggers (FastStream, aiokafka, uvicorn) go through the same processors.
"""

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from fusion.observability.redaction import Redactor
from fusion.observability.tracing import current_trace_id
from fusion.settings import Settings


def _trace_id(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if "trace_id" not in event and (trace_id := current_trace_id()):
        event["trace_id"] = trace_id
    return event


def configure_logging(settings: Settings, service: str, secrets: Iterable[str] = ()) -> None:
    """Every line carries the service, the request id where one is bound, and the trace id while a
    span is current; configured key values and authorization values never reach the output."""
    as_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        lambda _logger, _name, event: {**event, "service": service},
        _trace_id,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # A line below the level is dropped before any processor runs: otherwise each one was
        # time-stamped and bound before the standard library discarded it.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                Redactor(secrets),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("aiokafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
