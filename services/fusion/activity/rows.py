"""What a request and its result become in the activity tables: pure, no database here."""

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from fusion_contracts import FusedResult, FusionRequest

KEY_NAME = "fusion.key_name"
"""The `metadata` entry in which the gateway names the API key a request came with."""

NANO = Decimal(1_000_000_000)


def text(value: str | None) -> str | None:
    """PostgreSQL's text cannot hold NUL, which a model's output may carry."""
    return value.replace("\x00", "") if value else value


def nanousd(usd: Decimal) -> int:
    return int((usd * NANO).to_integral_value(ROUND_HALF_EVEN))


def usd(nano: int) -> Decimal:
    return (Decimal(nano) / NANO).normalize() if nano else Decimal(0)


def question_of(request: FusionRequest) -> str:
    users = [message for message in request.messages if message.role == "user"]
    content = (users or request.messages)[-1].content
    return content if isinstance(content, str) else str(content)


def request_fields(request: FusionRequest) -> dict[str, Any]:
    """The row of a request whose result has not come (yet)."""
    return {
        "request_id": request.request_id,
        "submitted_at": request.submitted_at,
        "key_name": request.metadata.get(KEY_NAME),
        "preset": request.preset,
        "strategy": request.strategy,
        "question": text(question_of(request)[:2_000]),
        "request": request.model_dump(mode="json"),
    }


def result_fields(result: FusedResult, topic: str) -> dict[str, Any]:
    """The row's columns that the result sets."""
    return {
        "status": result.status,
        "completed_at": result.timings.completed_at,
        "strategy": result.strategy,
        "result": result.model_dump(mode="json"),
        "answer": text(result.answer),
        "error": text(result.error),
        "failure_reason": result.failure_reason,
        "cost_nanousd": nanousd(result.cost.total_usd),
        "input_tokens": result.usage.total.input_tokens,
        "output_tokens": result.usage.total.output_tokens,
        "total_ms": result.timings.total_ms,
        "result_topic": topic,
    }


def call_rows(result: FusedResult) -> list[dict[str, Any]]:
    """One row per member, then one for the judge (all its calls) when it was called."""
    submitted_at = result.timings.submitted_at
    rows = [
        {
            "request_id": result.request_id,
            "position": member.index,
            "role": "member",
            "model": member.model,
            "status": member.status,
            "input_tokens": member.usage.input_tokens,
            "output_tokens": member.usage.output_tokens,
            "cost_nanousd": nanousd(member.cost_usd),
            "latency_ms": member.latency_ms,
            "text": text(member.text),
            "error": text(member.error),
            "submitted_at": submitted_at,
        }
        for member in result.members
    ]
    judge = result.judge
    if judge is not None and (judge.calls or judge.cost_usd or judge.usage.total_tokens):
        rows.append(
            {
                "request_id": result.request_id,
                "position": max((member.index for member in result.members), default=-1) + 1,
                "role": "judge",
                "model": judge.model,
                "status": judge.status,
                "input_tokens": judge.usage.input_tokens,
                "output_tokens": judge.usage.output_tokens,
                "cost_nanousd": nanousd(judge.cost_usd),
                "latency_ms": judge.latency_ms,
                "text": None,
                "error": text(judge.error),
                "submitted_at": submitted_at,
            }
        )
    return rows
