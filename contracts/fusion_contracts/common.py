"""Building blocks shared by several messages."""

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PlainSerializer,
    field_validator,
    model_validator,
)

from fusion_contracts.limits import MAX_ID_CHARS, MAX_TOOL_RESULTS


def _readers_ignore_unknown_fields(schema: dict[str, Any]) -> None:
    schema.pop("additionalProperties", None)


class Contract(BaseModel):
    """Base of every message: immutable.

    Building or validating one in code refuses unknown fields, so a typo in a producer fails where
    it is made. Reading one off the wire ignores them (`fusion.kafka.codec.decode` validates with
    `extra="ignore"`): a message of the same major version from a newer minor carries optional fields
    an older reader does not know, and it must still be read (the JSON Schemas say so too: no object
    forbids additional properties). See "Versions" in docs/kafka-api.md."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_readers_ignore_unknown_fields)


SchemaVersion = Annotated[
    Literal[1],
    Field(
        description="The contract's major version. Minors of one major differ only by optional fields, "
        "which a reader of that major ignores when it does not know them; a message of another major "
        "is dead-lettered."
    ),
]


RequestId = Annotated[
    str, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]
RequestDigest = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-f]{32}$",
        description="Which request, of those that may share a request id: the first 32 hex digits "
        "of the SHA-256 of the request's message as it was published (`request_digest`).",
    ),
]

Role = Literal["system", "user", "assistant"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Instant = Annotated[datetime, AfterValidator(_as_utc)]
"""A point in time, always timezone-aware UTC: a time without a zone is taken as UTC."""


def _plain(value: Decimal) -> str:
    return format(value, "f")


Usd = Annotated[Decimal, PlainSerializer(_plain, return_type=str, when_used="json")]
"""An amount in dollars, exact. In JSON a plain decimal string (`"0.0000001"`, never Python's
`"1E-7"`), which a reader in any language parses as written."""


class ChatMessage(Contract):
    """One message of a conversation, in OpenAI's chat format (text content)."""

    role: Role
    content: str = Field(max_length=1_000_000)
    name: str | None = Field(default=None, max_length=64)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message content must not be empty")
        return value


class ModelSpec(Contract):
    """Which model answers, with its sampling parameters. `model` names an entry of the catalog."""

    model: ModelName
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=65_536)
    seed: int | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = Field(
        default=None,
        description="For reasoning models: OpenAI's reasoning_effort, Anthropic's thinking budget.",
    )
    system_prompt: str | None = Field(default=None, max_length=20_000)


class Usage(Contract):
    input_tokens: NonNegativeInt = 0
    output_tokens: NonNegativeInt = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


CallStatus = Literal["ok", "error", "timeout"]
"""How one model call ended."""

Strategy = Literal["synthesize", "synthesize-once", "select", "vote"]
"""How the judge makes one answer of the panel's (docs/strategies.md):

synthesize: an analysis of the answers, then a final answer written from it (two judge calls).
synthesize-once: one judge call that returns the analysis and the final answer together.
select: the judge picks the best answer, and may correct it, instead of writing a new one.
vote: the most common answer after normalisation wins; the judge only breaks ties.
Whatever the strategy, a panel whose answers all agree skips the judge (`answer_source="agreement"`)."""

FailureReason = Literal[
    "invalid_request",
    "budget_exceeded",
    "deadline",
    "all_members_failed",
    "rate_limited",
    "some_members_failed",
    "judge_invalid_json",
    "judge_schema_mismatch",
    "judge_upstream_error",
    "judge_empty",
    "judge_deadline",
    "internal_error",
]
"""Why a result is not `complete`, as a code to branch on (the result's `error` says it in words).

rejected: invalid_request (the request or its panel cannot be run), budget_exceeded (its estimate is
over `max_cost_usd`), deadline (it waited past its panel deadline before dispatch).
failed: all_members_failed, rate_limited (every member was refused with HTTP 429), deadline (no member
answered in time), internal_error.
partial: some_members_failed; judge_invalid_json (the judge's analysis or choice held no JSON),
judge_schema_mismatch (JSON, but not the shape asked for), judge_upstream_error (the judge's call
failed), judge_empty (the judge wrote nothing), judge_deadline (the judge ran out of time). A judge's
reason wins over some_members_failed when both apply."""


ToolType = Literal["web_search", "web_fetch", "search_documents", "mcp"]
"""The research tools a panel member may be given (docs/research.md)."""


class ToolSpec(Contract):
    """One research tool offered to every member of a panel, with its parameters."""

    type: ToolType
    max_results: int | None = Field(
        default=None, ge=1, le=MAX_TOOL_RESULTS, description="web_search, search_documents: results per call."
    )
    allowed_domains: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        default=None,
        max_length=50,
        description="web_search, web_fetch: only these domains (and their subdomains); any when None.",
    )
    excluded_domains: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list, max_length=50, description="web_search, web_fetch: never these domains."
    )
    backend: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="web_search: a search backend of the catalog; its default when None."
    )
    server: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="mcp: the MCP server of the catalog whose tools are offered."
    )

    @model_validator(mode="after")
    def _coherent(self) -> "ToolSpec":
        if (self.type == "mcp") != (self.server is not None):
            raise ValueError("`server` names the MCP server of an `mcp` tool, and only of one")
        if self.backend is not None and self.type != "web_search":
            raise ValueError("`backend` is for web_search only")
        domains = self.allowed_domains is not None or self.excluded_domains
        if domains and self.type not in ("web_search", "web_fetch"):
            raise ValueError("domain filters are for web_search and web_fetch only")
        if self.max_results is not None and self.type not in ("web_search", "search_documents"):
            raise ValueError("`max_results` is for web_search and search_documents only")
        return self


class Source(Contract):
    """A page or document a member read through a tool and may cite."""

    url: str = Field(min_length=1, max_length=2_000, description="A web URL, or file:// for a document.")
    title: str = Field(default="", max_length=500)


ToolCounts = Annotated[
    dict[Annotated[str, Field(max_length=100)], NonNegativeInt],
    Field(description="Tool calls made, by tool name (as OpenRouter's server_tool_use counts them)."),
]


def request_digest(raw: bytes) -> str:
    """The `RequestDigest` of a request published as `raw`: two requests that share an id (a client's
    mistake) have different digests; a request delivered twice has one."""
    return hashlib.sha256(raw).hexdigest()[:32]
