"""fusion.gateway.translate: OpenAI chat completion bodies <-> Fusion contracts (pure functions)."""

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fusion.catalog import Catalog, load_catalog
from fusion.dispatcher.planning import Dispatch, plan_request
from fusion.gateway import translate
from fusion.gateway.errors import GatewayError
from fusion.gateway.openai_types import ChatCompletionRequest, ChatMessageIn
from fusion_contracts import (
    Analysis,
    ChatMessage,
    CostSummary,
    FusedResult,
    FusionRequest,
    JudgeOutcome,
    MemberOutcome,
    ModelSpec,
    Policy,
    ReplyTo,
    Source,
    Timings,
    Usage,
    UsageSummary,
)
from fusion_contracts.result import ResultStatus
from pydantic import ValidationError

OVERLAY = """
replace = true
default_preset = "duo"

[providers.unit]
api = "openai"
base_url = "http://provider.test/v1"

[models.alpha]
provider = "unit"
id = "vendor/alpha"

[models.beta]
provider = "unit"
id = "vendor/beta"

[models.judgy]
provider = "unit"
id = "vendor/judgy"

[presets.duo]
panel = [{ model = "alpha", temperature = 0.3 }, { model = "beta" }]
judge = { model = "judgy", temperature = 0.2, max_tokens = 256, seed = 5, system_prompt = "Be brief." }

[presets.solo]
panel = [{ model = "alpha" }]
judge = { model = "beta", temperature = 0.1 }
"""

REPLY_TO = ReplyTo(topic="fusion.replies.unit", partition=0)
CREATED = 1_700_000_000
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path: Path = tmp_path_factory.mktemp("catalog") / "catalog.toml"
    path.write_text(OVERLAY, encoding="utf-8")
    return load_catalog(path)


def body(
    model: str = "fusion", messages: list[dict[str, Any]] | None = None, **extra: Any
) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": model,
            "messages": messages or [{"role": "user", "content": "Why is the sky blue?"}],
            **extra,
        }
    )


def messages_in(*messages: dict[str, Any]) -> list[ChatMessageIn]:
    return [ChatMessageIn.model_validate(message) for message in messages]


def fusion_request(catalog: Catalog, request: ChatCompletionRequest, stream: bool = False) -> FusionRequest:
    return translate.to_fusion_request(request, catalog, "req-1", REPLY_TO, stream)


def invalid(error: pytest.ExceptionInfo[GatewayError], param: str | None) -> str:
    """The message of a 400 invalid_request_error, after checking its shape."""
    assert error.value.status == 400
    assert error.value.error_type == "invalid_request_error"
    assert error.value.code == "invalid_request"
    assert error.value.param == param
    return error.value.message


def a_result(
    status: ResultStatus = "complete", answer: str | None = "The fused answer.", error: str | None = None
) -> FusedResult:
    return FusedResult(
        request_id="req-1",
        status=status,
        release="quorum",
        answer=answer,
        answer_source="judge" if answer else None,
        analysis=Analysis(consensus=["Answer 1 and Answer 2 agree"], blind_spots=["sunsets"]),
        members=[
            MemberOutcome(
                index=0,
                model="alpha",
                status="ok",
                text="alpha says",
                usage=Usage(input_tokens=3, output_tokens=4),
                cost_usd=Decimal("0.0005"),
                latency_ms=12.5,
            ),
            MemberOutcome(index=1, model="beta", status="error", error="boom"),
        ],
        judge=JudgeOutcome(
            model="judgy", status="ok", usage=Usage(input_tokens=5, output_tokens=6), latency_ms=30.0
        ),
        usage=UsageSummary(
            by_model={"alpha": Usage(input_tokens=3, output_tokens=4)},
            total=Usage(input_tokens=8, output_tokens=10),
        ),
        cost=CostSummary(
            members_usd=Decimal("0.0005"), judge_usd=Decimal("0.012"), total_usd=Decimal("0.0125")
        ),
        error=error,
        timings=Timings(submitted_at=NOW, released_at=NOW, completed_at=NOW, total_ms=42.0, panel_ms=20.0),
        answered=1,
    )


# --- model names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [("fusion", True), ("fusion/solo", True), ("fusion/", True), ("fusionx", False), ("gpt-4o", False)],
)
def test_is_fusion_model(model: str, expected: bool) -> None:
    assert translate.is_fusion_model(model) is expected


