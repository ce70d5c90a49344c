"""Fusion as a tool: an ordinary model that lists a tool named `fusion` may call it; the gateway runs
the fusion, hands the answer back as the tool result, and loops until the model answers. The tool
is recognised by its name alone; its arguments are a `question` (required) and a `preset`.

A model call here is an OpenAI request body in and a response body out, so the loop works with any
provider the catalog passes through. Only `fusion` calls are run here: a reply that calls any other
tool goes back to the client, whose tools they are.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fusion_contracts import FusedResult

from fusion.gateway.openai_types import FUSION_TOOL_NAME

CallModel = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
Fuse = Callable[[str, str | None], Awaitable[FusedResult]]


class FusionRefused(ValueError):
    """The fusion a tool call asked for cannot run (an unknown preset, say); the model is told why."""


def lists_fusion_tool(tools: list[dict[str, Any]] | None) -> bool:
    return any((tool.get("function") or {}).get("name") == FUSION_TOOL_NAME for tool in tools or [])


def _tool_calls(reply: dict[str, Any]) -> list[dict[str, Any]]:
    choices = reply.get("choices") or [{}]
    message = choices[0].get("message") or {}
    calls = message.get("tool_calls") or []
    return [call for call in calls if isinstance(call, dict)]


def _is_fusion(call: dict[str, Any]) -> bool:
    return (call.get("function") or {}).get("name") == FUSION_TOOL_NAME


def _question(call: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(question, preset, error) from a tool call's JSON arguments."""
    try:
        arguments = json.loads((call.get("function") or {}).get("arguments") or "{}")
    except json.JSONDecodeError:
        return None, None, "the arguments are not valid JSON"
    question = arguments.get("question") if isinstance(arguments, dict) else None
    if not isinstance(question, str) or not question.strip():
        return None, None, "the arguments need a non-empty 'question'"
    preset = arguments.get("preset")
    return question, preset if isinstance(preset, str) else None, None


def _tool_result(result: FusedResult) -> str:
    if result.answer:
        return result.answer
    return f"Fusion could not answer ({result.status}): {result.error or 'no detail'}"


def _add_usage(total: dict[str, int], reply: dict[str, Any]) -> None:
    for key, value in (reply.get("usage") or {}).items():
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value


async def run_tool_loop(
    body: dict[str, Any], call_model: CallModel, fuse: Fuse, max_rounds: int
) -> dict[str, Any]:
    """Returns the model's final reply, with usage summed over every model turn and the fusions
    listed under `fusion.tool_calls`."""
    messages = list(body["messages"])
    usage: dict[str, int] = {}
    fusions: list[dict[str, Any]] = []
    request = dict(body)
    reply: dict[str, Any] = {}
    for round_number in range(max_rounds):
        if round_number == max_rounds - 1:
            request["tool_choice"] = "none"  # the last turn must answer
        reply = await call_model({**request, "messages": messages})
        _add_usage(usage, reply)
        calls = _tool_calls(reply)
        last = round_number == max_rounds - 1
        # Past the last round a fusion call is not run (nothing could read its answer): it goes back
        # to the client with the reply, like a call to any other tool.
        if last or not calls or not all(_is_fusion(call) for call in calls):
            break
        messages.append(reply["choices"][0]["message"])
        for call in calls:
            question, preset, error = _question(call)
            if error is not None or question is None:
                content = f"Fusion was not run: {error}"
            else:
                try:
                    result = await fuse(question, preset)
                except FusionRefused as refused:
                    messages.append(
                        {
                            "role": "tool",
                            "tool_call_id": call.get("id"),
                            "content": f"Fusion was not run: {refused}",
                        }
                    )
                    continue
                fusions.append(
                    {"tool_call_id": call.get("id"), "request_id": result.request_id, "status": result.status}
                )
                _add_usage(usage, {"usage": _fusion_usage(result)})
                content = _tool_result(result)
            messages.append({"role": "tool", "tool_call_id": call.get("id"), "content": content})
        # A forced call ("required", or naming a function) has been honoured; forcing it again would loop.
        if request.get("tool_choice") not in (None, "auto", "none"):
            request["tool_choice"] = "auto"
    return {**reply, "usage": usage or reply.get("usage"), "fusion": {"tool_calls": fusions}}


def _fusion_usage(result: FusedResult) -> dict[str, int]:
    total = result.usage.total
    return {
        "prompt_tokens": total.input_tokens,
        "completion_tokens": total.output_tokens,
        "total_tokens": total.total_tokens,
    }
