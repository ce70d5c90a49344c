"""What the judge publishes on `fusion.results` (or the request's `reply_to`)."""

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Discriminator, Field, NonNegativeFloat, NonNegativeInt

from fusion_contracts.common import (
    CallStatus,
    Contract,
    FailureReason,
    Instant,
    ModelName,
    RequestDigest,
    RequestId,
    SchemaVersion,
    Source,
    Strategy,
    ToolCounts,
    Usage,
    Usd,
    utc_now,
)
from fusion_contracts.limits import MAX_ANSWER_CHARS, MAX_SOURCES, SCHEMA_VERSION

ResultStatus = Literal["complete", "partial", "failed", "rejected"]
"""complete: every member and every judge call succeeded. partial (degraded): there is an answer, but
some member failed or the judge's work could not be used in full (an unreadable analysis, a failed
call); `failure_reason` and `error` say what. failed: no member answered. rejected: the request was
invalid and never dispatched."""

ReleaseReason = Literal["all", "quorum", "deadline"]
"""Why the judge stopped waiting: every answer was in, quorum plus grace, or the panel deadline."""

AnswerSource = Literal["judge", "best_member", "member", "selected", "vote", "agreement"]
"""judge: the judge wrote the answer (or corrected the one it selected). best_member: the judge failed,
so the answer is the most central panel answer. member: a panel of one, whose answer is the result (no
judge is called). selected: the judge chose this member's answer, unchanged (strategy `select`). vote:
the most common answer won (strategy `vote`). agreement: every answer agreed, so no judge was called.
For every source but `judge`, `selected_member` says whose answer it is."""


class AnswerRef(Contract):
    """A panel answer that an analysis point refers to: the judge saw it as "Answer N", shuffled."""

    member: NonNegativeInt = Field(description="The member's index in the panel.")
    model: ModelName


class Stance(Contract):
    stance: str = Field(max_length=2_000)
    answers: list[AnswerRef] = Field(default_factory=list, description="The answers that hold it.")


class Contradiction(Contract):
    topic: str = Field(max_length=2_000)
    stances: list[Stance] = Field(default_factory=list)
    verdict: str | None = Field(
        default=None, max_length=2_000, description="Who is right, if the judge can tell."
    )


class Coverage(Contract):
    point: str = Field(max_length=2_000)
    answers: list[AnswerRef] = Field(default_factory=list, description="The answers that cover it.")


class Insight(Contract):
    insight: str = Field(max_length=2_000)
    answer: AnswerRef


class Analysis(Contract):
    """The judge's reading of the panel.

    The string lists are there for people: each point in words, with the answers it names written as
    "member I (model)". The `*_details` lists say the same for programs: who holds which stance, who
    covered a point, whose insight it is, as member indexes and models. Results from judges older than
    the details carry the string lists only, naming answers as the judge saw them ("Answer N")."""

    consensus: list[str] = Field(default_factory=list, description="What the answers agree on.")
    contradictions: list[str] = Field(default_factory=list, description="Where answers disagree.")
    partial_coverage: list[str] = Field(default_factory=list, description="Covered by some, not all.")
    unique_insights: list[str] = Field(default_factory=list, description="Valuable points only one made.")
    blind_spots: list[str] = Field(default_factory=list, description="What every answer missed.")
    contradiction_details: list[Contradiction] = Field(default_factory=list)
    partial_coverage_details: list[Coverage] = Field(default_factory=list)
    unique_insight_details: list[Insight] = Field(default_factory=list)


class MemberOutcome(Contract):
    index: NonNegativeInt
    model: ModelName
    status: CallStatus
    text: str | None = Field(default=None, max_length=MAX_ANSWER_CHARS)
    error: str | None = None
    error_status: int | None = Field(default=None, description="The provider's HTTP status, if it sent one.")
    usage: Usage = Usage()
    cost_usd: Usd = Field(default=Decimal(0), ge=0)
    latency_ms: NonNegativeFloat | None = None
    finished_at: Instant | None = None
    sources: list[Source] = Field(
        default_factory=list, max_length=MAX_SOURCES, description="What its tools returned; [n] in its text."
    )
    tool_calls: ToolCounts = Field(default_factory=dict)


class JudgeOutcome(Contract):
    model: ModelName
    status: CallStatus
    error: str | None = None
    analysis_error: str | None = Field(default=None, description="Why no typed analysis could be read.")
    usage: Usage = Usage()
    cost_usd: Usd = Field(default=Decimal(0), ge=0, description="Every judge call.")
    latency_ms: NonNegativeFloat = 0.0
    calls: NonNegativeInt = Field(default=0, description="Judge calls made: 0 when the panel agreed.")


class Timings(Contract):
    submitted_at: Instant
    dispatched_at: Instant | None = None
    released_at: Instant | None = None
    completed_at: Instant
    total_ms: NonNegativeFloat
    panel_ms: NonNegativeFloat | None = Field(default=None, description="Submission to release.")
    judge_ms: NonNegativeFloat | None = None


