"""From a released gathering to exactly one `FusedResult`, by the plan's strategy.

Model calls go through an injected `CompletesChat`; everything else is plain code. Whatever fails,
`fuse` returns a result: zero answers give `failed` with every member's reason; a failed judge gives
the most central panel answer, flagged with `answer_source="best_member"` and a `partial` status that
says why; a panel of one gives its member's answer (`answer_source="member"`) without calling the
judge, and so does a panel whose answers all agree (`answer_source="agreement"`).
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from fusion_contracts import (
    Analysis,
    AnswerSource,
    CallStatus,
    ChatMessage,
    CostSummary,
    FailureReason,
    FusedResult,
    JudgeOutcome,
    MemberOutcome,
    PanelAnswer,
    PanelPlan,
    ReleaseReason,
    Source,
    Timings,
    Usage,
    UsageSummary,
    limits,
)

from fusion.answer_text import normalise
from fusion.clock import seconds_until, utc_now
from fusion.fences import Fences
from fusion.judge.best_answer import is_an_edit, most_central
from fusion.judge.json_reply import JudgeReplyError, first_json_object
from fusion.judge.prompts import (
    LabelledAnswer,
    analysis_messages,
    analysis_schema,
    final_messages,
    label_answers,
    once_messages,
    once_schema,
    select_messages,
    select_schema,
)
from fusion.judge.replies import AnswerStream, Panel, Selection, parse_once, parse_selection, read_analysis
from fusion.judge.voting import tally, texts_agree
from fusion.models import CompletesChat, ModelError, OnDelta
from fusion.research import citations

ANALYSIS_SHARE = 0.5
"""Of the time left for the judge, the analysis may take at most this share."""
ONCE_TOKENS_FACTOR = 2
"""`synthesize-once` writes the analysis and the answer in one call: it may write as much as both
calls of `synthesize` (twice the judge's `max_tokens`)."""


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
                error_status=answer.error_status,
                usage=answer.usage,
                cost_usd=answer.cost_usd,
                latency_ms=answer.latency_ms,
                finished_at=answer.finished_at,
                sources=answer.sources,
                tool_calls=answer.tool_calls,
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


def no_answer(members: list[MemberOutcome]) -> tuple[FailureReason, str]:
    """Why no member answered, as a code and in words."""
    reasons = "; ".join(f"member {m.index} ({m.model}): {m.status}: {m.error or 'no text'}" for m in members)
    if all(m.status == "timeout" for m in members):
        code: FailureReason = "deadline"
    elif all(m.error_status == 429 for m in members):
        code = "rate_limited"
    else:
        code = "all_members_failed"
    return code, f"no panel member answered. {reasons}"


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
        failure_reason="internal_error",
    )


@dataclass
class _JudgeRun:
    """What the judge's calls of one fusion produced."""

    answer: str | None = None
    source: AnswerSource = "judge"
    selected_member: int | None = None
    analysis: Analysis | None = None
    analysis_error: str | None = None
    problem: FailureReason | None = None
    """Why the judge's work could not be used in full; the first problem wins."""
    error: str | None = None
    """The first problem, in words (the result's `error`)."""
    status: CallStatus = "ok"
    call_error: str | None = None
    """Why the last failed judge call failed (the judge outcome's `error`)."""
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    calls: int = 0
    latency_ms: float = 0.0
    sources: list[Source] = field(default_factory=list)
    """The panel's sources, which the answers cite as [n]."""
    stages: "Stages | None" = None
    analysed: bool = False

    async def tell_analysed(self) -> None:
        """Tells `stages` the analysis is over (once): before the answer is written."""
        if self.analysed:
            return
        self.analysed = True
        if self.stages is not None:
            await self.stages.analysed(self.analysis)

    def fail(self, problem: FailureReason, message: str, *, call_failed: bool = False) -> None:
        if self.problem is None:
            self.problem, self.error = problem, message[:2000]
        if call_failed:
            self.status = "timeout" if problem == "judge_deadline" else "error"
            self.call_error = message[:2000]


def _problem(error: Exception) -> tuple[FailureReason, str]:
    """A judge call's failure as a code and in words."""
    if isinstance(error, TimeoutError):
        return "judge_deadline", "the judge did not answer before the deadline"
    if isinstance(error, JudgeReplyError):
        return error.reason, str(error)
    return "judge_upstream_error", str(error)