def test_is_fusion_model_does_not_match_a_name_that_merely_contains_fusion() -> None:
    assert translate.is_fusion_model("my-fusion/x") is False
    assert translate.is_fusion_model("Fusion") is False


def test_plain_fusion_is_the_default_preset(catalog: Catalog) -> None:
    assert translate.preset_of("fusion", catalog) == "duo"


@pytest.mark.parametrize("preset", ["solo", "duo"])
def test_fusion_slash_preset_is_that_preset(catalog: Catalog, preset: str) -> None:
    assert translate.preset_of(f"fusion/{preset}", catalog) == preset


def test_the_built_in_catalog_default_preset() -> None:
    builtin = load_catalog()
    assert translate.preset_of("fusion", builtin) == builtin.default_preset


def test_an_unknown_preset_is_a_400_naming_the_options(catalog: Catalog) -> None:
    with pytest.raises(GatewayError) as caught:
        translate.preset_of("fusion/nope", catalog)
    message = invalid(caught, "model")
    assert "unknown preset 'nope'" in message
    assert "use one of: fusion, fusion/duo, fusion/solo" in message


# --- messages ----------------------------------------------------------------------------------


def test_string_content_is_kept() -> None:
    converted = translate.to_messages(
        messages_in({"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"})
    )
    assert converted == [
        ChatMessage(role="system", content="Be terse."),
        ChatMessage(role="user", content="Hi"),
    ]


def test_text_parts_are_joined() -> None:
    converted = translate.to_messages(
        messages_in(
            {
                "role": "user",
                "content": [{"type": "text", "text": "Why is the sky "}, {"type": "text", "text": "blue?"}],
            }
        )
    )
    assert converted == [ChatMessage(role="user", content="Why is the sky blue?")]


def test_developer_becomes_system_and_assistant_stays() -> None:
    converted = translate.to_messages(
        messages_in(
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Why?"},
        )
    )
    assert [message.role for message in converted] == ["system", "user", "assistant", "user"]
    assert converted[0].content == "Answer in French."


def test_a_tool_message_is_a_400() -> None:
    with pytest.raises(GatewayError) as caught:
        translate.to_messages(
            messages_in(
                {"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": "c1", "content": "42"}
            )
        )
    message = invalid(caught, "messages")
    assert "messages[1]" in message
    assert "'tool'" in message


