"""A `FusedResult` for a person: the answer, the analysis, each member's outcome."""

from fusion_contracts import FusedResult
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

_STATUS_STYLE = {"complete": "green", "partial": "yellow", "failed": "red", "rejected": "red"}
_SECTIONS = (
    ("consensus", "Consensus"),
    ("contradictions", "Contradictions"),
    ("partial_coverage", "Partial coverage"),
    ("unique_insights", "Unique insights"),
    ("blind_spots", "Blind spots"),
)


_SOURCE = {
    "best_member": "the most central panel answer",
    "member": "the only member's",
    "selected": "chosen by the judge",
    "vote": "the most common",
    "agreement": "every member agreed, no judge call",
}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:.2f} s"


def render_result(result: FusedResult, console: Console) -> None:
    style = _STATUS_STYLE[result.status]
    heading = f"[{style}]{result.status}[/]"
    if result.release:
        heading += f" · released on {result.release}"
    if result.strategy:
        heading += f" · {result.strategy}"
    if result.answer_source and result.answer_source != "judge":
        heading += f" · answer: {_SOURCE[result.answer_source]}"
        if result.selected_member is not None:
            heading += f" (member {result.selected_member})"
    console.print(heading)
    if result.error:
        reason = f"{result.failure_reason}: " if result.failure_reason else ""
        console.print(f"[red]{reason}{result.error}[/]")
    if result.answer:
        console.print(Panel(result.answer, title="Fused answer", border_style=style))
    _render_analysis(result, console)
    if result.members:
        console.print(_calls_table(result))
    total = result.usage.total
    console.print(
        f"tokens {total.input_tokens} in / {total.output_tokens} out · cost ${result.cost.total_usd}"
        f" · total {_ms(result.timings.total_ms)} · request {result.request_id}"
    )


def _render_analysis(result: FusedResult, console: Console) -> None:
    if result.analysis:
        for field, title in _SECTIONS:
            points = getattr(result.analysis, field)
            if points:
                console.print(f"[bold]{title}[/]")
                for point in points:
                    console.print(f"  • {point}")
    elif result.judge and result.judge.analysis_error:
        console.print(f"[dim]no analysis: {result.judge.analysis_error}[/]")


def _calls_table(result: FusedResult) -> Table:
    table = Table(title="Calls")
    for column in ("#", "model", "status", "tokens in", "tokens out", "cost $", "latency", "tools", "note"):
        table.add_column(column)
    for member in result.members:
        table.add_row(
            str(member.index),
            member.model,
            member.status,
            str(member.usage.input_tokens),
            str(member.usage.output_tokens),
            str(member.cost_usd),
            _ms(member.latency_ms),
            ", ".join(f"{name} {count}" for name, count in member.tool_calls.items()),
            (member.error or "")[:80],
        )
    if result.judge:
        judge = result.judge
        table.add_row(
            "judge",
            judge.model,
            judge.status,
            str(judge.usage.input_tokens),
            str(judge.usage.output_tokens),
            str(judge.cost_usd),
            _ms(judge.latency_ms),
            "",
            (judge.error or "")[:80],
        )
    return table
