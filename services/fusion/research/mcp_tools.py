"""The tools of MCP servers, offered to a panel member (the `mcp` SDK: stdio and streamable HTTP).

    async with mcp_tools(catalog.mcp_servers) as toolset:
        ...  # the member's whole tool loop, with toolset.tools

Each server gets its own task, which connects, lists the tools and then holds the connection until
the block ends: a server that cannot be started, reached or listed, or that drops mid-way, is
recorded in `toolset.unavailable` and never disturbs the other servers or the member's answer. The
servers connect side by side, each within its `timeout_s`; closing is bounded too, and the SDK kills
a stdio server's process group if it does not exit when its stdin closes.

Secrets (the values named by `env_from` and `headers_from`) are replaced by "[redacted]" in every
error, log line and tool result, so neither the model nor the logs ever see them.
"""

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import IO, Any, Protocol

import anyio
import httpx2
import structlog
from mcp import Client, MCPError, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CONNECTION_CLOSED

from fusion.catalog import McpServer
from fusion.research.base import CALLER, CALLER_HEADER, ToolError, ToolOutput

__all__ = ["McpTool", "McpToolset", "list_all_tools", "mcp_tools", "result_text", "tool_name"]

log = structlog.get_logger(__name__)

BASE_ENV = ("PATH", "HOME", "LANG")
"""The worker's variables a stdio server inherits (the SDK adds a few more, such as USER and SHELL);
anything else it gets from its `env` and `env_from`."""
CLIENT_INFO = types.Implementation(name="fusion-panel-worker", version="1")
REDACTED = "[redacted]"
_CLOSE_TIMEOUT_S = 3.0
"""For an HTTP server's courteous session DELETE. A stdio server's shutdown is the SDK's own, shielded
and bounded apart from this (stdin closed, 2 s, SIGTERM to its process group, 2 s, SIGKILL)."""
_SSE_READ_TIMEOUT_S = 300.0
"""An HTTP server may hold a stream open while a tool runs; each call is bounded by `timeout_s`."""
_MAX_PAGES = 100
"""A tools/list that never stops paging cannot hold up the member."""
_MAX_ERROR_CHARS = 2000
_STDERR_TAIL_BYTES = 8192
_NAME_LIMIT = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class McpToolset:
    """The tools of the servers that connected, and why the others are missing or gone."""

    def __init__(
        self, tools: list["McpTool"], missing_env: dict[str, str], connections: list["_Connection"]
    ) -> None:
        self.tools = tools
        self._missing_env = missing_env
        self._connections = connections

    @property
    def unavailable(self) -> dict[str, str]:
        """Server -> why its tools are not offered, or no longer work (it dropped mid-way)."""
        failed = {c.name: c.failure for c in self._connections if c.failure is not None}
        return self._missing_env | failed