def test_an_assistant_message_with_tool_calls_is_a_400() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with pytest.raises(GatewayError) as caught:
        translate.to_messages(
            messages_in(
                {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", "tool_calls": [call]}
            )
        )
    assert "messages[1]" in invalid(caught, "messages")


def test_an_image_part_is_a_400() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    with pytest.raises(GatewayError) as caught:
        translate.to_messages(messages_in({"role": "user", "content": parts}))
    message = invalid(caught, "messages")
    assert "messages[0]" in message
    assert "text content only" in message
    assert "image_url is not supported" in message


@pytest.mark.parametrize("content", ["", "   \n", [{"type": "text", "text": " "}]])
def test_blank_content_is_a_400(content: Any) -> None:
    with pytest.raises(GatewayError) as caught:
        translate.to_messages(messages_in({"role": "user", "content": content}))
    assert "must not be empty" in invalid(caught, "messages")


def test_missing_content_is_a_400() -> None:
    with pytest.raises(GatewayError) as caught:
        translate.to_messages(messages_in({"role": "user"}))
    assert "messages[0] has no content" in invalid(caught, "messages")


# --- requests ----------------------------------------------------------------------------------


def test_a_preset_request(catalog: Catalog) -> None:
    request = fusion_request(catalog, body("fusion/solo"), stream=True)
    assert request.request_id == "req-1"
    assert request.preset == "solo"
    assert request.panel is None
    assert request.judge is not None  # always explicit: the preset's judge, as it is in the catalog
    assert request.judge.model == "beta"
    assert request.policy == Policy()
    assert request.reply_to == REPLY_TO
    assert request.stream is True
    assert request.metadata == {"via": "gateway"}
    assert request.messages == [ChatMessage(role="user", content="Why is the sky blue?")]


def test_plain_fusion_names_the_default_preset(catalog: Catalog) -> None:
    request = fusion_request(catalog, body("fusion"))
    assert request.preset == "duo"
    assert request.stream is False


def test_a_custom_panel_of_names_and_objects(catalog: Catalog) -> None:
    options = {
        "panel": ["alpha", {"model": "beta", "temperature": 0.5, "seed": 3, "system_prompt": "Be kind."}]
    }
    request = fusion_request(catalog, body(fusion=options))
    assert request.preset is None
    assert request.panel == [
        ModelSpec(model="alpha"),
        ModelSpec(model="beta", temperature=0.5, seed=3, system_prompt="Be kind."),
    ]


def test_an_unknown_panel_model_is_a_400(catalog: Catalog) -> None:
    with pytest.raises(GatewayError) as caught:
        fusion_request(catalog, body(fusion={"panel": ["alpha", "nope"]}))
    message = invalid(caught, "fusion")
    assert "fusion.panel[1]" in message
    assert "unknown model 'nope'" in message


def test_an_out_of_range_panel_parameter_is_a_400(catalog: Catalog) -> None:
    with pytest.raises(GatewayError) as caught:
        fusion_request(catalog, body(fusion={"panel": [{"model": "alpha", "temperature": 5}]}))
    assert "fusion.panel[0]" in invalid(caught, "fusion")


def test_sampling_settings_go_onto_the_presets_judge(catalog: Catalog) -> None:
    request = fusion_request(catalog, body(temperature=0.9, max_tokens=50, seed=7, top_p=0.5))
    assert request.judge == ModelSpec(
        model="judgy", temperature=0.9, top_p=0.5, max_tokens=50, seed=7, system_prompt="Be brief."
    )
    assert request.preset == "duo"  # the panel is still the preset's


def test_max_completion_tokens_wins_over_max_tokens(catalog: Catalog) -> None:
    request = fusion_request(catalog, body("fusion/solo", max_tokens=50, max_completion_tokens=70))
    assert request.judge == ModelSpec(model="beta", temperature=0.1, max_tokens=70)


def test_a_single_override_keeps_the_rest_of_the_presets_judge(catalog: Catalog) -> None:
    request = fusion_request(catalog, body(seed=99))
    assert request.judge == ModelSpec(
        model="judgy", temperature=0.2, max_tokens=256, seed=99, system_prompt="Be brief."
    )


def test_a_named_judge_without_overrides(catalog: Catalog) -> None:
    request = fusion_request(catalog, body(fusion={"judge": "alpha"}))
    assert request.judge == ModelSpec(model="alpha")


def test_overrides_apply_onto_a_judge_object(catalog: Catalog) -> None:
    request = fusion_request(
        catalog, body(temperature=1.5, fusion={"judge": {"model": "alpha", "temperature": 0.1, "seed": 1}})
    )
    assert request.judge == ModelSpec(model="alpha", temperature=1.5, seed=1)


def test_an_unknown_judge_is_a_400(catalog: Catalog) -> None:
    with pytest.raises(GatewayError) as caught:
        fusion_request(catalog, body(fusion={"judge": "nope"}))
    assert "fusion.judge" in invalid(caught, "fusion")


def test_an_out_of_range_temperature_is_a_400(catalog: Catalog) -> None:
    with pytest.raises(GatewayError) as caught:
        fusion_request(catalog, body(temperature=3.0))
    assert "temperature" in invalid(caught, "temperature")


def test_policy_from_the_fusion_options(catalog: Catalog) -> None:
    request = fusion_request(catalog, body(fusion={"quorum": 1, "grace_s": 0.5, "deadline_s": 30}))
    assert request.policy == Policy(quorum=1, grace_s=0.5, deadline_s=30.0)


def test_unset_policy_options_keep_the_defaults(catalog: Catalog) -> None:
    request = fusion_request(catalog, body(fusion={"deadline_s": 12}))
    assert request.policy == Policy(deadline_s=12.0)


def test_an_out_of_range_deadline_is_a_400(catalog: Catalog) -> None:
    with pytest.raises(GatewayError) as caught:
        fusion_request(catalog, body(fusion={"deadline_s": 0}))
    assert "deadline_s" in invalid(caught, "fusion")


def test_a_quorum_larger_than_the_panel_is_a_400(catalog: Catalog) -> None:
    with pytest.raises(GatewayError) as caught:
        fusion_request(catalog, body(fusion={"panel": ["alpha"], "quorum": 2}))
    assert "quorum 2 is larger than the panel of 1" in invalid(caught, "fusion")


def test_a_request_without_a_user_message_is_a_400(catalog: Catalog) -> None:
    with pytest.raises(GatewayError) as caught:
        fusion_request(catalog, body(messages=[{"role": "system", "content": "Be terse."}]))
    assert "user message" in invalid(caught, "fusion")


def test_the_judge_model_does_not_depend_on_whether_a_sampling_setting_is_sent(catalog: Catalog) -> None:
    # `fusion/solo` with a custom panel: which model judges must not change because the client also
    # sent a temperature. The dispatcher resolves the effective judge, so compare its plans.
    options = {"panel": ["alpha", "alpha"]}
    plain = fusion_request(catalog, body("fusion/solo", fusion=options))
    tuned = fusion_request(catalog, body("fusion/solo", temperature=0.4, fusion=options))
    plain_plan = plan_request(plain, catalog, plain.submitted_at)
    tuned_plan = plan_request(tuned, catalog, tuned.submitted_at)
    assert isinstance(plain_plan, Dispatch)
    assert isinstance(tuned_plan, Dispatch)
    assert tuned_plan.plan.judge.temperature == 0.4
    assert plain_plan.plan.judge.model == tuned_plan.plan.judge.model


# --- responses ---------------------------------------------------------------------------------


TOKEN_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def tokens(usage: dict[str, Any]) -> dict[str, Any]:
    return {key: usage[key] for key in TOKEN_KEYS}


def test_usage_is_the_total_in_openai_names() -> None:
    usage = translate.usage(a_result())
    assert tokens(usage) == {"prompt_tokens": 8, "completion_tokens": 10, "total_tokens": 18}
    assert usage["cost"] == 0.0125


def test_usage_without_tokens_is_zero() -> None:
    result = a_result().model_copy(update={"usage": UsageSummary(), "cost": CostSummary()})
    assert translate.usage(result) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost": 0.0,
    }


