"""The activity database: record requests and results once, read them back for the gateway and the
Studio. Synchronous SQLAlchemy 2; async callers run it in a thread (`asyncio.to_thread`).

Exactly once: a request's row is keyed by its id, a result fills it only while it has none, so a
redelivered request or result changes nothing. Two recorders racing on one id (a rebalance) meet the
primary key: the loser tries again and finds the row."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVarTuple

import structlog
from fusion_contracts import FusedResult, FusionRequest
from sqlalchemy import Engine, Select, create_engine, delete, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from fusion.activity.rows import call_rows, request_fields, result_fields
from fusion.activity.tables import Fusion, ModelCall

log = structlog.get_logger(__name__)

ATTEMPTS = 3
Ts = TypeVarTuple("Ts")


def utc(moment: datetime | None) -> datetime | None:
    """SQLite gives datetimes back without their zone; every one stored is UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ActivityFilter:
    since: datetime | None = None
    until: datetime | None = None
    preset: str | None = None
    model: str | None = None
    status: str | None = None
    key_name: str | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    cost_nanousd: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Facets:
    """The values each filter can take, for the activity page's menus."""

    presets: list[str]
    models: list[str]
    statuses: list[str]
    keys: list[str]


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        # WAL: the gateway and the Studio read while the recorder writes; foreign keys for cascades.
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


class ActivityStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    def reachable(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(select(1))
        except SQLAlchemyError:
            return False
        return True

    def migrate(self) -> None:
        """Brings the schema to the newest migration (from empty, or from any earlier one)."""
        from fusion.activity.migrations import upgrade

        upgrade(self.engine)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    # -- writing

    def record_request(self, request: FusionRequest) -> bool:
        """Records a request (its result may have come first); False when it was there already."""
        fields = request_fields(request)
        for attempt in range(ATTEMPTS):
            try:
                with self._session() as session:
                    row = session.get(Fusion, request.request_id, with_for_update=True)
                    if row is None:
                        session.add(Fusion(**fields, status="pending", recorded_at=datetime.now(UTC)))
                        return True
                    if row.request is not None:
                        return False
                    for name in ("key_name", "preset", "question", "request"):
                        setattr(row, name, fields[name])
                    row.strategy = row.strategy or fields["strategy"]
                    row.submitted_at = fields["submitted_at"]
                    return True
            except IntegrityError:
                if attempt == ATTEMPTS - 1:
                    raise
        return False

    def record_result(self, result: FusedResult, topic: str) -> bool:
        """Records a result once; False when the request had one already (a redelivery)."""
        fields = result_fields(result, topic)
        for attempt in range(ATTEMPTS):
            try:
                with self._session() as session:
                    row = session.get(Fusion, result.request_id, with_for_update=True)
                    if row is not None and row.result is not None:
                        return False
                    if row is None:
                        row = Fusion(
                            request_id=result.request_id,
                            submitted_at=result.timings.submitted_at,
                            recorded_at=datetime.now(UTC),
                            question="",
                        )
                        session.add(row)
                    for name, value in fields.items():
                        setattr(row, name, value)
                    row.calls = [ModelCall(**call) for call in call_rows(result)]
                    return True
            except IntegrityError:
                if attempt == ATTEMPTS - 1:
                    raise
        return False

    def purge(self, before: datetime) -> int:
        """Deletes what was submitted before `before`; returns how many requests went."""
        with self._session() as session:
            ids = select(Fusion.request_id).where(Fusion.submitted_at < before)
            session.execute(delete(ModelCall).where(ModelCall.request_id.in_(ids)))
            gone = session.execute(delete(Fusion).where(Fusion.submitted_at < before))
            return int(getattr(gone, "rowcount", 0) or 0)

    # -- reading

    def result(self, request_id: str) -> FusedResult | None:
        with self._session() as session:
            data = session.scalar(select(Fusion.result).where(Fusion.request_id == request_id))
        return FusedResult.model_validate(data) if data is not None else None

    def fusion(self, request_id: str) -> Fusion | None:
        """A request with its model calls."""
        with self._session() as session:
            query = select(Fusion).options(selectinload(Fusion.calls)).where(Fusion.request_id == request_id)
            return session.scalar(query)

    def fusions(self, where: ActivityFilter) -> list[Fusion]:
        """The requests that match, newest first, with their model calls."""
        query = _filtered(select(Fusion), where).options(selectinload(Fusion.calls))
        query = query.order_by(Fusion.submitted_at.desc()).limit(where.limit).offset(where.offset)
        with self._session() as session:
            return list(session.scalars(query))

    def totals(self, where: ActivityFilter) -> Totals:
        query = _filtered(
            select(
                func.count(Fusion.request_id),
                func.coalesce(func.sum(Fusion.cost_nanousd), 0),
                func.coalesce(func.sum(Fusion.input_tokens), 0),
                func.coalesce(func.sum(Fusion.output_tokens), 0),
            ),
            where,
        )
        with self._session() as session:
            count, cost, tokens_in, tokens_out = session.execute(query).one()
        return Totals(int(count), int(cost), int(tokens_in), int(tokens_out))

    def costs_by_model(self, where: ActivityFilter) -> list[tuple[datetime, str, int]]:
        """Each model call's (time, model, cost) of the matching requests, oldest first."""
        matching = _filtered(select(Fusion.request_id), where)
        query = (
            select(ModelCall.submitted_at, ModelCall.model, ModelCall.cost_nanousd)
            .where(ModelCall.request_id.in_(matching))
            .order_by(ModelCall.submitted_at)
        )
        with self._session() as session:
            return [(utc(at) or at, model, int(cost)) for at, model, cost in session.execute(query)]

    def facets(self) -> Facets:
        def values(column: Any) -> list[str]:
            return sorted(v for v in session.scalars(select(column).distinct()) if v)

        with self._session() as session:
            return Facets(
                presets=values(Fusion.preset),
                models=values(ModelCall.model),
                statuses=values(Fusion.status),
                keys=values(Fusion.key_name),
            )


def _filtered(query: Select[*Ts], where: ActivityFilter) -> Select[*Ts]:
    conditions: Sequence[Any] = [
        condition
        for condition in (
            Fusion.submitted_at >= where.since if where.since else None,
            Fusion.submitted_at < where.until if where.until else None,
            Fusion.preset == where.preset if where.preset else None,
            Fusion.status == where.status if where.status else None,
            Fusion.key_name == where.key_name if where.key_name else None,
            Fusion.request_id.in_(select(ModelCall.request_id).where(ModelCall.model == where.model))
            if where.model
            else None,
        )
        if condition is not None
    ]
    return query.where(*conditions)
