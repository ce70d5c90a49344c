"""OpenTelemetry tracing: off unless the standard `OTEL_*` variables point at an OTLP endpoint.

FastStream's Kafka telemetry middleware carries the trace context in message headers, so one fused
request is one trace from the client's publish through the dispatcher, every panel call, the judge and
the result. Model calls are spans of their own with the GenAI semantic-convention attributes.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

TRACER = "fusion"


def tracing_enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(service: str) -> TracerProvider | None:
    """Installs the global tracer provider with an OTLP/HTTP exporter, when tracing is enabled."""
    if not tracing_enabled():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"fusion-{service}")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


@contextmanager
def model_call_span(system: str, operation: str, request_model: str, **attributes: Any) -> Iterator[Span]:
    """A GenAI client span (`gen_ai.*` attributes); an exception is recorded and re-raised. While
    tracing is off it is a span that records nothing, made without a tracer: OpenTelemetry's no-op
    path would still build the span's name and attributes on every model call."""
    if not tracing_enabled():
        yield trace.INVALID_SPAN
        return
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        f"{operation} {request_model}",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": operation,
            "gen_ai.system": system,
            "gen_ai.request.model": request_model,
            **{key: value for key, value in attributes.items() if value is not None},
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.set_attribute("error.type", type(error).__name__)
            raise


@contextmanager
def tool_call_span(tool: str, call_id: str) -> Iterator[Span]:
    """An `execute_tool` span (GenAI semantic conventions) around one tool call of a member's research."""
    if not tracing_enabled():
        yield trace.INVALID_SPAN
        return
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        f"execute_tool {tool}",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": call_id,
        },
    ) as span:
        yield span