def test_fusion_summary() -> None:
    summary = translate.fusion_summary(a_result())
    assert summary["request_id"] == "req-1"
    assert summary["status"] == "complete"
    assert summary["release"] == "quorum"
    assert summary["answer_source"] == "judge"
    assert summary["analysis"]["consensus"] == ["Answer 1 and Answer 2 agree"]
    assert summary["analysis"]["blind_spots"] == ["sunsets"]
    shown = ("index", "model", "status", "latency_ms", "usage", "error")
    assert [{key: member[key] for key in shown} for member in summary["members"]] == [
        {
            "index": 0,
            "model": "alpha",
            "status": "ok",
            "latency_ms": 12.5,
            "usage": {"input_tokens": 3, "output_tokens": 4},
            "error": None,
        },
        {
            "index": 1,
            "model": "beta",
            "status": "error",
            "latency_ms": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
            "error": "boom",
        },
    ]
    assert summary["members"][0]["cost_usd"] == "0.0005"
    assert summary["cost"]["total_usd"] == "0.0125"
    assert "text" not in summary["members"][0]  # the members' answers are not repeated
    assert summary["judge"]["model"] == "judgy"
    assert summary["judge"]["usage"] == {"input_tokens": 5, "output_tokens": 6}
    assert summary["timings"]["total_ms"] == 42.0
    assert summary["timings"]["submitted_at"] == "2026-01-02T03:04:05Z"


def test_a_completion_is_plain_json() -> None:
    # The gateway hands these dicts to FastAPI's JSONResponse (json.dumps) as they are.
    completion = translate.completion(a_result(), "fusion", CREATED)
    assert json.loads(json.dumps(completion)) == completion


def test_fusion_summary_without_analysis_or_judge() -> None:
    result = a_result().model_copy(update={"analysis": None, "judge": None})
    summary = translate.fusion_summary(result)
    assert summary["analysis"] is None
    assert summary["judge"] is None