class _Secrets:
    """The secret values a server was given, to strike from whatever it or the SDK says."""

    def __init__(self, values: list[str]) -> None:
        # Longest first, so a secret that contains another is struck whole.
        self._values = sorted({value for value in values if value}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        return text


class _ToolLister(Protocol):
    async def list_tools(self, *, cursor: str | None = None) -> types.ListToolsResult: ...


async def list_all_tools(client: _ToolLister) -> list[types.Tool]:
    """Every page of the server's tools (at most `_MAX_PAGES`)."""
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools
    log.warning("mcp server kept paging its tools: the rest left out", pages=_MAX_PAGES)
    return tools


class _Connection:
    """One server's session, held open by `serve` in a task of its own."""

    def __init__(self, name: str, server: McpServer) -> None:
        self.name = name
        self.server = server
        self.secrets = _Secrets(
            [os.environ.get(var, "") for var in (*server.env_from.values(), *server.headers_from.values())]
        )
        self.tools: list[types.Tool] = []
        self.failure: str | None = None
        """Why the server is not (or no longer) usable."""
        self.ready = anyio.Event()
        self._client: Client | None = None

    async def serve(self, closing: anyio.Event) -> None:
        """Connect and list the tools within `timeout_s`, then hold the session until `closing`."""
        with anyio.CancelScope(deadline=anyio.current_time() + self.server.timeout_s) as scope:
            try:
                async with AsyncExitStack() as stack:
                    client = await self._connect(stack)
                    self.tools = await list_all_tools(client)
                    scope.deadline = math.inf
                    self._client = client
                    self.ready.set()
                    await closing.wait()
                    scope.deadline = anyio.current_time() + _CLOSE_TIMEOUT_S
            # The boundary that keeps one server's failure (spawn, network, protocol, or an error in
            # the SDK's own tasks, which arrives as an ExceptionGroup) away from the member's loop.
            except Exception as error:  # noqa: BLE001
                self.failure = self.secrets.redact(_describe(error))
            finally:
                self._client = None
                self.ready.set()
        if scope.cancelled_caught and self.failure is None:
            if closing.is_set():
                log.warning("mcp server did not close in time", server=self.name, timeout_s=_CLOSE_TIMEOUT_S)
            else:
                self.failure = f"did not connect and list its tools within {self.server.timeout_s:g} s"
        if self.failure is not None:
            log.warning("mcp server unavailable", server=self.name, reason=self.failure)

    async def _connect(self, stack: AsyncExitStack) -> Client:
        server = self.server
        if server.transport == "stdio":
            assert server.command is not None  # the catalog's validator sees to it
            # The server's stderr goes to a file, logged once the process is gone (the callback
            # runs after the client below has closed), never to the worker's own output.
            errlog = stack.enter_context(
                tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
            )
            stack.callback(self._log_stderr, errlog)
            params = StdioServerParameters(
                command=server.command, args=server.args, env=self._stdio_env(), cwd=server.cwd
            )
            transport = stdio_client(params, errlog=errlog)
        else:
            assert server.url is not None
            http = await stack.enter_async_context(
                httpx2.AsyncClient(
                    headers=self._http_headers(),
                    timeout=httpx2.Timeout(server.timeout_s, read=max(server.timeout_s, _SSE_READ_TIMEOUT_S)),
                )
            )
            transport = streamable_http_client(server.url, http_client=http)
        return await stack.enter_async_context(Client(transport, client_info=CLIENT_INFO, cache=None))

    def _stdio_env(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
        env |= self.server.env
        env |= {name: os.environ[var] for name, var in self.server.env_from.items()}
        return env

    def _http_headers(self) -> dict[str, str]:
        headers = dict(self.server.headers)
        headers |= {name: os.environ[var] for name, var in self.server.headers_from.items()}
        headers[CALLER_HEADER] = CALLER  # last: the catalog cannot take it off
        return headers

    def _log_stderr(self, errlog: IO[str]) -> None:
        size = errlog.seek(0, os.SEEK_END)
        errlog.seek(max(0, size - _STDERR_TAIL_BYTES))
        text = errlog.read().strip()
        if text:
            log.info("mcp server stderr", server=self.name, tail=self.secrets.redact(text))

    async def call(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """The tool's result; `ToolError` when it cannot be had (timeout, protocol, connection)."""
        client = self._client
        if client is None or self.failure is not None:
            raise ToolError(f"the MCP server {self.name!r} is not connected ({self.failure or 'closed'})")
        timeout_s = self.server.timeout_s
        try:
            with anyio.fail_after(timeout_s):
                return await client.call_tool(tool, arguments)
        except TimeoutError:
            raise ToolError(f"{self.name}/{tool} did not answer within {timeout_s:g} s") from None
        except MCPError as error:
            if error.code == CONNECTION_CLOSED:  # the server is gone: say so, and fail fast from now on
                self.failure = "the connection closed"
            raise ToolError(f"{self.name}/{tool} failed: {self._clip(error.message)}") from None
        # A result that breaks its declared output schema, or asks for input a panel member cannot
        # give (RuntimeError); a result that is not valid MCP (ValueError, pydantic's included).
        except (RuntimeError, ValueError) as error:
            raise ToolError(f"{self.name}/{tool} failed: {self._clip(_describe(error))}") from None

    def _clip(self, text: str) -> str:
        return self.secrets.redact(text)[:_MAX_ERROR_CHARS]


class McpTool:
    """One tool of one MCP server, as a `fusion.research.base.Tool`."""

    def __init__(self, connection: _Connection, tool: types.Tool, name: str) -> None:
        self._connection = connection
        self._tool = tool.name
        self._name = name
        self._description = f"{connection.name}: {tool.description or tool.title or tool.name}"
        self._parameters = dict(tool.input_schema) or {"type": "object"}

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def parameters(self) -> dict[str, Any]:
        return self._parameters

    @property
    def server(self) -> str:
        return self._connection.name

    async def run(self, arguments: dict[str, Any]) -> ToolOutput:
        result = await self._connection.call(self._tool, arguments)
        text = self._connection.secrets.redact(result_text(result))
        if result.is_error:
            message = text or "the tool reported an error without saying what"
            raise ToolError(f"{self.server}/{self._tool}: {message[:_MAX_ERROR_CHARS]}")
        return ToolOutput(text=text)


@asynccontextmanager
async def mcp_tools(servers: Mapping[str, McpServer]) -> AsyncIterator[McpToolset]:
    """The tools of `servers`, connected for the length of the block. Entering waits until every
    server has connected or failed (each within its `timeout_s`). Enter and leave it in the same
    task (it holds a task group), around one member's whole tool loop."""
    missing_env: dict[str, str] = {}
    connections: list[_Connection] = []
    closing = anyio.Event()
    raised: Exception | None = None
    async with anyio.create_task_group() as group:
        for name, server in servers.items():
            if missing := server.missing_env():
                missing_env[name] = f"environment variables not set: {', '.join(missing)}"
                continue
            connection = _Connection(name, server)
            connections.append(connection)
            group.start_soon(connection.serve, closing)
        for connection in connections:
            await connection.ready.wait()
        try:
            yield McpToolset(_offer(connections), missing_env, connections)
        # Held back until the servers are closed, so the caller gets its own error rather than an
        # ExceptionGroup from the task group (cancellation goes through as it is).
        except Exception as error:  # noqa: BLE001
            raised = error
        finally:
            closing.set()
    if raised is not None:
        raise raised


def _offer(connections: list[_Connection]) -> list[McpTool]:
    tools: list[McpTool] = []
    taken: set[str] = set()
    for connection in connections:
        if connection.failure is not None:
            continue
        for tool in connection.tools:
            name = tool_name(connection.name, tool.name, taken)
            if name is None:
                log.warning("mcp server lists a tool twice", server=connection.name, tool=tool.name)
                continue
            taken.add(name)
            tools.append(McpTool(connection, tool, name))
    return tools


def tool_name(server: str, tool: str, taken: set[str]) -> str | None:
    """`mcp_<server>_<tool>` within `^[A-Za-z0-9_-]{1,64}$`: other characters become "_", and a name
    that is too long or already taken is cut and given a hash of the original. None if even that is
    taken (the same tool listed twice)."""
    original = f"mcp_{server}_{tool}"
    name = _UNSAFE.sub("_", original)
    if len(name) <= _NAME_LIMIT and name not in taken:
        return name
    digest = hashlib.sha256(original.encode()).hexdigest()[:8]
    name = f"{name[: _NAME_LIMIT - len(digest) - 1]}_{digest}"
    return None if name in taken else name


def result_text(result: types.CallToolResult) -> str:
    """What the model reads of a tool's result: its text, other content described in a line, and the
    structured content as JSON when there is no text."""
    parts = [_block_text(block) for block in result.content]
    has_text = any(isinstance(block, types.TextContent) for block in result.content)
    if not has_text and result.structured_content is not None:
        parts.insert(0, json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(part for part in parts if part)


def _block_text(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        return f"[{block.type}: {block.mime_type}, {_base64_size(block.data)} bytes]"
    if isinstance(block, types.ResourceLink):
        about = f" - {block.description}" if block.description else ""
        return f"[resource link: {block.name} {block.uri}{about}]"
    contents = block.resource
    if isinstance(contents, types.TextResourceContents):
        return f"[resource {contents.uri}]\n{contents.text}"
    kind = contents.mime_type or "binary"
    return f"[resource {contents.uri}: {kind}, {_base64_size(contents.blob)} bytes]"


def _base64_size(data: str) -> int:
    """The decoded size of base64 text, without decoding it."""
    return len(data.strip().rstrip("=")) * 3 // 4


def _describe(error: BaseException) -> str:
    """One line for an error; an ExceptionGroup (the SDK's task groups) by its first leaf."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
