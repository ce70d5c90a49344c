"""Cost by model over time: the model calls bucketed by hour or day, and that as an inline SVG of
stacked bars. Pure: no I/O, no JavaScript (the page's Content-Security-Policy allows none inline), so
colours are SVG attributes, not styles, and tooltips are `<title>` elements."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Literal

from fusion.activity.rows import usd
from fusion.studio.money import exact_usd, short_usd

__all__ = ["Bucket", "CostSeries", "cost_series", "cost_svg"]

Step = Literal["hour", "day"]
HOURLY_UP_TO = timedelta(hours=48)
"""A span up to this long is shown by the hour, a longer one by the day."""
STEPS: dict[Step, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
PALETTE = (
    *("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"),
    *("#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"),
)

WIDTH = 760
PLOT_TOP = 12
PLOT_HEIGHT = 220
LEFT = 100
RIGHT = 12
AXIS_LABELS_HEIGHT = 34
LEGEND_ROW = 20
LEGEND_COLUMNS = 3
X_LABELS = 8
MAX_BAR_WIDTH = 48.0
Y_TICKS = 4


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    costs: dict[str, int]
    """Nano-dollars by model; models without calls in the bucket are absent."""

    @property
    def total(self) -> int:
        return sum(self.costs.values())


@dataclass(frozen=True, slots=True)
class CostSeries:
    step: Step
    models: list[str]
    """Most expensive first: the legend's order and the bars' from the bottom."""
    buckets: list[Bucket]
    """Every bucket from the first call's to the last's, empty ones included."""

    @property
    def total(self) -> int:
        return sum(bucket.total for bucket in self.buckets)


def _floor(moment: datetime, step: Step) -> datetime:
    hour = moment.replace(minute=0, second=0, microsecond=0)
    return hour if step == "hour" else hour.replace(hour=0)


def cost_series(calls: Iterable[tuple[datetime, str, int]]) -> CostSeries:
    """`calls` as (time, model, nano-dollars), any order, bucketed by the hour when they span up to
    two days, else by the day."""
    points = sorted(calls)
    if not points:
        return CostSeries("hour", [], [])
    step: Step = "hour" if points[-1][0] - points[0][0] <= HOURLY_UP_TO else "day"
    first, last = _floor(points[0][0], step), _floor(points[-1][0], step)
    starts = [first]
    while starts[-1] < last:
        starts.append(starts[-1] + STEPS[step])
    costs: dict[datetime, dict[str, int]] = {start: {} for start in starts}
    by_model: dict[str, int] = {}
    for moment, model, nano in points:
        bucket = costs[_floor(moment, step)]
        bucket[model] = bucket.get(model, 0) + nano
        by_model[model] = by_model.get(model, 0) + nano
    models = sorted(by_model, key=lambda model: (-by_model[model], model))
    return CostSeries(step, models, [Bucket(start, costs[start]) for start in starts])


def _label(moment: datetime, step: Step) -> str:
    return moment.strftime("%m-%d %H:00" if step == "hour" else "%Y-%m-%d")


def _ceiling(nano: int) -> int:
    """A round top for the y axis, at or above `nano` (1, 2 or 5 times a power of ten per tick)."""
    tick = max(1, -(-nano // Y_TICKS))
    power = 1
    while power * 10 <= tick:
        power *= 10
    return next(factor * power * Y_TICKS for factor in (1, 2, 5, 10) if factor * power >= tick)


def _attrs(**values: object) -> str:
    return " ".join(f'{name.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for name, v in values.items())


def cost_svg(series: CostSeries, title: str = "Cost by model over time") -> str:
    """The series as an SVG document (for inlining in HTML), with axis labels and a legend; one
    `<g class="bucket">` per bucket holding a `<rect>` per model, each with its `<title>`."""
    legend_rows = -(-len(series.models) // LEGEND_COLUMNS)
    height = PLOT_TOP + PLOT_HEIGHT + AXIS_LABELS_HEIGHT + legend_rows * LEGEND_ROW + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" {_attrs(viewBox=f"0 0 {WIDTH} {height}")} '
        f'width="100%" role="img" aria-label="{escape(title)}" data-testid="cost-chart" '
        f'data-step="{series.step}" class="cost-chart">',
        f"<title>{escape(title)}</title>",
    ]
    if not series.buckets:
        parts.append(f'<text x="{WIDTH // 2}" y="{PLOT_TOP + PLOT_HEIGHT // 2}" text-anchor="middle">')
        parts.append("No model calls in this range.</text></svg>")
        return "".join(parts)
    colours = {model: PALETTE[i % len(PALETTE)] for i, model in enumerate(series.models)}
    top = _ceiling(max(bucket.total for bucket in series.buckets))
    parts += _y_axis(top)
    parts += _bars(series, colours, top)
    parts += _x_axis(series)
    parts += _legend(series.models, colours, PLOT_TOP + PLOT_HEIGHT + AXIS_LABELS_HEIGHT)
    parts.append("</svg>")
    return "".join(parts)


def _y(nano: int, top: int) -> float:
    return PLOT_TOP + PLOT_HEIGHT - PLOT_HEIGHT * nano / top


def _y_axis(top: int) -> list[str]:
    parts = ['<g class="y-axis">']
    for tick in range(Y_TICKS + 1):
        nano = top * tick // Y_TICKS
        y = f"{_y(nano, top):.1f}"
        parts.append(f'<line {_attrs(x1=LEFT, x2=WIDTH - RIGHT, y1=y, y2=y)} stroke="#ddd"/>')
        label = escape(short_usd(usd(nano)))
        parts.append(f'<text {_attrs(x=LEFT - 6, y=y)} text-anchor="end" dy="0.35em">{label}</text>')
    parts.append("</g>")
    return parts


def _bars(series: CostSeries, colours: dict[str, str], top: int) -> list[str]:
    slot = (WIDTH - LEFT - RIGHT) / len(series.buckets)
    width = min(MAX_BAR_WIDTH, max(1.0, slot * 0.8))
    parts = []
    for index, bucket in enumerate(series.buckets):
        label = _label(bucket.start, series.step)
        x = f"{LEFT + index * slot + (slot - width) / 2:.1f}"
        parts.append(
            f'<g class="bucket" {_attrs(data_start=bucket.start.isoformat())} '
            f"{_attrs(data_total_usd=exact_usd(bucket.total))}>"
            f"<title>{escape(label)} UTC: {escape(_usd_text(bucket.total))}</title>"
        )
        base = 0
        for model in series.models:
            nano = bucket.costs.get(model, 0)
            if not nano:
                continue
            y_top, y_base = _y(base + nano, top), _y(base, top)
            base += nano
            rect = _attrs(x=x, y=f"{y_top:.1f}", width=f"{width:.1f}", height=f"{y_base - y_top:.2f}")
            parts.append(
                f'<rect {rect} fill="{colours[model]}" {_attrs(data_model=model)}>'
                f"<title>{escape(model)}, {escape(label)} UTC: {escape(_usd_text(nano))}</title></rect>"
            )
        parts.append("</g>")
    return parts


def _usd_text(nano: int) -> str:
    return f"${exact_usd(nano)}"


def _x_axis(series: CostSeries) -> list[str]:
    count = len(series.buckets)
    slot = (WIDTH - LEFT - RIGHT) / count
    every = max(1, -(-count // X_LABELS))
    y = PLOT_TOP + PLOT_HEIGHT
    parts = [f'<g class="x-axis"><line {_attrs(x1=LEFT, x2=WIDTH - RIGHT, y1=y, y2=y)} stroke="#888"/>']
    for index in range(0, count, every):
        x = f"{LEFT + (index + 0.5) * slot:.1f}"
        label = escape(_label(series.buckets[index].start, series.step))
        parts.append(f'<text {_attrs(x=x, y=y + 16)} text-anchor="middle">{label}</text>')
    unit = "hour" if series.step == "hour" else "day"
    parts.append(f'<text {_attrs(x=WIDTH - RIGHT, y=y + 30)} text-anchor="end">per {unit}, UTC</text></g>')
    return parts


def _legend(models: list[str], colours: dict[str, str], y0: int) -> list[str]:
    column = (WIDTH - LEFT - RIGHT) / LEGEND_COLUMNS
    parts = ['<g class="legend">']
    for index, model in enumerate(models):
        x = LEFT + (index % LEGEND_COLUMNS) * column
        y = y0 + (index // LEGEND_COLUMNS) * LEGEND_ROW
        parts.append(
            f'<g class="legend-item" {_attrs(data_model=model)}>'
            f'<rect {_attrs(x=f"{x:.1f}", y=y, width=12, height=12)} fill="{colours[model]}"/>'
            f"<text {_attrs(x=f'{x + 18:.1f}', y=y + 10)}>{escape(model)}</text></g>"
        )
    parts.append("</g>")
    return parts
