"""Requests and results as the activity recorder receives them, with members, costs and a key."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fusion.activity.rows import KEY_NAME
from fusion_contracts import (
    ChatMessage,
    CostSummary,
    FusedResult,
    FusionRequest,
    JudgeOutcome,
    MemberOutcome,
    Timings,
    Usage,
    UsageSummary,
)

MEMBER_COSTS = (Decimal("0.000123456"), Decimal("0.000654321"))
JUDGE_COST = Decimal("0.0000105")


def a_request(
    question: str = "Why is the sky blue?", key: str | None = "team-a", **fields: object
) -> FusionRequest:
    metadata = {KEY_NAME: key} if key else {}
    return FusionRequest(
        messages=[ChatMessage(role="user", content=question)], preset="budget", metadata=metadata, **fields
    )


def a_result(
    request: FusionRequest, answer: str = "Rayleigh scattering.", status: str = "complete"
) -> FusedResult:
    submitted = request.submitted_at
    models = ("stand-in/a", "stand-in/b")
    members = [
        MemberOutcome(
            index=i,
            model=model,
            status="ok",
            text=f"answer {i}",
            usage=Usage(input_tokens=10 + i, output_tokens=20 + i),
            cost_usd=cost,
            latency_ms=100.0 + i,
        )
        for i, (model, cost) in enumerate(zip(models, MEMBER_COSTS, strict=True))
    ]
    judge = JudgeOutcome(
        model="stand-in/judge",
        status="ok",
        usage=Usage(input_tokens=50, output_tokens=30),
        cost_usd=JUDGE_COST,
        latency_ms=250.0,
        calls=1,
    )
    members_usd = sum(MEMBER_COSTS, Decimal(0))
    by_model = {m.model: m.cost_usd for m in members} | {judge.model: JUDGE_COST}
    total = sum((m.usage for m in members), Usage()) + judge.usage
    return FusedResult(
        request_id=request.request_id,
        status=status,
        answer=answer,
        members=members,
        judge=judge,
        usage=UsageSummary(total=total),
        cost=CostSummary(
            members_usd=members_usd,
            judge_usd=JUDGE_COST,
            total_usd=members_usd + JUDGE_COST,
            by_model=by_model,
        ),
        timings=Timings(
            submitted_at=submitted,
            completed_at=submitted + timedelta(seconds=2),
            total_ms=2000.0,
        ),
    )


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)
