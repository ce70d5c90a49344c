"""Fusion's message contracts: the Pydantic models of every Kafka message, and the topic names."""

from fusion_contracts import limits, topics
from fusion_contracts.common import CallStatus, ChatMessage, ModelSpec, Usage
from fusion_contracts.dead_letter import DeadLetter
from fusion_contracts.panel import AnswersMessage, PanelAnswer, PanelPlan, PanelRejection, PanelTask
from fusion_contracts.request import FusionRequest, Policy, ReplyTo
from fusion_contracts.result import (
    Analysis,
    AnswerChunk,
    AnswerSource,
    CostSummary,
    FusedResult,
    GatewayPresence,
    JudgeOutcome,
    MemberOutcome,
    ReleaseReason,
    ReplyMessage,
    ResultStatus,
    Timings,
    UsageSummary,
)

__all__ = [
    "Analysis",
    "AnswerChunk",
    "AnswerSource",
    "AnswersMessage",
    "CallStatus",
    "ChatMessage",
    "CostSummary",
    "DeadLetter",
    "FusedResult",
    "FusionRequest",
    "GatewayPresence",
    "JudgeOutcome",
    "MemberOutcome",
    "ModelSpec",
    "PanelAnswer",
    "PanelPlan",
    "PanelRejection",
    "PanelTask",
    "Policy",
    "ReleaseReason",
    "ReplyMessage",
    "ReplyTo",
    "ResultStatus",
    "Timings",
    "Usage",
    "UsageSummary",
    "limits",
    "topics",
]
