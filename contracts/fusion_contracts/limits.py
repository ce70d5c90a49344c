"""Bounds every producer and consumer of Fusion messages can rely on."""

from typing import Final

SCHEMA_VERSION: Final = 1

MAX_PANEL_MEMBERS: Final = 8
MAX_MESSAGES: Final = 256
MAX_PROMPT_CHARS: Final = 200_000
"""Sum of the characters of every message's content in one request."""
MAX_DEADLINE_S: Final = 900.0
DEFAULT_DEADLINE_S: Final = 120.0
MAX_GRACE_S: Final = 60.0
DEFAULT_GRACE_S: Final = 2.0
MAX_ANSWER_CHARS: Final = 32_000
"""A member's or the judge's answer is cut here, which bounds every message well under the size below."""
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
"""Producers, consumers and topics are configured for messages up to this size."""
MAX_ID_CHARS: Final = 128
MAX_DEAD_LETTER_RAW_BYTES: Final = 64 * 1024
MAX_DEAD_LETTER_KEY_BYTES: Final = 1024
"""A dead letter keeps at most this much of the original key, in its body and as its own key."""
DEFAULT_MAX_TOOL_CALLS: Final = 4
MAX_TOOL_CALLS: Final = 16
"""A member's research: tool calls per answer, then one last turn without tools."""
MAX_TOOLS: Final = 8
"""Tool specs per request or preset."""
MAX_TOOL_RESULTS: Final = 20
MAX_SOURCES: Final = 64
"""Sources kept per member answer and per result."""
