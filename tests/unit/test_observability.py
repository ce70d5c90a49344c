"""Log redaction, trace ids in logs, GenAI spans, and the timeline: no Kafka."""

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import structlog
from fusion.cli.timeline import render_timeline, spans
from fusion.logs import configure_logging
from fusion.observability.metrics import FusionMetrics
from fusion.observability.redaction import REDACTED, Redactor
from fusion.observability.tracing import model_call_span, tracing_enabled
from fusion.settings import Settings
from fusion_contracts import FusedResult, JudgeOutcome, MemberOutcome, Timings, Usage
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console

SECRET = "sk-live-0123456789abcdef"


def test_the_redactor_removes_configured_keys_and_authorization_values_at_any_depth() -> None:
    redact = Redactor([SECRET, ""])
    event = {
        "event": f"call failed: key {SECRET} rejected",
        "headers": {"Authorization": "Bearer anything-at-all-here", "accept": "json"},
        "nested": [{"error": f"Bearer {SECRET}"}, ("x-api-key", SECRET)],
        "count": 3,
    }

    cleaned = redact(None, "info", event)

    assert SECRET not in json.dumps(cleaned)
    assert cleaned["headers"]["Authorization"] == REDACTED
    assert cleaned["headers"]["accept"] == "json"
    assert cleaned["event"] == f"call failed: key {REDACTED} rejected"
    assert cleaned["nested"][0]["error"] == f"Bearer {REDACTED}"
    assert cleaned["count"] == 3


def test_log_lines_are_json_with_service_request_and_trace_ids_and_no_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging(Settings(log_format="json"), "judge", [SECRET])
    provider = TracerProvider()
    log = structlog.get_logger("test")
    try:
        with (
            provider.get_tracer("t").start_as_current_span("work") as span,
            structlog.contextvars.bound_contextvars(request_id="r-42"),
        ):
            try:
                raise RuntimeError(f"boom with {SECRET}")
            except RuntimeError:
                log.exception("failed", detail=f"key={SECRET}")
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()

    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["service"] == "judge"
    assert line["request_id"] == "r-42"
    assert line["trace_id"] == trace_id
    assert "RuntimeError" in line["exception"]
    assert SECRET not in stream.getvalue()


def test_tracing_is_off_unless_an_otlp_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    assert not tracing_enabled()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing_enabled()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not tracing_enabled()


def tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")


def test_lines_below_the_level_are_dropped_before_any_processor_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    processed: list[str] = []

    def no_trace() -> None:
        processed.append("line")

    monkeypatch.setattr("fusion.logs.current_trace_id", no_trace)
    configure_logging(Settings(log_format="json", log_level="WARNING"), "panel-worker")
    log = structlog.get_logger("test")
    try:
        log.info("member answered", latency_ms=12)
        assert processed == []
        log.warning("broker away")
        assert processed == ["line"]
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["broker away"]


def test_a_model_call_span_costs_no_tracer_while_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)

    def no_tracer(*args: object, **kwargs: object) -> trace.Tracer:
        raise AssertionError("a tracer was asked for while tracing is off")

    monkeypatch.setattr(trace, "get_tracer", no_tracer)
    with model_call_span("openrouter", "chat", "gpt-x") as span:
        span.set_attribute("gen_ai.usage.input_tokens", 3)
    assert not span.is_recording()
    with pytest.raises(ValueError, match="bad"), model_call_span("anthropic", "chat", "claude-x"):
        raise ValueError("bad")


