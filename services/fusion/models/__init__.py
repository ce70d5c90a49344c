"""Model adapters: one per API shape, picked from a registry by the catalog's `api` field."""

from fusion.models.base import (
    ChatModel,
    CompletesChat,
    ModelCall,
    ModelReply,
    OnDelta,
    ToolCall,
    ToolChoice,
    ToolDefinition,
    ToolRound,
    UsesTools,
)
from fusion.models.errors import (
    ModelConfigError,
    ModelError,
    ModelHTTPError,
    ModelResponseError,
    ModelUnavailable,
)
from fusion.models.registry import ADAPTERS, ModelRouter

__all__ = [
    "ADAPTERS",
    "ChatModel",
    "CompletesChat",
    "ModelCall",
    "ModelConfigError",
    "ModelError",
    "ModelHTTPError",
    "ModelReply",
    "ModelResponseError",
    "ModelRouter",
    "ModelUnavailable",
    "OnDelta",
    "ToolCall",
    "ToolChoice",
    "ToolDefinition",
    "ToolRound",
    "UsesTools",
]
