"""The tools of one member's research, built from its task's `ToolSpec`s with the catalog's search
backends and MCP servers and the worker's settings, and closed when the research ends."""

import contextlib
from collections.abc import AsyncIterator, Sequence

import structlog
from fusion_contracts import ToolSpec

from fusion.catalog import Catalog
from fusion.research.base import Tool, ToolError
from fusion.research.document_search import search_documents
from fusion.research.fetching import web_fetch
from fusion.research.mcp_tools import mcp_tools
from fusion.research.search import web_search
from fusion.settings import Settings

log = structlog.get_logger(__name__)


class Toolkit:
    def __init__(self, catalog: Catalog, settings: Settings) -> None:
        self._catalog = catalog
        self._settings = settings

    @contextlib.asynccontextmanager
    async def tools(self, specs: Sequence[ToolSpec]) -> AsyncIterator[list[Tool]]:
        """The tools `specs` name. One that cannot be built here (an MCP server this worker's catalog
        lacks, say) is left out and logged: the member answers with the others."""
        async with contextlib.AsyncExitStack() as stack:
            tools: list[Tool] = []
            servers = {}
            for spec in specs:
                if spec.type == "mcp":
                    server = self._catalog.mcp_servers.get(spec.server or "")
                    if server is None:
                        log.warning("unknown MCP server: its tools are left out", server=spec.server)
                    else:
                        servers[spec.server or ""] = server
                    continue
                try:
                    tool = self._build(spec)
                except ToolError as error:
                    log.warning("research tool left out", tool=spec.type, reason=str(error))
                    continue
                if (close := getattr(tool, "aclose", None)) is not None:
                    stack.push_async_callback(close)
                tools.append(tool)
            if servers:
                toolset = await stack.enter_async_context(mcp_tools(servers))
                for name, reason in toolset.unavailable.items():
                    log.warning("MCP server unavailable: its tools are left out", server=name, reason=reason)
                tools.extend(toolset.tools)
            yield tools

    def _build(self, spec: ToolSpec) -> Tool:
        if spec.type == "web_search":
            return web_search(self._catalog, spec)
        if spec.type == "web_fetch":
            return web_fetch(self._settings, spec)
        return search_documents(self._settings, spec)
