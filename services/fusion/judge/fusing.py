"""From a released gathering to exactly one `FusedResult`: analysis, then the final answer.

Model calls go through an injected `CompletesChat`; everything else is plain code. Whatever fails,
`fuse` returns a result: zero answers give `failed` with every member's reason, a failed judge gives
the most central panel answer, flagged with `answer_source="best_member"`; a panel of one gives its
member's answer (`answer_source="member"`) without calling the judge.
"""

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from fusion_contracts import (
    Analysis,
    CallStatus,
    CostSummary,
    FusedResult,
    JudgeOutcome,
    MemberOutcome,
    PanelAnswer,
    PanelPlan,
    ReleaseReason,
    Timings,
    Usage,
    UsageSummary,
    limits,
)

from fusion.clock import seconds_until, utc_now
from fusion.judge.best_answer import most_central
from fusion.judge.prompts import (
    AnalysisError,
    analysis_messages,
    analysis_schema,
    clean_final,
    final_messages,
    final_stop,
    label_answers,
    parse_analysis,
)
from fusion.models import CompletesChat, ModelError, OnDelta

ANALYSIS_SHARE = 0.5
"""Of the time left for the judge, the analysis may take at most this share."""


def _ms(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds() * 1000, 0.0)


def member_outcomes(plan: PanelPlan, answers: dict[int, PanelAnswer]) -> list[MemberOutcome]:
    outcomes = []
    for index, spec in enumerate(plan.members):
        answer = answers.get(index)
        if answer is None:
            outcomes.append(
                MemberOutcome(
                    index=index, model=spec.model, status="timeout", error="no answer by the deadline"
                )
            )
            continue
        outcomes.append(
            MemberOutcome(
                index=index,
                model=answer.model,
                status=answer.status,
                text=answer.text,
                error=answer.error,
                usage=answer.usage,
                cost_usd=answer.cost_usd,
                latency_ms=answer.latency_ms,
                finished_at=answer.finished_at,
            )
        )
    return outcomes


def _calls(members: list[MemberOutcome], judge: JudgeOutcome | None) -> list[MemberOutcome | JudgeOutcome]:
    return [*members, judge] if judge is not None else list(members)


def usage_summary(members: list[MemberOutcome], judge: JudgeOutcome | None) -> UsageSummary:
    by_model: dict[str, Usage] = {}
    for call in _calls(members, judge):
        by_model[call.model] = by_model.get(call.model, Usage()) + call.usage
    return UsageSummary(by_model=by_model, total=sum(by_model.values(), Usage()))


def cost_summary(members: list[MemberOutcome], judge: JudgeOutcome | None) -> CostSummary:
    by_model: dict[str, Decimal] = {}
    for call in _calls(members, judge):
        by_model[call.model] = by_model.get(call.model, Decimal(0)) + call.cost_usd
    members_usd = sum((member.cost_usd for member in members), Decimal(0))
    judge_usd = judge.cost_usd if judge is not None else Decimal(0)
    return CostSummary(
        members_usd=members_usd, judge_usd=judge_usd, total_usd=members_usd + judge_usd, by_model=by_model
    )


def failure_reason(members: list[MemberOutcome]) -> str:
    reasons = "; ".join(f"member {m.index} ({m.model}): {m.status}: {m.error or 'no text'}" for m in members)
    return f"no panel member answered. {reasons}"


def crashed_result(
    plan: PanelPlan,
    answers: dict[int, PanelAnswer],
    release: ReleaseReason,
    released_at: datetime,
    error: Exception,
) -> FusedResult:
    """The result of a request whose fusion raised: failed, with the panel's outcomes kept."""
    return Judge.result(
        plan,
        release,
        released_at,
        member_outcomes(plan, answers),
        status="failed",
        error=f"internal error in the judge: {type(error).__name__}",
    )


@dataclass
class _JudgeRun:
    analysis: Analysis | None = None
    analysis_error: str | None = None
    answer: str | None = None
    status: CallStatus = "ok"
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0


