"""Keeps secrets out of logs: configured key values and anything that looks like an authorization."""

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

REDACTED = "[redacted]"
_AUTH_VALUE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_SECRET_KEYS = re.compile(r"(?i)^(authorization|x-api-key|api[_-]?key|.*_api_key|password|secret)$")


class Redactor:
    """A structlog processor: every string in the event, at any depth, loses the configured secrets."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted(
            {secret for secret in secrets if secret and len(secret) >= 6}, key=len, reverse=True
        )

    def text(self, value: str) -> str:
        for secret in self._secrets:
            value = value.replace(secret, REDACTED)
        return _AUTH_VALUE.sub(lambda match: f"{match.group(1)} {REDACTED}", value)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and _SECRET_KEYS.match(k) else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self.value(item) for item in value)
        return value

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        redacted: dict[str, Any] = self.value(dict(event))
        return redacted
