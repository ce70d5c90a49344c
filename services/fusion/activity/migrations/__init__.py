"""Alembic migrations of the activity database, run from code (`fusion serve activity` at start, or
`fusion activity migrate`); `alembic` itself works too, from this folder's alembic.ini."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

HERE = Path(__file__).parent


def config(engine: Engine | None = None) -> Config:
    settings = Config(str(HERE / "alembic.ini"))
    settings.set_main_option("script_location", str(HERE))
    settings.attributes["engine"] = engine
    return settings


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(config(engine), revision)
