"""`fusion ask`: its options as a FusionRequest (research tools and their limit), and its live view."""

from datetime import UTC, datetime
from typing import Any

import pytest
from fusion.cli.ask import Progress, build_request
from fusion.cli.main import parser
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec, PanelAnswer, PanelPlan, ToolSpec
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


def test_the_live_view_shows_each_members_status_as_it_changes() -> None:
    now = datetime.now(UTC)
    members = [ModelSpec(model="alpha"), ModelSpec(model="beta"), ModelSpec(model="gamma")]
    plan = PanelPlan(
        request_id="r-1",
        messages=[ChatMessage(role="user", content="q")],
        members=members,
        judge=ModelSpec(model="judge"),
        quorum=3,
        grace_s=1,
        panel_deadline_at=now,
        deadline_at=now,
        submitted_at=now,
        dispatched_at=now,
    )

    def answer(index: int, **fields: Any) -> PanelAnswer:
        return PanelAnswer(
            request_id="r-1",
            member_index=index,
            model=members[index].model,
            latency_ms=2500,
            finished_at=now,
            **fields,
        )

    progress = Progress()
    assert progress.member_lines() == []
    progress.on_progress(plan)
    assert [line.plain.split(":")[1].strip()[:9] for line in progress.member_lines()] == ["answering"] * 3
    progress.on_progress(answer(0, status="ok", text="x", tool_calls={"web_search": 2}))
    progress.on_progress(answer(2, status="error", error="HTTP 500"))
    lines = [line.plain for line in progress.member_lines()]
    assert lines[0] == "  0 alpha: answered in 2.5 s, web_search ×2"
    assert lines[1].startswith("  1 beta: answering… ")
    assert lines[2] == "  2 gamma: error: HTTP 500"
    assert "members answered 2/3 (1 failed)" in progress.line().plain
