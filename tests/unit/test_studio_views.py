"""Activity rows shaped for the Studio: exact money, CSV lines that add up, filters from a query."""

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fusion.activity.rows import call_rows, nanousd, request_fields, result_fields
from fusion.activity.store import Totals
from fusion.activity.tables import Fusion, ModelCall
from fusion.studio.filters import FilterError, parse_query
from fusion.studio.money import display_usd, exact_usd
from fusion.studio.views import CSV_HEADER, csv_rows, csv_text, detail_of, summary_of, totals_json
from fusion_contracts import FusedResult, FusionRequest, ModelSpec

from tests.support.activity import JUDGE_COST, MEMBER_COSTS, a_request, a_result


def row_of(request: FusionRequest, result: FusedResult | None = None) -> Fusion:
    """The row the activity recorder would write, built in memory."""
    fields = {**request_fields(request), "status": "pending", "recorded_at": datetime.now(UTC)}
    if result is not None:
        fields |= result_fields(result, "fusion.results")
    row = Fusion(**fields)
    row.calls = [ModelCall(**call) for call in call_rows(result)] if result is not None else []
    return row


def recorded(question: str = "Why?", key: str = "team-a") -> Fusion:
    request = a_request(question, key=key)
    return row_of(request, a_result(request))


# --- money


@pytest.mark.parametrize(
    ("nano", "exact", "shown"),
    [
        (0, "0", "$0.00"),
        (1, "0.000000001", "$0.000000001"),
        (788_277, "0.000788277", "$0.000788277"),
        (10_000_000, "0.01", "$0.01"),
        (1_500_000_000, "1.5", "$1.50"),
        (100_000_000_000, "100", "$100.00"),
    ],
)
def test_dollars_keep_every_digit_down_to_the_nano(nano: int, exact: str, shown: str) -> None:
    assert exact_usd(nano) == exact
    assert display_usd(nano) == shown


# --- rows


def test_a_summary_lists_the_calls_and_their_costs_add_up_to_the_total() -> None:
    summary = summary_of(recorded())

    assert [(call.role, call.model) for call in summary.calls] == [
        ("member", "stand-in/a"),
        ("member", "stand-in/b"),
        ("judge", "stand-in/judge"),
    ]
    assert [Decimal(call.cost_usd) for call in summary.calls] == [*MEMBER_COSTS, JUDGE_COST]
    assert sum(Decimal(call.cost_usd) for call in summary.calls) == Decimal(summary.cost_usd)
    assert summary.unattributed_nanousd == 0
    assert summary.models == ["stand-in/a", "stand-in/b", "stand-in/judge"]


def test_a_total_rounded_apart_from_its_calls_shows_the_difference_as_its_own_line() -> None:
    request = a_request()
    result = a_result(request)
    odd = Decimal("0.0000000004")  # under a nano-dollar on each member: rounds away there, not in the sum
    members = [m.model_copy(update={"cost_usd": m.cost_usd + odd}) for m in result.members]
    total = result.cost.total_usd + 2 * odd + odd
    result = result.model_copy(
        update={"members": members, "cost": result.cost.model_copy(update={"total_usd": total})}
    )

    summary = summary_of(row_of(request, result))

    assert summary.calls_nanousd + summary.unattributed_nanousd == summary.cost_nanousd == nanousd(total)
    assert summary.unattributed_nanousd == 1


def test_a_pending_request_names_the_panel_it_asked_for() -> None:
    panel = [ModelSpec(model="alpha"), ModelSpec(model="beta")]
    request = a_request().model_copy(update={"preset": None, "panel": panel})

    summary = summary_of(row_of(request))

    assert summary.status == "pending"
    assert summary.calls == []
    assert summary.models == ["alpha", "beta"]
    assert summary.unattributed_nanousd == 0


