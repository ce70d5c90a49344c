"""Activity rows shaped for the Studio's pages, JSON and CSV: pure, no database and no HTTP here.

Money stays in whole nano-dollars until it is written out (`fusion.studio.money`), so the calls of a
request add up to its total exactly, on a page as in a CSV. A row's `request` and `result` JSON are
read back into the contracts; a row whose JSON no longer reads (an older schema) is still listed,
with what its columns say."""

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fusion_contracts import Analysis, FusedResult, FusionRequest, ModelSpec, Source, Timings
from pydantic import ValidationError

from fusion.activity.store import Totals
from fusion.activity.tables import Fusion, ModelCall
from fusion.studio.charts import CostSeries
from fusion.studio.money import exact_usd

__all__ = [
    "CSV_HEADER",
    "CallView",
    "FusionDetail",
    "FusionSummary",
    "costs_json",
    "csv_rows",
    "csv_text",
    "detail_of",
    "summary_of",
    "totals_json",
]

CSV_HEADER = (
    "request_id",
    "submitted_at",
    "key_name",
    "preset",
    "request_status",
    "role",
    "position",
    "model",
    "call_status",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet runs a cell that starts so as a formula; names are written with a `'` before."""


@dataclass(frozen=True, slots=True)
class CallView:
    position: int
    role: str
    model: str
    status: str
    input_tokens: int
    output_tokens: int
    cost_nanousd: int
    latency_ms: float | None
    text: str | None
    error: str | None

    @property
    def cost_usd(self) -> str:
        return exact_usd(self.cost_nanousd)

    def as_json(self, with_text: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "position": self.position,
            "role": self.role,
            "model": self.model,
            "status": self.status,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }
        if with_text:
            data["text"] = self.text
        return data


def _call(call: ModelCall) -> CallView:
    return CallView(
        position=call.position,
        role=call.role,
        model=call.model,
        status=call.status,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cost_nanousd=call.cost_nanousd,
        latency_ms=call.latency_ms,
        text=call.text,
        error=call.error,
    )


@dataclass(frozen=True, slots=True)
class FusionSummary:
    """A request as the activity list shows it."""

    request_id: str
    submitted_at: datetime
    completed_at: datetime | None
    status: str
    key_name: str | None
    preset: str | None
    strategy: str | None
    question: str
    cost_nanousd: int
    input_tokens: int
    output_tokens: int
    total_ms: float | None
    calls: list[CallView]
    models: list[str]
    """Each model once, members first, then the judge (or the panel asked for, before a result)."""

    @property
    def cost_usd(self) -> str:
        return exact_usd(self.cost_nanousd)

    @property
    def calls_nanousd(self) -> int:
        return sum(call.cost_nanousd for call in self.calls)

    @property
    def unattributed_nanousd(self) -> int:
        """What the total has beyond its calls' costs (each rounded to the nano-dollar on its own):
        shown as a line of its own, so the lines on a page still add up to the total."""
        return self.cost_nanousd - self.calls_nanousd if self.calls else 0

    def as_json(self, with_text: bool = False) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "submitted_at": self.submitted_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "status": self.status,
            "key_name": self.key_name,
            "preset": self.preset,
            "strategy": self.strategy,
            "question": self.question,
            "models": self.models,
            "cost_usd": self.cost_usd,
            "unattributed_cost_usd": exact_usd(self.unattributed_nanousd),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_ms": self.total_ms,
            "calls": [call.as_json(with_text) for call in self.calls],
        }


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _request_of(row: Fusion) -> FusionRequest | None:
    try:
        return FusionRequest.model_validate(row.request) if row.request is not None else None
    except ValidationError:
        return None


def _result_of(row: Fusion) -> FusedResult | None:
    try:
        return FusedResult.model_validate(row.result) if row.result is not None else None
    except ValidationError:
        return None


def summary_of(row: Fusion) -> FusionSummary:
    calls = [_call(call) for call in sorted(row.calls, key=lambda call: call.position)]
    models = _unique(call.model for call in calls)
    if not models and (request := _request_of(row)) is not None and request.panel:
        models = _unique(spec.model for spec in request.panel)
    return FusionSummary(
        request_id=row.request_id,
        submitted_at=row.submitted_at,
        completed_at=row.completed_at,
        status=row.status,
        key_name=row.key_name,
        preset=row.preset,
        strategy=row.strategy,
        question=row.question,
        cost_nanousd=row.cost_nanousd,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        total_ms=row.total_ms,
        calls=calls,
        models=models,
    )


@dataclass(frozen=True, slots=True)
class FusionDetail:
    """A request with everything known of it, for its own page."""

    summary: FusionSummary
    request: FusionRequest | None
    result: FusedResult | None
    answer: str | None
    error: str | None
    failure_reason: str | None

    @property
    def panel(self) -> list[ModelSpec]:
        return list(self.request.panel or []) if self.request else []

    @property
    def analysis(self) -> Analysis | None:
        return self.result.analysis if self.result else None

    @property
    def timings(self) -> Timings | None:
        return self.result.timings if self.result else None

    @property
    def sources(self) -> list[Source]:
        return list(self.result.sources) if self.result else []

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary.as_json(with_text=True),
            "request": self.request.model_dump(mode="json", exclude={"reply_to"}) if self.request else None,
            "answer": self.answer,
            "error": self.error,
            "failure_reason": self.failure_reason,
            "answer_source": self.result.answer_source if self.result else None,
            "selected_member": self.result.selected_member if self.result else None,
            "release": self.result.release if self.result else None,
            "analysis": self.analysis.model_dump(mode="json") if self.analysis else None,
            "timings": self.timings.model_dump(mode="json") if self.timings else None,
            "sources": [source.model_dump(mode="json") for source in self.sources],
        }


def detail_of(row: Fusion) -> FusionDetail:
    return FusionDetail(
        summary=summary_of(row),
        request=_request_of(row),
        result=_result_of(row),
        answer=row.answer,
        error=row.error,
        failure_reason=row.failure_reason,
    )


def totals_json(totals: Totals) -> dict[str, Any]:
    return {
        "requests": totals.requests,
        "cost_usd": exact_usd(totals.cost_nanousd),
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
    }


def costs_json(series: CostSeries) -> dict[str, Any]:
    return {
        "step": series.step,
        "models": series.models,
        "total_usd": exact_usd(series.total),
        "buckets": [
            {
                "start": bucket.start.isoformat(),
                "total_usd": exact_usd(bucket.total),
                "costs_usd": {model: exact_usd(nano) for model, nano in bucket.costs.items()},
            }
            for bucket in series.buckets
        ],
    }


def _name(text: str | None) -> str:
    text = text or ""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_rows(rows: Iterable[Fusion]) -> Iterator[list[str]]:
    """One line per model call, as recorded: no line is a sum of others."""
    for row in rows:
        for call in sorted(row.calls, key=lambda call: call.position):
            yield [
                row.request_id,
                row.submitted_at.isoformat(),
                _name(row.key_name),
                _name(row.preset),
                row.status,
                call.role,
                str(call.position),
                _name(call.model),
                call.status,
                str(call.input_tokens),
                str(call.output_tokens),
                exact_usd(call.cost_nanousd),
                "" if call.latency_ms is None else str(call.latency_ms),
            ]


def csv_text(rows: Iterable[Fusion]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(csv_rows(rows))
    return out.getvalue()