def test_completion_shape() -> None:
    result = a_result()
    completion = translate.completion(result, "fusion/solo", CREATED)
    assert completion == {
        "id": "chatcmpl-req-1",
        "object": "chat.completion",
        "created": CREATED,
        "model": "fusion/solo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The fused answer.", "annotations": []},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": translate.usage(result),
        "fusion": translate.fusion_summary(result),
    }
    assert tokens(completion["usage"]) == {"prompt_tokens": 8, "completion_tokens": 10, "total_tokens": 18}


def test_chunk_shape() -> None:
    assert translate.chunk("req-1", "fusion", CREATED, {"content": "Hi"}) == {
        "id": "chatcmpl-req-1",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "fusion",
        "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None, "logprobs": None}],
    }
    final = translate.chunk("req-1", "fusion", CREATED, {}, finish="stop")
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["choices"][0]["delta"] == {}


@pytest.mark.parametrize("status", ["complete", "partial"])
def test_a_result_with_an_answer_is_no_error(status: ResultStatus) -> None:
    assert translate.result_error(a_result(status)) is None


def test_a_rejected_result_is_a_400_with_its_reason() -> None:
    error = translate.result_error(a_result("rejected", None, "quorum 3 is larger than the panel of 2"))
    assert error is not None
    assert error.status == 400
    assert error.error_type == "invalid_request_error"
    assert error.message == "quorum 3 is larger than the panel of 2"
    assert "fusion" not in error.body()


def test_a_rejected_result_without_a_reason_still_says_something() -> None:
    error = translate.result_error(a_result("rejected", None, None))
    assert error is not None
    assert error.status == 400
    assert error.message


def test_a_failed_result_is_a_502_with_the_fusion_summary() -> None:
    result = a_result("failed", None, "no member answered")
    error = translate.result_error(result)
    assert error is not None
    assert error.status == 502
    assert error.error_type == "api_error"
    assert error.code == "fusion_failed"
    payload = error.body()
    assert payload["error"] == {
        "message": "no member answered",
        "type": "api_error",
        "param": None,
        "code": "fusion_failed",
    }
    assert payload["fusion"] == translate.fusion_summary(result)


# --- pass-through ------------------------------------------------------------------------------

GATEWAY_DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway-api.md"


def _documented(lead: str) -> set[str]:
    """The names in backticks of the paragraph of docs/gateway-api.md that starts with `lead`."""
    [paragraph] = [
        part for part in GATEWAY_DOC.read_text(encoding="utf-8").split("\n\n") if part.startswith(lead)
    ]
    return set(re.findall(r"`([a-z_]+)`", paragraph))


def test_the_documented_pass_through_fields_are_the_forwarded_ones() -> None:
    assert _documented("Request fields forwarded:") == translate.PASSTHROUGH_FIELDS
    assert _documented("Message fields forwarded:") == translate.PASSTHROUGH_MESSAGE_FIELDS


def test_a_pass_through_body_keeps_the_allowed_fields_for_the_catalogs_model() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            "model": "alpha",
            "messages": [{"role": "user", "content": "hi", "cache": True}],
            "temperature": 0.5,
            "stream": True,
            "fusion": {"quorum": 1},
            "models": ["elsewhere/model"],
            "provider": {"order": ["x"]},
            "top_k": 3,
            "seed": None,
        }
    )
    assert translate.passthrough_body(body, "vendor/alpha") == {
        "model": "vendor/alpha",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
    }


# --- strategies and failure reasons ------------------------------------------------------------


def test_the_strategy_and_analysis_temperature_come_from_the_fusion_options(catalog: Catalog) -> None:
    request = fusion_request(catalog, body(fusion={"strategy": "vote", "analysis_temperature": 0.3}))
    assert (request.strategy, request.analysis_temperature) == ("vote", 0.3)
    assert fusion_request(catalog, body()).strategy is None  # the preset's


def test_an_unknown_strategy_is_refused_by_the_body_model() -> None:
    with pytest.raises(ValidationError, match="synthesize-once"):
        body(fusion={"strategy": "debate"})


def test_the_summary_names_the_strategy_the_source_and_why_it_is_partial() -> None:
    result = a_result("partial").model_copy(
        update={
            "strategy": "select",
            "answer_source": "selected",
            "selected_member": 0,
            "failure_reason": "judge_schema_mismatch",
            "error": "the judge chose '7', which is no answer",
        }
    )
    summary = translate.fusion_summary(result)
    assert summary["strategy"] == "select"
    assert (summary["answer_source"], summary["selected_member"]) == ("selected", 0)
    assert summary["failure_reason"] == "judge_schema_mismatch"
    assert summary["error"] == "the judge chose '7', which is no answer"


