"""An httpx transport on aiohttp's connection pool: the adapters keep httpx's requests and responses.

httpx's own pool (httpcore 1.0) walks every pooled connection, with a system call for each, whenever a
request starts or ends, so its cost grows with the calls in flight, and a panel worker keeps many in
flight to one server; aiohttp hands out an idle connection in constant time. Errors come out as the
httpx exceptions the adapters already map.
"""

import contextlib
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator

import aiohttp
import certifi
import httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_connections: int, keepalive_s: float = 15.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy_for(self, url: httpx.URL) -> str | None:
        """The proxy that `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` give for a host, as httpx honours
        them; read once per scheme and host."""
        origin = (url.scheme, url.host)
        if origin not in self._proxies:
            bypass = urllib.request.proxy_bypass(url.host)
            self._proxies[origin] = None if bypass else urllib.request.getproxies().get(url.scheme)
        return self._proxies[origin]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made lazily: it must belong to the running event loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    keepalive_timeout=self._keepalive_s,
                    ssl=ssl.create_default_context(cafile=certifi.where()),
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # httpx decodes Content-Encoding itself
                trust_env=False,  # with it, aiohttp reads ~/.netrc in a thread for every request
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()
        with _mapped_errors(request):
            response = await self._client().request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                proxy=self._proxy_for(request.url),
                timeout=aiohttp.ClientTimeout(
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        stream: httpx.AsyncByteStream
        if _streamed(response):
            stream = _Body(response, request)
        else:  # a whole JSON body: read here in one go, not chunk by chunk through httpx
            with _mapped_errors(request):
                stream = httpx.ByteStream(await response.read())
            response.release()
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=stream,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


EAGER_BODY_BYTES = 1 << 20


def _streamed(response: aiohttp.ClientResponse) -> bool:
    """Server-sent events, and bodies of unknown or large size, are handed on as they arrive."""
    length = response.content_length
    return length is None or length > EAGER_BODY_BYTES or response.content_type == "text/event-stream"


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


@contextlib.contextmanager
def _mapped_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's exceptions as the httpx ones they correspond to."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:
        raise httpx.ConnectTimeout(_message(error), request=request) from error
    except TimeoutError as error:  # aiohttp's read timeouts are these too
        raise httpx.ReadTimeout(_message(error), request=request) from error
    except aiohttp.ClientConnectorError as error:
        raise httpx.ConnectError(_message(error), request=request) from error
    except aiohttp.ServerDisconnectedError as error:
        raise httpx.RemoteProtocolError(_message(error), request=request) from error
    except aiohttp.ClientError as error:
        raise httpx.ReadError(_message(error), request=request) from error


def _message(error: Exception) -> str:
    return str(error) or type(error).__name__
