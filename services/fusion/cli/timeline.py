"""`fusion ask --timeline`: where the time of one fused request went, as a waterfall."""

from dataclasses import dataclass
from datetime import datetime

from fusion_contracts import FusedResult
from rich.console import Console
from rich.table import Table
from rich.text import Text

WIDTH = 48


@dataclass(frozen=True)
class Span:
    label: str
    start_s: float
    end_s: float
    style: str


def spans(result: FusedResult) -> list[Span]:
    """Seconds from submission: queueing until dispatch, each member's call, the wait, the judge."""
    timings = result.timings
    origin = timings.submitted_at

    def at(instant: datetime) -> float:
        return max((instant - origin).total_seconds(), 0.0)

    rows = []
    dispatched = at(timings.dispatched_at) if timings.dispatched_at else 0.0
    rows.append(Span("queue → dispatcher", 0.0, dispatched, "dim"))
    for member in result.members:
        if member.finished_at is None or member.latency_ms is None:
            end = at(timings.released_at) if timings.released_at else dispatched
            rows.append(Span(f"member {member.index} {member.model} (no answer)", dispatched, end, "red"))
            continue
        end = at(member.finished_at)
        start = max(end - member.latency_ms / 1000, dispatched)
        if start > dispatched:
            rows.append(Span(f"  queue {member.index}", dispatched, start, "dim"))
        style = "green" if member.status == "ok" else "red"
        rows.append(Span(f"member {member.index} {member.model} ({member.status})", start, end, style))
    if timings.released_at is not None:
        released = at(timings.released_at)
        rows.append(
            Span(
                f"judge {result.judge.model if result.judge else ''}",
                released,
                at(timings.completed_at),
                "cyan",
            )
        )
    return rows


def render_timeline(result: FusedResult, console: Console) -> None:
    rows = spans(result)
    total = max((row.end_s for row in rows), default=0.0) or 1.0
    table = Table(title=f"Timeline (total {result.timings.total_ms / 1000:.2f} s)", show_edge=False)
    table.add_column("step")
    table.add_column("start", justify="right")
    table.add_column("took", justify="right")
    table.add_column("", no_wrap=True)
    for row in rows:
        left = round(row.start_s / total * WIDTH)
        length = max(round((row.end_s - row.start_s) / total * WIDTH), 1)
        bar = Text(" " * left) + Text("█" * length, style=row.style)
        table.add_row(row.label, f"{row.start_s:.2f}s", f"{row.end_s - row.start_s:.2f}s", bar)
    console.print(table)
