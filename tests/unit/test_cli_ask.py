"""`fusion ask`'s options as a FusionRequest: research tools and their limit."""

import pytest
from fusion.cli.ask import build_request
from fusion.cli.main import parser
from fusion_contracts import FusionRequest, ToolSpec
from pydantic import ValidationError


def request(*options: str) -> FusionRequest:
    return build_request(parser().parse_args(["ask", "When did the Kestrel Bridge open?", *options]))


def test_tools_and_their_limit() -> None:
    asked = request("--tools", "web_search, web_fetch,mcp:docs", "--max-tool-calls", "6")
    assert asked.tools == [
        ToolSpec(type="web_search"),
        ToolSpec(type="web_fetch"),
        ToolSpec(type="mcp", server="docs"),
    ]
    assert asked.max_tool_calls == 6


def test_none_turns_the_presets_tools_off_and_no_option_keeps_them() -> None:
    assert request("--tools", "none").tools == []
    assert request().tools is None
    assert request().max_tool_calls is None


@pytest.mark.parametrize("options", [("--tools", "telnet"), ("--max-tool-calls", "17")])
def test_invalid_tools_are_refused(options: tuple[str, str]) -> None:
    with pytest.raises(ValidationError):
        request(*options)