@dataclass(frozen=True, slots=True)
class Stages:
    """Told as the judge's work goes (for progress events): `started` when its work begins,
    `analysed` once it has its analysis (None when it has none); the answer is written only once
    `analysed` returns, so what it tells goes out first."""

    started: Callable[[], Awaitable[None]]
    analysed: Callable[[Analysis | None], Awaitable[None]]


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
        *,
        stages: Stages | None = None,
    ) -> FusedResult:
        """`on_delta` receives the final answer as the judge writes it (requests with `stream`);
        `stages` is told when the judge's calls start and when its analysis is done."""
        members = member_outcomes(plan, answers)
        # Each answer's [n] now refers to the panel's merged sources.
        sources, usable = citations.merge(
            {m.index: (m.text, m.sources) for m in members if m.status == "ok" and m.text}
        )

        def done(**fields: Any) -> FusedResult:
            answer = fields.get("answer")
            if isinstance(answer, str) and sources:
                # A streamed answer is only added to: the client has its start already.
                fields["answer"] = citations.with_source_list(answer, sources, replace_own=on_delta is None)
            return self.result(plan, release, released_at, members, sources=sources, **fields)

        if not usable:
            code, message = no_answer(members)
            return done(status="failed", error=message, failure_reason=code)
        missing = len(usable) < len(plan.members)
        gap: dict[str, object] = (
            {
                "failure_reason": "some_members_failed",
                "error": f"{len(plan.members) - len(usable)} of {len(plan.members)} members gave no answer",
            }
            if missing
            else {}
        )
        status = "partial" if missing else "complete"

        if len(plan.members) == 1:
            # A panel of one is that model alone (how `fusion eval` measures a single model): its
            # answer is the result, and no judge is called.
            ((index, answer),) = usable.items()
            return done(status=status, answer=answer, answer_source="member", selected_member=index, **gap)

        if (agreed := self._agreed(plan, usable)) is not None:
            return done(
                status=status, answer=usable[agreed], answer_source="agreement", selected_member=agreed, **gap
            )

        run = _JudgeRun(sources=sources, stages=stages)
        if stages is not None:
            await stages.started()
        started = time.perf_counter()
        strategies = {
            "synthesize": self._synthesize,
            "synthesize-once": self._synthesize_once,
            "select": self._select,
            "vote": self._vote,
        }
        await strategies[plan.strategy](run, plan, usable, on_delta)
        await run.tell_analysed()
        run.latency_ms = (time.perf_counter() - started) * 1000
        if run.answer is None:
            indices = sorted(usable)
            best = indices[most_central([usable[index] for index in indices])]
            run.answer, run.source, run.selected_member = usable[best], "best_member", best
        judge = JudgeOutcome(
            model=plan.judge.model,
            status=run.status,
            error=run.call_error,
            analysis_error=run.analysis_error,
            usage=run.usage,
            cost_usd=run.cost_usd,
            latency_ms=run.latency_ms,
            calls=run.calls,
        )
        if run.problem is not None:
            status, gap = "partial", {"failure_reason": run.problem, "error": run.error}
        return done(
            status=status,
            answer=run.answer,
            answer_source=run.source,
            selected_member=run.selected_member,
            analysis=run.analysis,
            judge=judge,
            **gap,
        )

    @staticmethod
    def _agreed(plan: PanelPlan, usable: dict[int, str]) -> int | None:
        """The answer that stands for a panel whose answers all agree, by the strategy's own test."""
        if plan.strategy == "vote":
            votes = tally(usable)
            return votes.representative(votes.groups[0]) if votes.unanimous else None
        return min(usable) if texts_agree(usable) else None

    async def _call(
        self,
        run: _JudgeRun,
        plan: PanelPlan,
        messages: list[ChatMessage],
        budget_s: float,
        *,
        decide: bool = False,
        json_schema: dict[str, Any] | None = None,
        stop: Sequence[str] = (),
        on_delta: OnDelta | None = None,
        max_tokens_factor: int = 1,
    ) -> str:
        """One judge call within `budget_s`, its usage counted. `decide`: an analysis or a choice,
        which runs at the plan's analysis temperature. Raises TimeoutError or ModelError."""
        spec = plan.judge
        if decide:
            spec = spec.model_copy(update={"temperature": plan.analysis_temperature})
        if max_tokens_factor != 1 and spec.max_tokens is not None:
            spec = spec.model_copy(update={"max_tokens": min(spec.max_tokens * max_tokens_factor, 65_536)})
        if budget_s <= 0:
            raise TimeoutError
        run.calls += 1
        async with asyncio.timeout(budget_s):
            reply = await self._models.complete(
                spec,
                messages,
                json_schema,
                stop=stop,
                on_delta=on_delta,
                deadline=time.monotonic() + budget_s,
            )
        run.usage += reply.usage
        run.cost_usd += reply.cost_usd or Decimal(0)
        return reply.text

    async def _synthesize(
        self, run: _JudgeRun, plan: PanelPlan, usable: dict[int, str], on_delta: OnDelta | None
    ) -> None:
        fences, labelled = Fences.new(), label_answers(plan.request_id, usable)
        panel = _panel(plan, labelled)
        judge_view: str | None = None
        try:
            text = await self._call(
                run,
                plan,
                analysis_messages(fences, plan.messages, labelled),
                seconds_until(plan.deadline_at) * ANALYSIS_SHARE,
                decide=True,
                json_schema=analysis_schema(len(labelled)),
            )
            data = first_json_object(text)
            run.analysis = read_analysis(data, panel)
            # The final call sees the analysis in the judge's own terms ("Answer N"), not the members'
            # models. The C encoder (no indent): the pure-Python one makes a reference cycle per call.
            judge_view = json.dumps(data, ensure_ascii=False)
        except (TimeoutError, ModelError, JudgeReplyError) as error:
            code, message = _problem(error)
            if isinstance(error, TimeoutError):
                message = "the analysis took longer than its share of the deadline"
            run.analysis_error = message[:2000]
            run.fail(code, f"the judge's analysis could not be used: {message}")
        await run.tell_analysed()
        try:
            text = await self._call(
                run,
                plan,
                _cited(fences, final_messages(fences, plan.messages, labelled, judge_view), run.sources),
                seconds_until(plan.deadline_at),
                stop=fences.stop(),
                on_delta=on_delta,
            )
            self._written(run, fences.clean(text))
        except (TimeoutError, ModelError) as error:
            run.fail(*_problem(error), call_failed=True)

    async def _synthesize_once(
        self, run: _JudgeRun, plan: PanelPlan, usable: dict[int, str], on_delta: OnDelta | None
    ) -> None:
        fences, labelled = Fences.new(), label_answers(plan.request_id, usable)
        try:
            text = await self._call(
                run,
                plan,
                _cited(fences, once_messages(fences, plan.messages, labelled), run.sources),
                seconds_until(plan.deadline_at),
                decide=True,
                json_schema=once_schema(len(labelled)),
                on_delta=_answer_stream(on_delta) if on_delta else None,
                max_tokens_factor=ONCE_TOKENS_FACTOR,
            )
            answer, run.analysis, analysis_error = parse_once(text, _panel(plan, labelled))
            if analysis_error is not None:
                run.analysis_error = str(analysis_error)
                run.fail(analysis_error.reason, f"the judge's analysis could not be used: {analysis_error}")
            self._written(run, fences.clean(answer))
        except (TimeoutError, ModelError, JudgeReplyError) as error:
            run.fail(*_problem(error), call_failed=not isinstance(error, JudgeReplyError))

    async def _select(
        self, run: _JudgeRun, plan: PanelPlan, usable: dict[int, str], on_delta: OnDelta | None
    ) -> None:
        choice = await self._choose(run, plan, usable)
        if choice is None or choice.member is None:
            return  # it failed, or found no answer better than the others: the most central one stands
        chosen = usable[choice.member]
        run.selected_member = choice.member
        corrected = choice.correction
        if corrected and normalise(corrected) != normalise(chosen) and is_an_edit(corrected, chosen):
            run.answer, run.source = corrected[: limits.MAX_ANSWER_CHARS], "judge"
        else:
            run.answer, run.source = chosen, "selected"

    async def _vote(
        self, run: _JudgeRun, plan: PanelPlan, usable: dict[int, str], on_delta: OnDelta | None
    ) -> None:
        votes = tally(usable)
        tied = [votes.representative(group) for group in votes.tied]
        winner = tied[0]
        if len(tied) > 1:
            choice = await self._choose(run, plan, {index: usable[index] for index in tied})
            if choice is not None and choice.member is not None:
                winner = choice.member
            else:
                winner = tied[most_central([usable[index] for index in tied])]
        run.answer, run.source, run.selected_member = usable[winner], "vote", winner

    async def _choose(self, run: _JudgeRun, plan: PanelPlan, usable: dict[int, str]) -> Selection | None:
        """The judge's choice among `usable`; None when its call or reply failed (recorded in `run`)."""
        fences, labelled = Fences.new(), label_answers(plan.request_id, usable)
        try:
            text = await self._call(
                run,
                plan,
                _cited(fences, select_messages(fences, plan.messages, labelled), run.sources),
                seconds_until(plan.deadline_at),
                decide=True,
                json_schema=select_schema(len(labelled)),
            )
            return parse_selection(text, _panel(plan, labelled))
        except (TimeoutError, ModelError, JudgeReplyError) as error:
            run.fail(*_problem(error), call_failed=not isinstance(error, JudgeReplyError))
            return None

    @staticmethod
    def _written(run: _JudgeRun, text: str) -> None:
        if text:
            run.answer = text[: limits.MAX_ANSWER_CHARS]
        else:
            run.fail("judge_empty", "the judge returned an empty answer", call_failed=True)

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
                "strategy": plan.strategy,
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


def _cited(fences: Fences, messages: list[ChatMessage], sources: list[Source]) -> list[ChatMessage]:
    """The judge's messages, told of the panel's sources when the answers cite any."""
    if not sources:
        return messages
    *head, last = messages
    note = (
        "The answers cite these sources as [n]. Keep those citations next to what they support, and "
        "cite no number that is not listed:\n" + fences.wrap("sources", citations.source_list(sources))
    )
    return [*head, ChatMessage(role=last.role, content=f"{last.content}\n\n{note}")]


def _panel(plan: PanelPlan, labelled: list[LabelledAnswer]) -> Panel:
    return Panel(labelled, {index: spec.model for index, spec in enumerate(plan.members)})


def _answer_stream(on_delta: OnDelta) -> OnDelta:
    """The `on_delta` of a one-pass call: the raw JSON goes in, the answer's new text comes out."""
    stream = AnswerStream()

    async def forward(delta: str) -> None:
        if text := stream.feed(delta):
            await on_delta(text)

    return forward
