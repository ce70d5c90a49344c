"""Runs the migrations on the engine Fusion hands over, or on `FUSION_DATABASE_URL`'s."""

from alembic import context
from sqlalchemy import Engine

from fusion.activity.tables import Base

engine: Engine | None = context.config.attributes.get("engine")
if engine is None:
    from fusion.activity.store import make_engine
    from fusion.settings import Settings

    engine = make_engine(Settings().activity_database_url())

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
