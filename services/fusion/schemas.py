"""JSON Schemas of every message, generated into `contracts/schemas/` for non-Python consumers."""

import json
from pathlib import Path

import fusion_contracts
from fusion_contracts import (
    AnswerChunk,
    DeadLetter,
    FusedResult,
    FusionProgress,
    FusionRequest,
    GatewayPresence,
    PanelAnswer,
    PanelPlan,
    PanelRejection,
    PanelTask,
)
from pydantic import BaseModel

SCHEMA_DIR = Path(fusion_contracts.__file__).resolve().parent.parent / "schemas"

MESSAGES: tuple[type[BaseModel], ...] = (
    FusionRequest,
    PanelTask,
    PanelPlan,
    PanelAnswer,
    PanelRejection,
    FusedResult,
    AnswerChunk,
    FusionProgress,
    GatewayPresence,
    DeadLetter,
)


def render() -> dict[str, str]:
    return {
        f"{model.__name__}.json": json.dumps(
            model.model_json_schema(mode="validation"), indent=2, sort_keys=True
        )
        + "\n"
        for model in MESSAGES
    }


def write_schemas() -> list[Path]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for name, text in render().items():
        path = SCHEMA_DIR / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_schemas() -> list[str]:
    """Names of schema files that are missing or differ from the contracts."""
    return [
        name
        for name, text in render().items()
        if not (SCHEMA_DIR / name).is_file() or (SCHEMA_DIR / name).read_text(encoding="utf-8") != text
    ]
