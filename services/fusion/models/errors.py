"""Errors of model calls.

    ModelError                 a call did not produce an answer
    ├── ModelUnavailable       the provider could not be reached (connection refused, DNS, reset)
    ├── ModelHTTPError         the provider answered with an HTTP error status
    ├── ModelResponseError     the provider answered 2xx with something that is not a usable reply
    └── ModelConfigError       the call cannot be made as configured (missing key, unknown adapter)

A timeout is not among them: callers bound each call with `asyncio.timeout` and report `TimeoutError`
as the `timeout` status. Messages never contain an API key.
"""


class ModelError(Exception):
    """A model call failed; the message says why, fit to show a user."""


class ModelUnavailable(ModelError):
    pass


class ModelHTTPError(ModelError):
    def __init__(self, message: str, status_code: int, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class ModelResponseError(ModelError):
    pass


class ModelConfigError(ModelError):
    pass