class UsageSummary(Contract):
    by_model: dict[str, Usage] = Field(default_factory=dict)
    total: Usage = Usage()


class CostSummary(Contract):
    """US dollars, exact: the members' and the judge's costs add up to `total_usd` to the last digit."""

    members_usd: Usd = Decimal(0)
    judge_usd: Usd = Decimal(0)
    total_usd: Usd = Decimal(0)
    by_model: dict[str, Usd] = Field(default_factory=dict)


class FusedResult(Contract):
    kind: Literal["result"] = "result"
    schema_version: SchemaVersion = SCHEMA_VERSION
    request_id: RequestId
    request_digest: RequestDigest | None = None
    status: ResultStatus
    release: ReleaseReason | None = None
    answer: str | None = Field(default=None, max_length=MAX_ANSWER_CHARS)
    answer_source: AnswerSource | None = None
    selected_member: NonNegativeInt | None = Field(
        default=None, description="The member whose answer the result is, unless the judge wrote it."
    )
    strategy: Strategy | None = Field(default=None, description="None from judges older than strategies.")
    analysis: Analysis | None = None
    members: list[MemberOutcome] = Field(default_factory=list)
    judge: JudgeOutcome | None = None
    usage: UsageSummary = UsageSummary()
    cost: CostSummary = CostSummary()
    error: str | None = Field(
        default=None, description="Why the result is not complete (rejected, failed or partial), in words."
    )
    failure_reason: FailureReason | None = Field(default=None, description="The same, as a code.")
    timings: Timings
    answered: NonNegativeInt = Field(default=0, description="Members that answered ok.")
    sources: list[Source] = Field(
        default_factory=list,
        max_length=MAX_SOURCES,
        description="The panel's sources, deduplicated: the answer cites them as [n], from 1.",
    )


class AnswerChunk(Contract):
    """A piece of the judge's final answer as it is written, for requests with `stream` set.

    Chunks of one request travel on its reply topic, keyed by request id, in `seq` order, ahead of the
    request's `FusedResult`, whose `answer` is authoritative (it may differ when the judge failed).
    A judge that takes a request over writes the answer again, from `seq` 0, under a new `stream_id`:
    a reader follows one `stream_id` at a time and never joins the chunks of two."""

    kind: Literal["chunk"] = "chunk"
    schema_version: SchemaVersion = SCHEMA_VERSION
    request_id: RequestId
    seq: NonNegativeInt
    delta: str = Field(max_length=MAX_ANSWER_CHARS)
    stream_id: str | None = Field(
        default=None,
        max_length=64,
        description="One judge's attempt at writing the answer; None from judges older than the field.",
    )


ProgressEvent = Literal[
    "panel.added", "panel.completed", "panel.failed", "analysis.in_progress", "analysis.completed"
]
"""panel.added: a member was asked (one per member, when the judge sees the plan). panel.completed /
panel.failed: a member answered, with its text, or failed, with its error. analysis.in_progress: the
judge began its work on the answers (its calls, or its vote). analysis.completed: the judge has its
analysis (null when it has none, as with `vote`) and writes the answer next. Neither comes when the
answers agree or the panel is of one. The result itself ends the fusion."""


class FusionProgress(Contract):
    """What a fusion is doing, for requests with `progress` set: on the request's reply topic, ahead
    of its result, from the judge (which reads the plan and every member's answer). Best effort: a
    judge that takes the request over sends them again, so a reader keys members by `member_index`."""

    kind: Literal["progress"] = "progress"
    schema_version: SchemaVersion = SCHEMA_VERSION
    request_id: RequestId
    event: ProgressEvent
    member_index: NonNegativeInt | None = None
    model: ModelName | None = None
    status: CallStatus | None = None
    text: str | None = Field(
        default=None, max_length=MAX_ANSWER_CHARS, description="panel.completed: the member's answer."
    )
    error: str | None = Field(default=None, max_length=2_000)
    latency_ms: NonNegativeFloat | None = None
    usage: Usage | None = Field(default=None, description="panel.completed/failed: the member's tokens.")
    cost_usd: Usd | None = Field(default=None, ge=0, description="panel.completed/failed: its cost.")
    analysis: Analysis | None = None
    at: Instant = Field(default_factory=utc_now)


class GatewayPresence(Contract):
    """A gateway's sign of life on its own reply topic (`fusion.replies.<instance>`), written when it
    connects and then every minute or so. A reply topic with no message newer than
    `FUSION_GATEWAY_REPLY_TOPIC_STALE_S` belongs to a gateway that is gone, and any gateway deletes
    it. Readers of reply topics skip it."""

    kind: Literal["presence"] = "presence"
    schema_version: SchemaVersion = SCHEMA_VERSION
    instance_id: str = Field(min_length=1, max_length=256)
    at: Instant = Field(default_factory=utc_now)


ReplyMessage = Annotated[FusedResult | AnswerChunk | FusionProgress | GatewayPresence, Discriminator("kind")]
"""Everything on a reply topic (`fusion.results` or a request's `reply_to`)."""