def test_a_detail_reads_back_the_request_and_the_result() -> None:
    request = a_request("What is 2+2?")
    detail = detail_of(row_of(request, a_result(request, answer="**4**")))

    assert detail.request is not None
    assert detail.request.messages[0].content == "What is 2+2?"
    assert detail.answer == "**4**"
    assert detail.timings is not None
    assert detail.timings.total_ms == 2000.0
    data = detail.as_json()
    assert data["request"]["messages"][0]["content"] == "What is 2+2?"
    assert "reply_to" not in data["request"]
    assert [call["text"] for call in data["calls"]] == ["answer 0", "answer 1", None]


def test_a_detail_whose_json_no_longer_reads_still_shows_its_columns() -> None:
    row = recorded()
    row.result = {"schema_version": 99}
    row.request = {"nonsense": True}

    detail = detail_of(row)

    assert detail.request is None
    assert detail.result is None
    assert detail.summary.cost_usd == exact_usd(row.cost_nanousd)


# --- CSV


def test_csv_has_one_line_per_model_call_and_they_sum_to_the_totals() -> None:
    rows = [recorded("one"), recorded("two", key="team-b")]
    totals = Totals(
        requests=2,
        cost_nanousd=sum(row.cost_nanousd for row in rows),
        input_tokens=sum(row.input_tokens for row in rows),
        output_tokens=sum(row.output_tokens for row in rows),
    )

    lines = list(csv.DictReader(io.StringIO(csv_text(rows))))

    assert len(lines) == 6
    assert list(lines[0]) == list(CSV_HEADER)
    assert sum(Decimal(line["cost_usd"]) for line in lines) == Decimal(totals_json(totals)["cost_usd"])
    assert sum(int(line["input_tokens"]) for line in lines) == totals.input_tokens
    assert sum(int(line["output_tokens"]) for line in lines) == totals.output_tokens
    assert [line["role"] for line in lines[:3]] == ["member", "member", "judge"]
    assert {line["key_name"] for line in lines} == {"team-a", "team-b"}


def test_csv_cells_that_a_spreadsheet_would_run_are_defused() -> None:
    row = recorded(key='=HYPERLINK("http://evil")')

    lines = list(csv_rows([row]))

    assert all(line[2].startswith("'=") for line in lines)


# --- filters


def test_dates_filter_whole_days_in_utc() -> None:
    query = parse_query({"since": "2026-03-01", "until": "2026-03-02", "model": " alpha ", "status": ""})

    assert query.where.since == datetime(2026, 3, 1, tzinfo=UTC)
    assert query.where.until == datetime(2026, 3, 3, tzinfo=UTC)  # until the end of the 2nd
    assert query.where.model == "alpha"
    assert query.where.status is None
    assert query.values == {"since": "2026-03-01", "until": "2026-03-02", "model": "alpha"}


def test_times_and_keys_and_paging() -> None:
    query = parse_query(
        {"since": "2026-03-01T10:00:00+02:00", "key": "team-a", "limit": "20", "offset": "40"}
    )

    assert query.where.since == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert query.where.key_name == "team-a"
    assert (query.where.limit, query.where.offset) == (20, 40)
    assert query.link(offset=60) == "since=2026-03-01T10%3A00%3A00%2B02%3A00&key=team-a&limit=20&offset=60"
    assert query.link(offset=None, limit=None) == "since=2026-03-01T10%3A00%3A00%2B02%3A00&key=team-a"


@pytest.mark.parametrize(
    "params",
    [{"since": "yesterday"}, {"until": "2026-13-01"}, {"limit": "0"}, {"limit": "x"}, {"offset": "-1"}],
)
def test_unreadable_filters_are_refused_by_name(params: dict[str, str]) -> None:
    with pytest.raises(FilterError, match=next(iter(params))):
        parse_query(params)


def test_an_empty_query_is_no_filter() -> None:
    where = parse_query({}).where

    assert (where.since, where.until, where.preset, where.model, where.status, where.key_name) == (None,) * 6
