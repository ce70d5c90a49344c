"""The activity chart: cost by model, bucketed by hour or day, as SVG a browser and a parser accept."""

import itertools
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from fusion.studio.charts import cost_series, cost_svg

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 3, 1, 9, 40, tzinfo=UTC)


def parsed(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def buckets(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "bucket"]


def test_calls_within_two_days_are_bucketed_by_the_hour_empty_hours_included() -> None:
    series = cost_series(
        [(T0 + timedelta(hours=2), "b", 7), (T0, "a", 5), (T0 + timedelta(minutes=10), "b", 1)]
    )

    assert series.step == "hour"
    assert [bucket.start.hour for bucket in series.buckets] == [9, 10, 11]
    assert [bucket.costs for bucket in series.buckets] == [{"a": 5, "b": 1}, {}, {"b": 7}]
    assert series.models == ["b", "a"]  # most expensive first
    assert series.total == 13


def test_a_longer_span_is_bucketed_by_the_day() -> None:
    series = cost_series([(T0, "a", 1), (T0 + timedelta(days=4, hours=20), "a", 2)])

    assert series.step == "day"
    assert [bucket.start for bucket in series.buckets] == [
        datetime(2026, 3, day, tzinfo=UTC) for day in (1, 2, 3, 4, 5, 6)
    ]


def test_the_svg_parses_with_a_group_per_bucket_and_a_rect_per_model_in_it() -> None:
    calls = [(T0, "alpha", 1_000), (T0, "beta", 3_000), (T0 + timedelta(hours=5), "alpha", 500)]
    series = cost_series(calls)

    root = parsed(cost_svg(series))

    assert root.tag == f"{SVG}svg"
    assert root.get("data-testid") == "cost-chart"
    groups = buckets(root)
    assert len(groups) == len(series.buckets) == 6
    first = [rect.get("data-model") for rect in groups[0].iter(f"{SVG}rect")]
    assert first == ["beta", "alpha"]
    assert groups[0].get("data-total-usd") == "0.000004"
    assert groups[1].find(f"{SVG}rect") is None
    tooltip = groups[0].find(f"{SVG}rect/{SVG}title")
    assert tooltip is not None
    assert tooltip.text == "beta, 03-01 09:00 UTC: $0.000003"


def test_the_legend_names_every_model_and_the_axes_are_labelled() -> None:
    series = cost_series([(T0, "alpha", 10), (T0, "beta", 20), (T0, "gamma", 30), (T0, "delta", 40)])

    root = parsed(cost_svg(series))

    legend = [g for g in root.iter(f"{SVG}g") if g.get("class") == "legend-item"]
    assert [g.get("data-model") for g in legend] == ["delta", "gamma", "beta", "alpha"]
    assert [g.findtext(f"{SVG}text") for g in legend] == ["delta", "gamma", "beta", "alpha"]
    y_axis = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "y-axis")
    labels = [text.text for text in y_axis.iter(f"{SVG}text")]
    assert labels[0] == "$0"
    assert all(label and label.startswith("$") for label in labels)
    x_axis = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "x-axis")
    assert "03-01 09:00" in [text.text for text in x_axis.iter(f"{SVG}text")]


def test_bars_are_stacked_to_their_bucket_total_within_the_plot() -> None:
    series = cost_series([(T0, "a", 300), (T0, "b", 700), (T0 + timedelta(hours=1), "a", 250)])

    root = parsed(cost_svg(series))

    for group in buckets(root):
        rects = list(group.iter(f"{SVG}rect"))
        tops = [float(rect.get("y", "0")) for rect in rects]
        heights = [float(rect.get("height", "0")) for rect in rects]
        assert all(top >= 0 and height > 0 for top, height in zip(tops, heights, strict=True))
        for lower, upper in itertools.pairwise(rects):  # each sits on the one below
            assert (
                abs(float(upper.get("y", "0")) + float(upper.get("height", "0")) - float(lower.get("y", "0")))
                < 0.1
            )


def test_model_names_are_escaped() -> None:
    hostile = '<script>alert("x")</script>&'
    svg = cost_svg(cost_series([(T0, hostile, 5)]))

    root = parsed(svg)
    assert "<script>" not in svg
    assert [g.get("data-model") for g in root.iter(f"{SVG}g") if g.get("class") == "legend-item"] == [hostile]


def test_no_calls_make_a_chart_that_says_so() -> None:
    root = parsed(cost_svg(cost_series([])))

    assert buckets(root) == []
    assert "No model calls" in "".join(root.itertext())