class Judge:
    def __init__(self, models: CompletesChat) -> None:
        self._models = models

    async def fuse(
        self,
        plan: PanelPlan,
        answers: dict[int, PanelAnswer],
        release: ReleaseReason,
        released_at: datetime,
        on_delta: OnDelta | None = None,
    ) -> FusedResult:
        """`on_delta` receives the final answer as the judge writes it (requests with `stream`)."""
        members = member_outcomes(plan, answers)
        usable = {m.index: m.text for m in members if m.status == "ok" and m.text}
        if not usable:
            return self.result(
                plan, release, released_at, members, status="failed", error=failure_reason(members)
            )

        if len(plan.members) == 1:
            # A panel of one is that model alone (how `fusion eval` measures a single model): its
            # answer is the result, and no judge is called.
            (answer,) = usable.values()
            return self.result(
                plan, release, released_at, members, status="complete", answer=answer, answer_source="member"
            )

        run = await self._judge(plan, usable, on_delta)
        judge = JudgeOutcome(
            model=plan.judge.model,
            status=run.status,
            error=run.error,
            analysis_error=run.analysis_error,
            usage=run.usage,
            cost_usd=run.cost_usd,
            latency_ms=run.latency_ms,
        )
        all_ok = len(usable) == len(plan.members) and run.answer is not None
        if run.answer is not None:
            answer, source = run.answer, "judge"
        else:
            indices = sorted(usable)
            best = indices[most_central([usable[index] for index in indices])]
            answer, source = usable[best], "best_member"
        return self.result(
            plan,
            release,
            released_at,
            members,
            status="complete" if all_ok else "partial",
            answer=answer,
            answer_source=source,
            analysis=run.analysis,
            judge=judge,
        )

    async def _judge(self, plan: PanelPlan, usable: dict[int, str], on_delta: OnDelta | None) -> _JudgeRun:
        run = _JudgeRun()
        started = time.perf_counter()
        labelled = label_answers(plan.request_id, usable)
        try:
            budget = seconds_until(plan.deadline_at) * ANALYSIS_SHARE
            if budget <= 0:
                raise TimeoutError
            async with asyncio.timeout(budget):
                reply = await self._models.complete(
                    plan.judge,
                    analysis_messages(plan.request_id, plan.messages, labelled),
                    analysis_schema(),
                    deadline=time.monotonic() + budget,
                )
            run.usage += reply.usage
            run.cost_usd += reply.cost_usd or Decimal(0)
            run.analysis = parse_analysis(reply.text)
        except TimeoutError:
            run.analysis_error = "the analysis took longer than its share of the deadline"
        except (ModelError, AnalysisError) as error:
            run.analysis_error = str(error)[:2000]

        try:
            remaining = seconds_until(plan.deadline_at)
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                reply = await self._models.complete(
                    plan.judge,
                    final_messages(plan.request_id, plan.messages, labelled, run.analysis),
                    stop=final_stop(plan.request_id),
                    on_delta=on_delta,
                    deadline=time.monotonic() + remaining,
                )
            run.usage += reply.usage
            run.cost_usd += reply.cost_usd or Decimal(0)
            if text := clean_final(plan.request_id, reply.text):
                run.answer = text[: limits.MAX_ANSWER_CHARS]
            else:
                run.status, run.error = "error", "the judge returned an empty answer"
        except TimeoutError:
            run.status, run.error = "timeout", "the judge did not answer before the deadline"
        except ModelError as error:
            run.status, run.error = "error", str(error)[:2000]
        run.latency_ms = (time.perf_counter() - started) * 1000
        return run

    @staticmethod
    def result(
        plan: PanelPlan,
        release: ReleaseReason,
        released_at: datetime,
        members: list[MemberOutcome],
        **fields: object,
    ) -> FusedResult:
        now = utc_now()
        judge = fields.get("judge")
        return FusedResult.model_validate(
            {
                "request_id": plan.request_id,
                "request_digest": plan.request_digest,
                "release": release,
                "members": members,
                "usage": usage_summary(members, judge if isinstance(judge, JudgeOutcome) else None),
                "cost": cost_summary(members, judge if isinstance(judge, JudgeOutcome) else None),
                "answered": sum(1 for member in members if member.status == "ok"),
                "timings": Timings(
                    submitted_at=plan.submitted_at,
                    dispatched_at=plan.dispatched_at,
                    released_at=released_at,
                    completed_at=now,
                    total_ms=_ms(plan.submitted_at, now),
                    panel_ms=_ms(plan.submitted_at, released_at),
                    judge_ms=_ms(released_at, now),
                ),
                **fields,
            }
        )
