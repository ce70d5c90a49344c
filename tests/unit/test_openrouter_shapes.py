"""fusion.gateway.openrouter: OpenRouter's Fusion slug, plugin, server tool and response item (pure)."""

from datetime import UTC, datetime
from typing import Any

import pytest
from fusion.gateway import openrouter
from fusion.gateway.errors import GatewayError
from fusion.gateway.openai_types import FusionOptions, PanelMemberIn
from fusion_contracts import FusedResult, MemberOutcome, Source, Timings
from fusion_contracts.result import (
    Analysis,
    AnswerRef,
    Contradiction,
    Coverage,
    Insight,
    ResultStatus,
    Stance,
)


def refused(
    model: str = "fusion",
    fusion: FusionOptions | None = None,
    plugins: list[dict[str, Any]] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        openrouter.route(model, fusion, plugins, tools)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_request"
    return caught.value


# --- the slug ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openrouter/fusion", "fusion"),
        ("fusion", "fusion"),
        ("fusion/solo", "fusion/solo"),
        ("alpha", "alpha"),
    ],
)
def test_the_openrouter_slug_is_an_alias_of_fusion(model: str, expected: str) -> None:
    assert openrouter.gateway_model(model) == expected
    assert openrouter.route(model, None, None, None) == openrouter.Routed(expected, None, None)


def test_a_request_without_openrouter_shapes_is_unchanged() -> None:
    options = FusionOptions(quorum=2)
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert openrouter.route("alpha", options, [{"id": "web"}], tools) == openrouter.Routed(
        "alpha", options, tools
    )


# --- the plugin ----------------------------------------------------------------------------------


def test_the_plugin_sets_panel_judge_and_tool_calls() -> None:
    plugin = {"id": "fusion", "analysis_models": ["alpha", "beta"], "model": "beta", "max_tool_calls": 3}
    routed = openrouter.route("openrouter/fusion", None, [plugin], None)

    assert routed.model == "fusion"
    assert routed.fusion == FusionOptions(panel=["alpha", "beta"], judge="beta", max_tool_calls=3)
    assert routed.tools is None


def test_the_plugin_preset_is_a_preset_of_the_catalog() -> None:
    routed = openrouter.route("openrouter/fusion", None, [{"id": "fusion", "preset": "solo"}], None)
    assert routed.model == "fusion/solo"
    assert routed.fusion == FusionOptions()


def test_a_plugin_preset_that_agrees_with_the_models_is_fine_and_another_is_a_400() -> None:
    assert openrouter.route("fusion/solo", None, [{"id": "fusion", "preset": "solo"}], None).model == (
        "fusion/solo"
    )
    error = refused("fusion/duo", plugins=[{"id": "fusion", "preset": "solo"}])
    assert "'duo'" in error.message
    assert "'solo'" in error.message


def test_a_disabled_plugin_and_other_plugins_change_nothing() -> None:
    plugins: list[dict[str, Any]] = [
        {"id": "fusion", "enabled": False, "analysis_models": ["alpha"]},
        {"id": "response-healing"},
    ]
    assert openrouter.route("alpha", None, plugins, None) == openrouter.Routed("alpha", None, None)


def test_the_plugin_on_a_catalog_model_fuses_with_that_model_as_the_judge() -> None:
    # OpenRouter: "when you attach the plugin to your own model instead, the analyst defaults to it".
    routed = openrouter.route("alpha", None, [{"id": "fusion", "analysis_models": ["beta"]}], None)
    assert routed.model == "fusion"
    assert routed.fusion == FusionOptions(panel=["beta"], judge="alpha")


@pytest.mark.parametrize(
    ("plugin", "fragment"),
    [
        ({"id": "fusion", "analysis_model": ["alpha"]}, "analysis_model"),
        ({"id": "fusion", "analysis_models": "alpha"}, "analysis_models"),
        ({"id": "fusion", "mode": "fast"}, "mode"),
    ],
)
def test_a_bad_plugin_is_a_400_naming_the_field(plugin: dict[str, Any], fragment: str) -> None:
    error = refused(plugins=[plugin])
    assert error.param == "plugins"
    assert "plugins[0] (fusion)" in error.message
    assert fragment in error.message


def test_two_fusion_plugins_are_a_400() -> None:
    assert "more than once" in refused(plugins=[{"id": "fusion"}, {"id": "fusion"}]).message


def test_ignored_settings_are_accepted() -> None:
    plugin = {"id": "fusion", "reasoning": {"effort": "high"}, "cache_control": {"type": "ephemeral"}}
    assert openrouter.route("fusion", None, [plugin], None).fusion == FusionOptions()


# --- the server tool -----------------------------------------------------------------------------


