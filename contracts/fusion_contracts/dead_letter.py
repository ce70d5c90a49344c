"""What any consumer publishes on `fusion.dlq` for a message it cannot use."""

from pydantic import Field, NonNegativeInt

from fusion_contracts.common import Contract, Instant, SchemaVersion
from fusion_contracts.limits import SCHEMA_VERSION


class DeadLetter(Contract):
    schema_version: SchemaVersion = SCHEMA_VERSION
    topic: str
    partition: NonNegativeInt
    offset: NonNegativeInt
    key: str | None = Field(
        default=None, description="The original key (its first 1 KiB), decoded as UTF-8 with replacement."
    )
    service: str
    error: str = Field(description="Why the message could not be used.")
    raw_base64: str = Field(description="The original value, base64, cut at the size limit.")
    raw_size: NonNegativeInt
    raw_truncated: bool
    failed_at: Instant
