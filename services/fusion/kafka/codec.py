"""Bytes on the wire <-> contracts. JSON, validated strictly, with errors a person can read."""

from typing import TypeVar

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


def decode(adapter: TypeAdapter[T], raw: bytes | None) -> T:
    if raw is None:
        raise DecodeError("empty message (no value)")
    try:
        return adapter.validate_json(raw)
    except ValidationError as error:
        raise DecodeError(describe(error)) from error
