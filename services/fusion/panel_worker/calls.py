"""One panel task to one `PanelAnswer`: whatever happens, the task ends in an answer."""

import asyncio
import time
from decimal import Decimal
from typing import Any

from fusion_contracts import PanelAnswer, PanelTask, limits

from fusion.clock import seconds_until, utc_now
from fusion.models import ModelError, ModelHTTPError, ModelReply, UsesTools
from fusion.research.loop import OnTool, Research, Toolbox, ToolLoopError, research
from fusion.research.toolkit import Toolkit

DEFAULT_RESULT_CHARS = 8_000


class Researcher:
    """What a member needs to research: its tools, how much of a result it reads, and who hears of
    each tool call (metrics)."""

    def __init__(
        self, toolkit: Toolkit, result_chars: int = DEFAULT_RESULT_CHARS, on_tool: OnTool | None = None
    ) -> None:
        self.toolkit = toolkit
        self.result_chars = result_chars
        self.on_tool = on_tool

    async def answer(self, models: UsesTools, task: PanelTask, deadline: float) -> Research:
        async with self.toolkit.tools(task.tools) as tools:
            return await research(
                models,
                task.member,
                task.messages,
                Toolbox(tools),
                max_tool_calls=task.max_tool_calls,
                deadline=deadline,
                result_chars=self.result_chars,
                on_tool=self.on_tool,
            )


async def answer_task(
    task: PanelTask, models: UsesTools, worker: str, researcher: Researcher | None = None
) -> PanelAnswer:
    started = time.perf_counter()

    def outcome(**fields: Any) -> PanelAnswer:
        return PanelAnswer(
            request_id=task.request_id,
            request_digest=task.request_digest,
            member_index=task.member_index,
            model=task.member.model,
            latency_ms=(time.perf_counter() - started) * 1000,
            finished_at=utc_now(),
            worker=worker,
            **fields,
        )

    remaining = seconds_until(task.deadline_at)
    if remaining <= 0:
        return outcome(status="timeout", error="the panel deadline passed before the call started")
    deadline = time.monotonic() + remaining
    reply: ModelReply | Research
    try:
        async with asyncio.timeout(remaining):
            if task.tools and researcher is not None:
                reply = await researcher.answer(models, task, deadline)
            else:
                reply = await models.complete(task.member, task.messages, deadline=deadline)
    except TimeoutError:
        return outcome(status="timeout", error=f"no answer within the panel deadline ({remaining:.1f} s)")
    except ModelError as error:
        status = error.status_code if isinstance(error, ModelHTTPError) else None
        return outcome(status="error", error=str(error)[:2000], error_status=status)
    except ToolLoopError as error:
        return outcome(status="error", error=str(error))
    found: dict[str, Any] = (
        {"sources": reply.sources, "tool_calls": dict(reply.tool_calls)}
        if isinstance(reply, Research)
        else {}
    )
    cost = reply.cost_usd or Decimal(0)
    text = reply.text.strip()
    if not text:
        return outcome(
            status="error",
            error="the model returned an empty answer",
            usage=reply.usage,
            cost_usd=cost,
            **found,
        )
    return outcome(
        status="ok", text=text[: limits.MAX_ANSWER_CHARS], usage=reply.usage, cost_usd=cost, **found
    )
