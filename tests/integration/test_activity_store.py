"""The activity database on SQLite and on a real PostgreSQL (a throwaway cluster started by the tests):
migrations from empty, each request recorded once however often it is delivered, filters, costs and
retention."""

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fusion.activity.migrations import downgrade
from fusion.activity.rows import usd
from fusion.activity.store import ActivityFilter, ActivityStore
from fusion.activity.tables import Base
from sqlalchemy import inspect, text

from tests.support.activity import JUDGE_COST, MEMBER_COSTS, a_request, a_result, days_ago


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ActivityStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'activity.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    activity = ActivityStore(url)
    with activity.engine.begin() as connection:  # a clean database for each test
        connection.execute(text("DROP TABLE IF EXISTS model_calls"))
        connection.execute(text("DROP TABLE IF EXISTS fusions"))
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    activity.migrate()
    yield activity
    activity.close()


def test_the_migrations_build_the_schema_of_the_models_from_empty(store: ActivityStore) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"fusions", "model_calls", "alembic_version"} <= tables
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_downgrade_to_empty_and_up_again(store: ActivityStore) -> None:
    downgrade(store.engine, "base")
    assert "fusions" not in inspect(store.engine).get_table_names()
    store.migrate()
    assert store.record_request(a_request())


def test_a_request_and_its_result_redelivered_are_recorded_once(store: ActivityStore) -> None:
    request = a_request()
    result = a_result(request)
    assert store.record_request(request) is True
    assert store.record_request(request) is False
    assert store.record_result(result, "fusion.results") is True
    assert store.record_result(result, "fusion.results") is False
    assert store.record_result(a_result(request, answer="another"), "fusion.replies.x") is False

    assert store.totals(ActivityFilter()).requests == 1
    row = store.fusion(request.request_id)
    assert row is not None
    assert (row.status, row.answer, row.key_name, row.preset) == (
        "complete",
        "Rayleigh scattering.",
        "team-a",
        "budget",
    )
    assert row.question == "Why is the sky blue?"
    assert [(c.role, c.model) for c in row.calls] == [
        ("member", "stand-in/a"),
        ("member", "stand-in/b"),
        ("judge", "stand-in/judge"),
    ]
    assert store.result(request.request_id) == result


def test_a_result_before_its_request_is_completed_by_the_request(store: ActivityStore) -> None:
    request = a_request(key="team-b")
    assert store.record_result(a_result(request), "fusion.replies.g") is True
    assert store.record_request(request) is True
    row = store.fusion(request.request_id)
    assert row is not None
    assert (row.status, row.key_name, row.question, row.result_topic) == (
        "complete",
        "team-b",
        "Why is the sky blue?",
        "fusion.replies.g",
    )
    assert store.record_request(request) is False


def test_a_request_without_result_is_pending(store: ActivityStore) -> None:
    request = a_request()
    store.record_request(request)
    row = store.fusion(request.request_id)
    assert row is not None
    assert (row.status, row.result) == ("pending", None)
    assert store.result(request.request_id) is None


def test_per_model_costs_add_up_to_the_total_to_the_last_digit(store: ActivityStore) -> None:
    for _ in range(3):
        request = a_request()
        store.record_request(request)
        store.record_result(a_result(request), "fusion.results")
    totals = store.totals(ActivityFilter())
    costs = store.costs_by_model(ActivityFilter())
    assert len(costs) == 9
    assert sum(cost for _, _, cost in costs) == totals.cost_nanousd
    assert usd(totals.cost_nanousd) == 3 * (sum(MEMBER_COSTS) + JUDGE_COST)
    assert usd(totals.cost_nanousd) == Decimal("0.002364831")


def test_filters(store: ActivityStore) -> None:
    old = a_request("old one", key="team-b", submitted_at=days_ago(3))
    failed = a_request("failed one", key="team-a")
    for request, status in ((old, "complete"), (failed, "failed")):
        store.record_request(request)
        store.record_result(a_result(request, status=status), "fusion.results")
    pending = a_request("pending one", key="team-a")
    store.record_request(pending)

    def ids(**where: object) -> list[str]:
        return [row.request_id for row in store.fusions(ActivityFilter(**where))]  # type: ignore[arg-type]

    assert ids() == [pending.request_id, failed.request_id, old.request_id]  # newest first
    assert ids(key_name="team-b") == [old.request_id]
    assert ids(status="failed") == [failed.request_id]
    assert ids(status="pending") == [pending.request_id]
    assert ids(since=days_ago(1)) == [pending.request_id, failed.request_id]
    assert ids(until=days_ago(1)) == [old.request_id]
    assert ids(model="stand-in/judge") == [failed.request_id, old.request_id]
    assert ids(model="nobody/none") == []
    assert ids(preset="budget", limit=1, offset=1) == [failed.request_id]
    facets = store.facets()
    assert facets.keys == ["team-a", "team-b"]
    assert facets.statuses == ["complete", "failed", "pending"]
    assert "stand-in/judge" in facets.models


def test_retention_deletes_old_requests_and_their_calls(store: ActivityStore) -> None:
    old, new = a_request(submitted_at=days_ago(40)), a_request()
    for request in (old, new):
        store.record_request(request)
        store.record_result(a_result(request), "fusion.results")
    assert store.purge(days_ago(30)) == 1
    assert store.fusion(old.request_id) is None
    assert store.fusion(new.request_id) is not None
    assert len(store.costs_by_model(ActivityFilter())) == 3
    assert store.purge(days_ago(30) - timedelta(days=1)) == 0


def test_text_postgresql_cannot_hold_is_recorded_without_it(store: ActivityStore) -> None:
    """A model's output with NUL characters: PostgreSQL's text refuses them."""
    request = a_request("a \x00 question")
    store.record_request(request)
    store.record_result(a_result(request, answer="an \x00 answer <script>x</script>"), "fusion.results")
    row = store.fusion(request.request_id)
    assert row is not None
    assert row.question == "a  question"
    assert row.answer == "an  answer <script>x</script>"
