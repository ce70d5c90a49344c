"""From a request to a plan and its tasks: pure, no I/O."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from fusion_contracts import (
    FailureReason,
    FusedResult,
    FusionRequest,
    ModelSpec,
    PanelPlan,
    PanelTask,
    Strategy,
    Timings,
    ToolSpec,
)

from fusion.catalog import Catalog, CatalogError
from fusion.costs import estimate


@dataclass(frozen=True, slots=True)
class Dispatch:
    plan: PanelPlan
    tasks: list[PanelTask]


@dataclass(frozen=True, slots=True)
class Rejection:
    error: str
    reason: FailureReason = "invalid_request"


@dataclass(frozen=True, slots=True)
class _Panel:
    members: list[ModelSpec]
    judge: ModelSpec
    quorum: int | None
    strategy: Strategy
    tools: list[ToolSpec]
    max_tool_calls: int


def _resolve_panel(request: FusionRequest, catalog: Catalog) -> _Panel:
    """The request's panel, judge, strategy and tools, each its own or else its preset's (a custom
    panel's preset is the catalog's default, but its tools are only those the request names)."""
    if request.panel is not None:
        preset = catalog.preset(catalog.default_preset)
        members = request.panel
        quorum = None
    else:
        preset = catalog.preset(request.preset or catalog.default_preset)
        members = preset.panel
        quorum = preset.quorum
    judge = request.judge or preset.judge
    for spec in [*members, judge]:
        catalog.model(spec.model)
    preset_tools = preset.tools if request.panel is None else []
    return _Panel(
        members,
        judge,
        quorum,
        request.strategy or preset.strategy,
        request.tools if request.tools is not None else preset_tools,
        request.max_tool_calls or preset.max_tool_calls,
    )


def plan_request(
    request: FusionRequest, catalog: Catalog, now: datetime, digest: str | None = None
) -> Dispatch | Rejection:
    """The plan and tasks of a request (`digest`: its `request_digest`), or why it is refused."""
    try:
        panel = _resolve_panel(request, catalog)
    except CatalogError as error:
        return Rejection(str(error))

    members, judge = panel.members, panel.judge
    if problem := catalog.tools_problem(panel.tools):
        return Rejection(f"tools: {problem}")
    for spec in [*members, judge]:
        model = catalog.model(spec.model)
        if env_var := catalog.providers[model.provider].missing_key():
            return Rejection(
                f"model {spec.model!r} needs an API key: set {env_var} (provider {model.provider!r})"
            )
    budget = request.policy.max_cost_usd
    if budget is not None:
        estimated = estimate(request.messages, members, judge, catalog)
        if estimated > budget:
            return Rejection(
                f"estimated cost ${estimated:.6f} is over max_cost_usd ${budget}; no model was called",
                "budget_exceeded",
            )

    quorum = request.policy.quorum or panel.quorum or len(members)
    if quorum > len(members):
        return Rejection(f"quorum {quorum} is larger than the panel of {len(members)}")

    # The deadline runs from submission; a client clock ahead of ours must not extend it.
    start = min(request.submitted_at, now)
    deadline_at = start + timedelta(seconds=request.policy.deadline_s)
    panel_deadline_at = deadline_at - timedelta(
        seconds=request.policy.deadline_s * request.policy.judge_share
    )
    if panel_deadline_at <= now:
        return Rejection(
            f"the request waited past its panel deadline ({panel_deadline_at.isoformat()})", "deadline"
        )

    plan = PanelPlan(
        request_id=request.request_id,
        request_digest=digest,
        messages=request.messages,
        members=members,
        judge=judge,
        quorum=quorum,
        grace_s=request.policy.grace_s,
        panel_deadline_at=panel_deadline_at,
        deadline_at=deadline_at,
        submitted_at=request.submitted_at,
        dispatched_at=now,
        reply_to=request.reply_to,
        stream=request.stream,
        progress=request.progress,
        strategy=panel.strategy,
        analysis_temperature=request.analysis_temperature or 0.0,
    )
    tasks = [
        PanelTask(
            request_id=request.request_id,
            request_digest=digest,
            member_index=index,
            member=member,
            messages=request.messages,
            deadline_at=panel_deadline_at,
            dispatched_at=now,
            tools=panel.tools,
            max_tool_calls=panel.max_tool_calls,
        )
        for index, member in enumerate(members)
    ]
    return Dispatch(plan, tasks)


def rejected_result(
    request_id: str,
    submitted_at: datetime,
    error: str,
    now: datetime,
    reason: FailureReason = "invalid_request",
) -> FusedResult:
    return FusedResult(
        request_id=request_id,
        status="rejected",
        error=error,
        failure_reason=reason,
        timings=Timings(
            submitted_at=submitted_at,
            completed_at=now,
            total_ms=max((now - submitted_at).total_seconds() * 1000, 0.0),
        ),
    )
