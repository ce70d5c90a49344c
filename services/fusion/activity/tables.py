"""The activity database's tables (SQLAlchemy 2 declarative). Changes go through a migration in
`fusion/activity/migrations/versions`.

Costs are whole nano-dollars (`BigInteger`): sums are exact on SQLite and PostgreSQL alike, so the
per-model costs of a request add up to its total to the last digit."""

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Stored in UTC, read back with its zone (SQLite keeps none)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime()}


class Fusion(Base):
    """One fused request: what was asked, how, by whom, and its result once it came."""

    __tablename__ = "fusions"

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    submitted_at: Mapped[datetime] = mapped_column(index=True)
    completed_at: Mapped[datetime | None] = mapped_column()
    recorded_at: Mapped[datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), index=True)
    """`pending` until the result comes, then the result's status."""
    key_name: Mapped[str | None] = mapped_column(String(128), index=True)
    preset: Mapped[str | None] = mapped_column(String(128), index=True)
    strategy: Mapped[str | None] = mapped_column(String(32))
    question: Mapped[str] = mapped_column(Text, default="")
    """The last user message, for lists."""
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The `FusionRequest` as published (messages, panel, judge, policy, tools)."""
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The `FusedResult` as published."""
    answer: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    cost_nanousd: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_ms: Mapped[float | None] = mapped_column(Float)
    result_topic: Mapped[str | None] = mapped_column(String(255))

    calls: Mapped[list["ModelCall"]] = relationship(
        back_populates="fusion", cascade="all, delete-orphan", order_by="ModelCall.position"
    )


class ModelCall(Base):
    """One model's part in a request: a panel member's answer, or the judge's calls together."""

    __tablename__ = "model_calls"

    request_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("fusions.request_id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    """The member's index; the judge comes last, after every member."""
    role: Mapped[str] = mapped_column(String(8))
    """`member` or `judge`."""
    model: Mapped[str] = mapped_column(String(256), index=True)
    status: Mapped[str] = mapped_column(String(16))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_nanousd: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    text: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column()
    """The request's, repeated here so cost over time needs no join."""

    fusion: Mapped[Fusion] = relationship(back_populates="calls")


Index("ix_model_calls_model_time", ModelCall.model, ModelCall.submitted_at)
