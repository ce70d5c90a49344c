"""An MCP server for the tests of the MCP research tools (services/fusion/research/mcp_tools.py).

    lookup_code(name)       the code word of a name from CODES, or "unknown name"
    fail_always()           always fails: the call comes back with isError and FAILURE_TEXT
    slow(seconds)           sleeps, then says how long
    env_secret_present()    whether FUSION_TEST_MCP_SECRET is set (never its value)
    request_headers()       the HTTP headers of this call's request as JSON (lower-case names;
                            "{}" over stdio), so a test can see the caller header arrive
    process_id()            this server's process id, so a test can see the process end

With --print-secret it writes FUSION_TEST_MCP_SECRET to stderr as it starts, as a careless server
might: a test can then show that the secret stays out of the client's logs.

Run it from the repository's root (the tests start it themselves):

    python -m fusion_testing.mcp_server                         # stdio
    python -m fusion_testing.mcp_server --http --port 8765      # streamable HTTP at /mcp
"""

import argparse
import json
import os
import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

CODES = {"kestrel": "AMBER-7", "heron": "COBALT-3", "plover": "SIENNA-9"}
FAILURE_TEXT = "the archive is closed today"
SECRET_ENV = "FUSION_TEST_MCP_SECRET"

server: MCPServer = MCPServer("fusion-test", log_level="WARNING")


@server.tool()
def lookup_code(name: str) -> str:
    """The code word of a bird's name."""
    return CODES.get(name.strip().lower(), "unknown name")


@server.tool()
def fail_always() -> str:
    """A tool that always fails."""
    raise ToolError(FAILURE_TEXT)


@server.tool()
async def slow(seconds: float) -> str:
    """Sleeps for `seconds`, then answers."""
    await anyio.sleep(seconds)
    return f"slept {seconds:g}s"


@server.tool()
def env_secret_present() -> bool:
    """Whether the test secret reached this server's environment."""
    return bool(os.environ.get(SECRET_ENV))


@server.tool()
def request_headers(ctx: Context) -> str:
    """The HTTP headers this call came with, as a JSON object."""
    return json.dumps({name.lower(): value for name, value in (ctx.headers or {}).items()})


@server.tool()
def process_id() -> int:
    """This server's process id."""
    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--print-secret", action="store_true", help=f"write {SECRET_ENV} to stderr")
    args = parser.parse_args()
    if args.print_secret:
        print(f"starting with {SECRET_ENV}={os.environ.get(SECRET_ENV)}", file=sys.stderr, flush=True)
    if args.http:
        server.run("streamable-http", host=args.host, port=args.port)
    else:
        server.run()


if __name__ == "__main__":
    main()
