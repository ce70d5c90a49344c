"""Errors the gateway answers with, in OpenAI's error body."""

from typing import Any

from fusion.gateway.openai_types import ErrorType


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        error_type: ErrorType,
        code: str | None = None,
        *,
        fusion: dict[str, Any] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.fusion = fusion
        self.param = param

    @classmethod
    def invalid(cls, message: str, param: str | None) -> "GatewayError":
        return cls(400, message, "invalid_request_error", "invalid_request", param=param)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        body: dict[str, Any] = {"error": error}
        if self.fusion is not None:
            body["fusion"] = self.fusion
        return body