def test_a_model_call_span_has_genai_attributes_and_records_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    tracing_on(monkeypatch)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer", provider.get_tracer)

    with model_call_span("openrouter", "chat", "gpt-x", **{"gen_ai.request.max_tokens": 5}) as span:
        span.set_attribute("gen_ai.usage.input_tokens", 3)
    with pytest.raises(ValueError, match="bad"), model_call_span("anthropic", "chat", "claude-x"):
        raise ValueError("bad")

    ok, failed = exporter.get_finished_spans()
    assert ok.name == "chat gpt-x"
    assert ok.attributes is not None
    assert ok.attributes["gen_ai.system"] == "openrouter"
    assert ok.attributes["gen_ai.request.model"] == "gpt-x"
    assert ok.attributes["gen_ai.usage.input_tokens"] == 3
    assert failed.status.is_ok is False
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "ValueError"
    assert failed.events[0].name == "exception"


def test_model_call_metrics_count_each_model_and_outcome_apart() -> None:
    metrics = FusionMetrics()
    for _ in range(2):
        metrics.model_call("fast", "ok", 0.2, Usage(input_tokens=10, output_tokens=4), Decimal("0.001"))
    metrics.model_call("fast", "error", 3.0, Usage(), Decimal(0))
    metrics.model_call("slow", "ok", 1.5, Usage(input_tokens=1, output_tokens=2), Decimal("0.5"))

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("fusion_member_latency_seconds_count", model="fast", status="ok") == 2
    assert value("fusion_member_latency_seconds_sum", model="fast", status="error") == 3.0
    assert value("fusion_member_latency_seconds_count", model="slow", status="ok") == 1
    assert value("fusion_tokens_total", model="fast", direction="input") == 20
    assert value("fusion_tokens_total", model="fast", direction="output") == 8
    assert value("fusion_tokens_total", model="slow", direction="output") == 2
    assert value("fusion_cost_usd_total", model="fast") == pytest.approx(0.002)
    assert value("fusion_cost_usd_total", model="slow") == 0.5


def result() -> FusedResult:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    return FusedResult(
        request_id="r",
        status="partial",
        members=[
            MemberOutcome(index=0, model="a", status="ok", latency_ms=1000, finished_at=at(1.2)),
            MemberOutcome(index=1, model="b", status="error", latency_ms=500, finished_at=at(1.0)),
            MemberOutcome(index=2, model="c", status="timeout"),
        ],
        judge=JudgeOutcome(model="j", status="ok"),
        timings=Timings(
            submitted_at=t0, dispatched_at=at(0.1), released_at=at(2.0), completed_at=at(3.0), total_ms=3000
        ),
    )


def test_the_timeline_places_queueing_each_call_and_the_judge() -> None:
    rows = {row.label: (round(row.start_s, 2), round(row.end_s, 2)) for row in spans(result())}

    assert rows["queue → dispatcher"] == (0.0, 0.1)
    assert rows["member 0 a (ok)"] == (0.2, 1.2)
    assert rows["  queue 0"] == (0.1, 0.2)
    assert rows["member 1 b (error)"] == (0.5, 1.0)
    assert rows["member 2 c (no answer)"] == (0.1, 2.0)
    assert rows["judge j"] == (2.0, 3.0)


def test_the_timeline_renders_bars() -> None:
    console = Console(record=True, width=120)

    render_timeline(result(), console)

    text = console.export_text()
    assert "Timeline (total 3.00 s)" in text
    assert "█" in text
    assert "judge j" in text


def test_every_secret_the_settings_hold_is_redacted(tmp_path: Path) -> None:
    """The named gateway keys, the Kafka password (from its file) and the database's password."""
    from fusion.catalog import load_catalog
    from fusion.cli.main import _secrets
    from pydantic import SecretStr

    password_file = tmp_path / "password"
    password_file.write_text("kafka-pass-7e1\n")
    settings = Settings(
        gateway_api_keys={"team-a": SecretStr("sk-team-a-91c")},
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="fusion-judge",
        kafka_sasl_password_file=password_file,
        database_url=SecretStr("postgresql+psycopg://fusion:db-pass-3a0@db/fusion"),
    )
    secrets = _secrets(settings, load_catalog(None))
    assert {"sk-team-a-91c", "kafka-pass-7e1", "db-pass-3a0"} <= set(secrets)