@pytest.mark.parametrize(
    ("reason", "status", "kind"),
    [
        ("rate_limited", 429, "rate_limit_error"),
        ("deadline", 504, "api_error"),
        ("all_members_failed", 502, "api_error"),
        (None, 502, "api_error"),
    ],
)
def test_a_failed_result_maps_its_reason_to_a_status_and_code(
    reason: str | None, status: int, kind: str
) -> None:
    result = a_result("failed", None, "no panel member answered").model_copy(
        update={"failure_reason": reason}
    )
    error = translate.result_error(result)
    assert error is not None
    assert (error.status, error.error_type, error.code) == (status, kind, reason or "fusion_failed")
    assert error.body()["fusion"]["failure_reason"] == reason


@pytest.mark.parametrize("reason", ["budget_exceeded", "deadline", "invalid_request"])
def test_a_rejected_result_carries_its_reason_as_the_code(reason: str) -> None:
    result = a_result("rejected", None, "no").model_copy(update={"failure_reason": reason})
    error = translate.result_error(result)
    assert error is not None
    assert (error.status, error.code) == (400, reason)


# --- research tools and sources ------------------------------------------------------------------


def test_tools_and_their_limit_come_from_the_fusion_options(catalog: Catalog) -> None:
    tools = [
        {"type": "web_search", "max_results": 3, "allowed_domains": ["example.org"]},
        {"type": "web_fetch"},
    ]
    request = fusion_request(catalog, body(fusion={"tools": tools, "max_tool_calls": 6}))
    assert [tool.type for tool in request.tools or []] == ["web_search", "web_fetch"]
    assert request.tools is not None
    assert request.tools[0].allowed_domains == ["example.org"]
    assert request.max_tool_calls == 6


def test_no_tools_option_leaves_the_presets_and_an_empty_list_turns_them_off(catalog: Catalog) -> None:
    assert fusion_request(catalog, body()).tools is None
    assert fusion_request(catalog, body(fusion={"tools": []})).tools == []


@pytest.mark.parametrize(
    "options",
    [
        {"tools": [{"type": "telnet"}]},
        {"tools": [{"type": "mcp"}]},
        {"tools": [{"type": "web_fetch", "max_results": 3}]},
        {"tools": [{"type": "web_search"}], "max_tool_calls": 17},
    ],
)
def test_invalid_tools_are_a_400(catalog: Catalog, options: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as error:
        fusion_request(catalog, body(fusion=options))
    assert invalid(error, "fusion")


def test_sources_become_annotations_and_tool_calls_server_tool_use() -> None:
    page = Source(url="https://site.example/kestrel", title="Kestrel Bridge")
    unused = Source(url="https://site.example/other", title="Other")
    result = a_result(
        answer="It opened in 1937 [1].\n\nSources:\n[1] Kestrel Bridge <https://site.example/kestrel>"
    )
    members = [
        result.members[0].model_copy(update={"sources": [page, unused], "tool_calls": {"web_search": 2}})
    ]
    members.append(result.members[1].model_copy(update={"tool_calls": {"web_search": 1, "web_fetch": 1}}))
    result = result.model_copy(update={"sources": [page, unused], "members": members})

    response = translate.completion(result, "fusion", CREATED)

    (note,) = response["choices"][0]["message"]["annotations"]
    assert note["type"] == "url_citation"
    citation = note["url_citation"]
    assert citation["url"] == page.url
    assert (
        response["choices"][0]["message"]["content"][citation["start_index"] : citation["end_index"]] == "[1]"
    )
    assert response["usage"]["server_tool_use"] == {"web_search_requests": 3, "web_fetch_requests": 1}
    summary = response["fusion"]
    assert summary["sources"] == [page.model_dump(), unused.model_dump()]
    assert summary["members"][0]["tool_calls"] == {"web_search": 2}


def test_no_tools_means_no_server_tool_use() -> None:
    assert "server_tool_use" not in translate.completion(a_result(), "fusion", CREATED)["usage"]
