"""What every HTTP model adapter shares: error mapping, status checks, key redaction, token counts."""

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from fusion.models.errors import ModelHTTPError, ModelUnavailable

_ERROR_BODY_CHARS = 300


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def error_detail(response: httpx.Response) -> str:
    """The provider's reason, whole: cut it only once the keys are out of it (a key the cut went
    through would not be recognised any more, and its first characters would stay)."""
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
        return str(message)
    except ValueError:
        return response.text


def tokens(value: object) -> int:
    """A reported token count; anything but a non-negative integer counts as zero."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def reported_cost(value: object) -> Decimal | None:
    """A provider-reported cost in dollars (OpenRouter's `usage.cost`), exact as written in the JSON."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and cost >= 0 else None


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a provider's API is and how to reach it: the base URL its paths join, the headers every
    call carries (its key among them), each call's timeouts, and the HTTP transport."""

    base_url: str
    transport: httpx.AsyncBaseTransport
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    timeout: httpx.Timeout = dataclasses.field(default_factory=lambda: httpx.Timeout(60.0, connect=10.0))


_DEFAULT_HEADERS = {"accept": "*/*", "accept-encoding": "gzip, deflate", "user-agent": "fusion"}


class HttpAdapter:
    """Hands each request to the transport itself. httpx's client around it (cookie extraction, auth
    and redirect flows, event hooks, URL and header merging) adds nothing a provider call needs and
    costs CPU on every call, so the headers are merged once and each call builds only its request.
    Without the client's wrapper around the body stream, a response is in no reference cycle."""

    def __init__(self, endpoint: Endpoint, provider_name: str, secrets: Sequence[str] = ()) -> None:
        self._transport = endpoint.transport
        self._base_url = httpx.URL(endpoint.base_url.rstrip("/") + "/")
        self._headers = httpx.Headers({**_DEFAULT_HEADERS, **endpoint.headers})
        self._timeout = endpoint.timeout.as_dict()
        self._provider = provider_name
        self._secrets = tuple(secret for secret in secrets if secret)
        self._urls: dict[str, httpx.URL] = {}

    def _url(self, path: str) -> httpx.URL:
        """`path` under the base URL, joined once per path."""
        url = self._urls.get(path)
        if url is None:
            base = self._base_url
            url = self._urls[path] = base.copy_with(raw_path=base.raw_path + path.encode())
        return url

    def _redact(self, text: str) -> str:
        """A provider may echo the key it rejected; it must not reach our errors and logs."""
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    async def _send(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        request = httpx.Request(
            "POST",
            self._url(path),
            headers=self._headers,
            json=payload,
            extensions={"timeout": self._timeout},
        )
        return await self._transport.handle_async_request(request)

    async def _post(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        """POSTs `payload` as JSON to `path` and reads the whole reply."""
        async with self._errors_mapped():
            response = await self._send(path, payload)
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    @contextlib.asynccontextmanager
    async def _post_streamed(self, path: str, payload: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """POSTs `payload` as JSON to `path`; the reply is read while the block runs."""
        async with self._errors_mapped():
            response = await self._send(path, payload)
            try:
                yield response
            finally:
                await response.aclose()

    @contextlib.asynccontextmanager
    async def _errors_mapped(self) -> AsyncIterator[None]:
        try:
            yield
        except httpx.TimeoutException as error:
            raise TimeoutError(f"{self._provider}: no answer in time") from error
        except httpx.TransportError as error:
            reason = f"{type(error).__name__}: {error}"
            raise ModelUnavailable(f"{self._provider} unreachable: {reason}") from error

    async def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        await response.aread()
        detail = self._redact(error_detail(response))[:_ERROR_BODY_CHARS]
        raise ModelHTTPError(
            f"{self._provider} answered HTTP {response.status_code}: {detail}",
            status_code=response.status_code,
            retry_after_s=retry_after(response),
        )

    async def aclose(self) -> None:
        await self._transport.aclose()