def test_the_server_tool_fuses_the_requests_model_as_judge_and_leaves_the_other_tools() -> None:
    other = {"type": "function", "function": {"name": "lookup"}}
    tool = {"type": "openrouter:fusion", "parameters": {"analysis_models": ["alpha", "beta"]}}
    routed = openrouter.route("alpha", None, None, [tool, other])

    assert routed.model == "fusion"
    assert routed.fusion == FusionOptions(panel=["alpha", "beta"], judge="alpha")
    assert routed.tools == [other]


def test_the_server_tool_alone_leaves_no_tools_and_its_model_is_the_judge() -> None:
    tool = {"type": "openrouter:fusion", "parameters": {"model": "beta"}}
    routed = openrouter.route("alpha", None, None, [tool])
    assert routed.tools is None
    assert routed.fusion == FusionOptions(judge="beta")


def test_the_server_tool_without_parameters_on_fusion_is_the_preset() -> None:
    routed = openrouter.route("fusion/solo", None, None, [{"type": "openrouter:fusion"}])
    assert routed == openrouter.Routed("fusion/solo", FusionOptions(), None)


def test_sampling_settings_go_to_the_named_members() -> None:
    tool = {
        "type": "openrouter:fusion",
        "parameters": {
            "analysis_models": ["alpha", "beta"],
            "temperature": 0.7,
            "max_completion_tokens": 300,
        },
    }
    routed = openrouter.route("fusion", None, None, [tool])
    assert routed.fusion is not None
    assert routed.fusion.panel == [
        PanelMemberIn(model="alpha", temperature=0.7, max_tokens=300),
        PanelMemberIn(model="beta", temperature=0.7, max_tokens=300),
    ]


def test_sampling_settings_without_named_members_leave_the_presets_panel_alone() -> None:
    tool = {"type": "openrouter:fusion", "parameters": {"temperature": 0.7}}
    routed = openrouter.route("fusion", None, None, [tool])
    assert routed.fusion == FusionOptions()


def test_the_research_tools_are_mapped_to_the_gateways() -> None:
    inner = [
        {"type": "openrouter:web_search", "parameters": {"max_results": 3, "engine": "exa"}},
        {"type": "openrouter:web_fetch", "parameters": {"excluded_domains": ["example.com"]}},
    ]
    routed = openrouter.route("fusion", None, [{"id": "fusion", "tools": inner}], None)
    assert routed.fusion is not None
    assert routed.fusion.tools == [
        {"type": "web_search", "max_results": 3},
        {"type": "web_fetch", "excluded_domains": ["example.com"]},
    ]


def test_no_research_tools_is_an_empty_list() -> None:
    routed = openrouter.route("fusion", None, [{"id": "fusion", "tools": []}], None)
    assert routed.fusion is not None
    assert routed.fusion.tools == []


def test_an_unknown_research_tool_is_a_400() -> None:
    error = refused(plugins=[{"id": "fusion", "tools": [{"type": "openrouter:image_generation"}]}])
    assert "openrouter:image_generation" in error.message


def test_two_server_tools_are_a_400() -> None:
    error = refused(tools=[{"type": "openrouter:fusion"}, {"type": "openrouter:fusion"}])
    assert error.param == "tools"


def test_a_bad_server_tool_is_a_400() -> None:
    error = refused(tools=[{"type": "openrouter:fusion", "parameters": {"max_tool_calls": "many"}}])
    assert "tools[0] (openrouter:fusion)" in error.message


# --- settings given twice ------------------------------------------------------------------------


def test_plugin_and_tool_agreeing_are_merged() -> None:
    routed = openrouter.route(
        "fusion",
        None,
        [{"id": "fusion", "analysis_models": ["alpha"]}],
        [{"type": "openrouter:fusion", "parameters": {"analysis_models": ["alpha"], "max_tool_calls": 2}}],
    )
    assert routed.fusion == FusionOptions(panel=["alpha"], max_tool_calls=2)


def test_plugin_and_tool_disagreeing_are_a_400() -> None:
    error = refused(
        plugins=[{"id": "fusion", "model": "alpha"}],
        tools=[{"type": "openrouter:fusion", "parameters": {"model": "beta"}}],
    )
    assert "model is given twice" in error.message


def test_the_fusion_object_keeps_its_own_settings_and_agreeing_ones_pass() -> None:
    options = FusionOptions(panel=["alpha"], quorum=1)
    routed = openrouter.route("fusion", options, [{"id": "fusion", "analysis_models": ["alpha"]}], None)
    assert routed.fusion == FusionOptions(panel=["alpha"], quorum=1)


def test_the_fusion_object_and_the_plugin_disagreeing_are_a_400() -> None:
    error = refused(
        fusion=FusionOptions(panel=["beta"]), plugins=[{"id": "fusion", "analysis_models": ["alpha"]}]
    )
    assert "fusion.panel" in error.message
    assert error.param == "fusion"


