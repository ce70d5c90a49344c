"""Bytes on the wire <-> contracts. JSON, with errors a person can read.

Reading is tolerant within a major version: fields this reader does not know (a newer minor's) are
ignored at every depth; everything it knows is validated strictly. A message of another major is
refused with that reason (docs/kafka-api.md, "Versions")."""

import json
from typing import TypeVar

from fusion_contracts.limits import SCHEMA_VERSION
from pydantic import BaseModel, TypeAdapter, ValidationError

T = TypeVar("T")

_MAX_ERRORS_SHOWN = 5


class DecodeError(ValueError):
    """The bytes are not a valid message of the expected contract."""


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_defaults=False).encode()


def describe(error: ValidationError) -> str:
    problems = error.errors(include_url=False, include_input=False)
    if problems and problems[0]["type"] == "json_invalid":
        return f"not valid JSON: {problems[0]['msg']}"
    shown = [
        f"{'.'.join(str(part) for part in problem['loc']) or '(message)'}: {problem['msg']}"
        for problem in problems[:_MAX_ERRORS_SHOWN]
    ]
    more = len(problems) - len(shown)
    return "schema: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def unsupported_version(raw: bytes) -> str | None:
    """Why a message that failed validation cannot be read, when it is of another major version: its
    other errors then follow from that. Only called on failure, so the usual path parses once."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, bool) or not isinstance(version, int) or version == SCHEMA_VERSION:
        return None
    return f"unsupported schema version {version}; this reader speaks {SCHEMA_VERSION}"


def decode(adapter: TypeAdapter[T], raw: bytes | None) -> T:
    if raw is None:
        raise DecodeError("empty message (no value)")
    try:
        return adapter.validate_json(raw, extra="ignore")
    except ValidationError as error:
        raise DecodeError(unsupported_version(raw) or describe(error)) from error
