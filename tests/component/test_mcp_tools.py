"""MCP servers' tools for panel members: the test server (fusion_testing/mcp_server.py) over stdio
and streamable HTTP, servers that cannot be had, and the naming and result rules on their own."""

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from fusion.catalog import McpServer
from fusion.research import mcp_tools as module
from fusion.research.base import CALLER, CALLER_HEADER, ToolError
from fusion.research.mcp_tools import McpTool, McpToolset, list_all_tools, mcp_tools, result_text, tool_name
from mcp import types

from fusion_testing.mcp_server import FAILURE_TEXT, SECRET_ENV
from fusion_testing.stack import ROOT, wait_until

SECRET = "mcp-test-SECRET-7d41c9"
WORKER_SECRET_VAR = "FUSION_TEST_WORKER_MCP_SECRET"
"""The worker's variable that holds SECRET: the catalog names it, never the value."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def stdio(*extra_args: str, timeout_s: float = 15.0, **fields: Any) -> McpServer:
    return McpServer(
        transport="stdio",
        command=sys.executable,
        args=["-m", "fusion_testing.mcp_server", *extra_args],
        cwd=str(ROOT),
        timeout_s=timeout_s,
        **fields,
    )


def http(url: str, timeout_s: float = 10.0, **fields: Any) -> McpServer:
    return McpServer(transport="http", url=url, timeout_s=timeout_s, **fields)


def by_name(toolset: McpToolset) -> dict[str, McpTool]:
    return {tool.name: tool for tool in toolset.tools}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """The test server over streamable HTTP, in a process of its own."""
    port = free_port()
    command = [sys.executable, "-m", "fusion_testing.mcp_server", "--http", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: accepts(port), 30, "mcp test server", lambda: process.poll() is None)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> structlog.testing.LogCapture:
    """What the module logs (whatever structlog's configuration in this session)."""
    capture = structlog.testing.LogCapture()
    monkeypatch.setattr(module, "log", structlog.wrap_logger(None, processors=[capture]))
    return capture


# stdio


async def test_stdio_tools_are_offered_with_safe_names() -> None:
    async with mcp_tools({"birds.v1": stdio()}) as toolset:
        tools = by_name(toolset)
        assert toolset.unavailable == {}
        assert set(tools) == {
            "mcp_birds_v1_lookup_code",
            "mcp_birds_v1_fail_always",
            "mcp_birds_v1_slow",
            "mcp_birds_v1_env_secret_present",
            "mcp_birds_v1_request_headers",
            "mcp_birds_v1_process_id",
        }
        lookup = tools["mcp_birds_v1_lookup_code"]
        assert lookup.description == "birds.v1: The code word of a bird's name."
        assert lookup.parameters["type"] == "object"
        assert lookup.parameters["required"] == ["name"]
        assert all(NAME_PATTERN.match(name) for name in tools)


async def test_a_stdio_tool_answers_and_fails_as_the_server_says() -> None:
    async with mcp_tools({"birds": stdio()}) as toolset:
        tools = by_name(toolset)
        assert (await tools["mcp_birds_lookup_code"].run({"name": "kestrel"})).text == "AMBER-7"
        assert (await tools["mcp_birds_lookup_code"].run({"name": "wren"})).text == "unknown name"
        with pytest.raises(ToolError, match=FAILURE_TEXT):
            await tools["mcp_birds_fail_always"].run({})


async def test_a_slow_tool_is_cut_off_at_the_timeout() -> None:
    async with mcp_tools({"birds": stdio(timeout_s=3.0)}) as toolset:
        slow = by_name(toolset)["mcp_birds_slow"]
        started = time.monotonic()
        with pytest.raises(ToolError, match=r"did not answer within 3 s"):
            await slow.run({"seconds": 30})
        assert 2.9 <= time.monotonic() - started < 4.5
        # The session is still good for the next call.
        assert (await by_name(toolset)["mcp_birds_lookup_code"].run({"name": "heron"})).text == "COBALT-3"


async def test_env_from_passes_a_secret_that_never_shows(
    monkeypatch: pytest.MonkeyPatch, captured: structlog.testing.LogCapture, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(WORKER_SECRET_VAR, SECRET)
    caplog.set_level("DEBUG")
    server = stdio("--print-secret", env_from={SECRET_ENV: WORKER_SECRET_VAR})
    async with mcp_tools({"birds": server}) as toolset:
        tools = by_name(toolset)
        assert (await tools["mcp_birds_env_secret_present"].run({})).text == "true"
        # The server's argument error quotes what it was given: the secret, struck out.
        with pytest.raises(ToolError) as refused:
            await tools["mcp_birds_slow"].run({"seconds": SECRET})
        # A name the table does not hold comes back as it is, but the secret is struck from results too.
        echoed = await tools["mcp_birds_lookup_code"].run({"name": SECRET})
    assert "[redacted]" in str(refused.value)
    assert SECRET not in str(refused.value)
    assert echoed.text == "unknown name"
    # The server wrote the secret to its stderr, which is logged, struck out.
    stderr = [entry for entry in captured.entries if entry["event"] == "mcp server stderr"]
    assert stderr
    assert "[redacted]" in stderr[0]["tail"]
    assert SECRET not in json.dumps(captured.entries, default=str)
    assert SECRET not in caplog.text


async def test_a_server_that_cannot_start_leaves_the_others_working(
    captured: structlog.testing.LogCapture,
) -> None:
    servers = {
        "ghost": McpServer(transport="stdio", command="/nonexistent/fusion-mcp-server", timeout_s=5),
        "birds": stdio(),
    }
    async with mcp_tools(servers) as toolset:
        assert "No such file" in toolset.unavailable["ghost"]
        assert set(toolset.unavailable) == {"ghost"}
        assert all(tool.server == "birds" for tool in toolset.tools)
        assert (await by_name(toolset)["mcp_birds_lookup_code"].run({"name": "plover"})).text == "SIENNA-9"
    assert any(entry["server"] == "ghost" for entry in captured.entries)


async def test_a_missing_env_var_makes_the_server_unavailable_by_name() -> None:
    servers = {"locked": stdio(env_from={SECRET_ENV: "FUSION_TEST_NOT_SET_ANYWHERE"}), "birds": stdio()}
    async with mcp_tools(servers) as toolset:
        assert toolset.unavailable == {
            "locked": "environment variables not set: FUSION_TEST_NOT_SET_ANYWHERE"
        }
        assert {tool.server for tool in toolset.tools} == {"birds"}


async def test_a_server_that_does_not_connect_in_time_is_unavailable() -> None:
    # `sleep` never speaks MCP: the handshake waits until timeout_s, then the process is killed.
    started = time.monotonic()
    async with mcp_tools(
        {"mute": McpServer(transport="stdio", command="sleep", args=["60"], timeout_s=1.0)}
    ) as ts:
        assert ts.unavailable["mute"] == "did not connect and list its tools within 1 s"
        assert ts.tools == []
    assert time.monotonic() - started < 8


async def test_closing_ends_the_server_process() -> None:
    async with mcp_tools({"birds": stdio()}) as toolset:
        pid = int((await by_name(toolset)["mcp_birds_process_id"].run({})).text)
        assert alive(pid)
    assert not alive(pid)


async def test_an_error_in_the_block_comes_out_as_it_is_and_the_server_still_ends() -> None:
    pids: list[int] = []

    async def member_fails() -> None:
        async with mcp_tools({"birds": stdio()}) as toolset:
            pids.append(int((await by_name(toolset)["mcp_birds_process_id"].run({})).text))
            raise LookupError("the member's own failure")

    with pytest.raises(LookupError, match="the member's own failure"):
        await member_fails()
    assert len(pids) == 1
    assert not alive(pids[0])


async def test_cancelling_the_member_mid_call_ends_the_server_process_promptly() -> None:
    pids: list[int] = []

    async def member() -> None:
        async with mcp_tools({"birds": stdio()}) as toolset:
            tools = by_name(toolset)
            pids.append(int((await tools["mcp_birds_process_id"].run({})).text))
            await tools["mcp_birds_slow"].run({"seconds": 12})

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(member(), timeout=4)
    assert time.monotonic() - started < 8  # the stdio shutdown is bounded, well short of the call
    assert len(pids) == 1
    assert not alive(pids[0])


async def test_a_server_that_dies_mid_way_gives_tool_errors_not_a_crash() -> None:
    async with mcp_tools({"birds": stdio(), "other": stdio()}) as toolset:
        tools = by_name(toolset)
        pid = int((await tools["mcp_birds_process_id"].run({})).text)
        os.kill(pid, 9)
        with pytest.raises(ToolError, match="birds/lookup_code failed: Connection closed"):
            await tools["mcp_birds_lookup_code"].run({"name": "kestrel"})
        assert toolset.unavailable == {"birds": "the connection closed"}
        with pytest.raises(ToolError, match="'birds' is not connected"):
            await tools["mcp_birds_lookup_code"].run({"name": "kestrel"})
        assert (await tools["mcp_other_lookup_code"].run({"name": "kestrel"})).text == "AMBER-7"


# streamable HTTP


async def test_http_tool_answers_with_the_caller_header_and_configured_headers(
    http_url: str, monkeypatch: pytest.MonkeyPatch, captured: structlog.testing.LogCapture
) -> None:
    monkeypatch.setenv(WORKER_SECRET_VAR, SECRET)
    server = http(
        http_url,
        headers={"X-Team": "research", CALLER_HEADER: "someone-else"},
        headers_from={"Authorization": WORKER_SECRET_VAR},
    )
    async with mcp_tools({"remote": server}) as toolset:
        tools = by_name(toolset)
        assert toolset.unavailable == {}
        assert (await tools["mcp_remote_lookup_code"].run({"name": "kestrel"})).text == "AMBER-7"
        headers = json.loads((await tools["mcp_remote_request_headers"].run({})).text)
    assert headers[CALLER_HEADER.lower()] == CALLER
    assert headers["x-team"] == "research"
    # The secret arrived whole, and the result shows it struck out.
    assert headers["authorization"] == "[redacted]"
    assert SECRET not in json.dumps(captured.entries, default=str)


async def test_http_errors_and_timeouts_are_tool_errors(http_url: str) -> None:
    async with mcp_tools({"remote": http(http_url, timeout_s=2.0)}) as toolset:
        tools = by_name(toolset)
        with pytest.raises(ToolError, match=FAILURE_TEXT):
            await tools["mcp_remote_fail_always"].run({})
        started = time.monotonic()
        with pytest.raises(ToolError, match="did not answer within 2 s"):
            await tools["mcp_remote_slow"].run({"seconds": 30})
        assert time.monotonic() - started < 3.5


async def test_an_unreachable_url_is_unavailable_with_a_reason(http_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    started = time.monotonic()
    async with mcp_tools({"dead": http(dead), "remote": http(http_url)}) as toolset:
        assert set(toolset.unavailable) == {"dead"}
        assert "connect" in toolset.unavailable["dead"].lower()
        assert {tool.server for tool in toolset.tools} == {"remote"}
    assert time.monotonic() - started < 5


# the rules on their own


def test_tool_names_are_sanitised_unique_and_short() -> None:
    taken: set[str] = set()
    first = tool_name("web.tools", "search/v2", taken)
    assert first == "mcp_web_tools_search_v2"
    taken.add(first)
    # Another tool that sanitises to the same name gets a hash of its original name.
    second = tool_name("web.tools", "search.v2", taken)
    assert second is not None
    assert second.startswith("mcp_web_tools_search_v2_")
    taken.add(second)
    long = tool_name("archive", "x" * 100, taken)
    assert long is not None
    assert len(long) == 64
    assert NAME_PATTERN.match(long)
    assert long != tool_name("archive", "x" * 99 + "y", taken)
    assert tool_name("web.tools", "search.v2", taken) is None  # the same tool again


def test_result_text_describes_what_is_not_text() -> None:
    png = base64.b64encode(b"\x89PNG" + bytes(1230)).decode()
    result = types.CallToolResult(
        content=[
            types.TextContent(text="Two attachments:"),
            types.ImageContent(data=png, mime_type="image/png"),
            types.AudioContent(data=base64.b64encode(b"abc").decode(), mime_type="audio/wav"),
            types.EmbeddedResource(
                resource=types.TextResourceContents(uri="file:///notes.md", text="# Notes", mime_type=None)
            ),
            types.EmbeddedResource(
                resource=types.BlobResourceContents(uri="file:///a.bin", blob="AAAA", mime_type=None)
            ),
            types.ResourceLink(name="report", uri="https://example.org/r.pdf", description="the report"),
        ],
        structured_content={"ignored": "because there is text"},
    )
    assert result_text(result) == (
        "Two attachments:\n"
        "[image: image/png, 1234 bytes]\n"
        "[audio: audio/wav, 3 bytes]\n"
        "[resource file:///notes.md]\n# Notes\n"
        "[resource file:///a.bin: binary, 3 bytes]\n"
        "[resource link: report https://example.org/r.pdf - the report]"
    )


def test_structured_content_is_the_text_when_there_is_none() -> None:
    result = types.CallToolResult(content=[], structured_content={"code": "AMBER-7", "n": 1})
    assert json.loads(result_text(result)) == {"code": "AMBER-7", "n": 1}


async def test_every_page_of_tools_is_listed() -> None:
    class Pages:
        def __init__(self) -> None:
            self.cursors: list[str | None] = []

        async def list_tools(self, *, cursor: str | None = None) -> types.ListToolsResult:
            self.cursors.append(cursor)
            page = int(cursor or 0)
            tool = types.Tool(name=f"t{page}", input_schema={"type": "object"})
            return types.ListToolsResult(tools=[tool], next_cursor=str(page + 1) if page < 2 else None)

    pages = Pages()
    assert [tool.name for tool in await list_all_tools(pages)] == ["t0", "t1", "t2"]
    assert pages.cursors == [None, "1", "2"]