def test_a_fractional_max_tool_calls_is_a_400() -> None:
    error = refused(plugins=[{"id": "fusion", "analysis_models": ["alpha"], "max_tool_calls": 2.5}])
    assert "max_tool_calls" in error.message


# --- the response item ---------------------------------------------------------------------------


def a_result(
    analysis: Analysis | None = None, status: ResultStatus = "complete", **extra: Any
) -> FusedResult:
    now = datetime.now(UTC)
    return FusedResult(
        request_id="r1",
        status=status,
        answer="Answer [1].",
        analysis=analysis,
        members=[
            MemberOutcome(index=0, model="alpha", status="ok", text="Alpha says."),
            MemberOutcome(index=1, model="beta", status="error", error="HTTP 429", error_status=429),
            MemberOutcome(index=2, model="gamma", status="timeout"),
            MemberOutcome(index=3, model="beta", status="ok", text="Beta says."),
        ],
        sources=[Source(url="https://example.org/a", title="A")],
        timings=Timings(submitted_at=now, completed_at=now, total_ms=1.0),
        **extra,
    )


def test_the_item_has_the_members_answers_failures_and_sources() -> None:
    item = openrouter.fusion_output_item(a_result(), "fusion_r1")

    assert item["type"] == "openrouter:fusion"
    assert item["id"] == "fusion_r1"
    assert item["status"] == "completed"
    assert item["responses"] == [
        {"model": "alpha", "content": "Alpha says."},
        {"model": "beta", "content": "Beta says."},
    ]
    assert item["failed_models"] == [
        {"model": "beta", "error": "HTTP 429", "status_code": 429},
        {"model": "gamma", "error": "timeout"},
    ]
    assert item["sources"] == [{"url": "https://example.org/a", "title": "A"}]
    assert "analysis" not in item  # the judge wrote none, as OpenRouter omits it then
    assert "error" not in item
    assert "failure_reason" not in item


def test_a_degraded_result_says_why() -> None:
    result = a_result(status="partial", error="1 of 4 members failed", failure_reason="some_members_failed")
    item = openrouter.fusion_output_item(result, "fusion_r1")
    assert item["error"] == "1 of 4 members failed"
    assert item["failure_reason"] == "some_members_failed"


def test_a_full_panel_has_no_failed_models() -> None:
    result = a_result()
    result = result.model_copy(update={"members": [m for m in result.members if m.status == "ok"]})
    assert "failed_models" not in openrouter.fusion_output_item(result, "x")


def test_the_analysis_names_models_as_openrouter_does() -> None:
    alpha, beta = AnswerRef(member=0, model="alpha"), AnswerRef(member=3, model="beta")
    analysis = Analysis(
        consensus=["Both agree."],
        contradictions=["in words"],
        blind_spots=["Nobody said why."],
        contradiction_details=[
            Contradiction(
                topic="Speed",
                stances=[Stance(stance="Fast", answers=[alpha]), Stance(stance="Slow", answers=[beta])],
            )
        ],
        partial_coverage_details=[Coverage(point="Only alpha saw it.", answers=[alpha])],
        unique_insight_details=[Insight(insight="Beta's idea.", answer=beta)],
    )
    item = openrouter.fusion_output_item(a_result(analysis), "x")

    assert item["analysis"] == {
        "consensus": ["Both agree."],
        "contradictions": [
            {
                "topic": "Speed",
                "stances": [{"model": "alpha", "stance": "Fast"}, {"model": "beta", "stance": "Slow"}],
            }
        ],
        "partial_coverage": [{"point": "Only alpha saw it.", "models": ["alpha"]}],
        "unique_insights": [{"insight": "Beta's idea.", "model": "beta"}],
        "blind_spots": ["Nobody said why."],
    }


def test_an_analysis_in_words_only_keeps_its_words() -> None:
    analysis = Analysis(
        contradictions=["A vs B"], partial_coverage=["only some"], unique_insights=["one idea"]
    )
    shaped = openrouter.analysis_shape(analysis)
    assert shaped["contradictions"] == [{"topic": "A vs B", "stances": []}]
    assert shaped["partial_coverage"] == [{"point": "only some", "models": []}]
    assert shaped["unique_insights"] == [{"insight": "one idea", "model": ""}]
    assert shaped["consensus"] == []


def test_the_item_while_the_fusion_runs() -> None:
    assert openrouter.fusion_item_started("fusion_r1") == {
        "type": "openrouter:fusion",
        "id": "fusion_r1",
        "status": "in_progress",
    }


def test_a_judge_named_in_the_fusion_object_wins_over_the_requests_model() -> None:
    routed = openrouter.route("alpha", FusionOptions(judge="beta"), None, [{"type": "openrouter:fusion"}])
    assert routed.fusion == FusionOptions(judge="beta")
