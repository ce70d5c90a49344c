"""One panel task to one `PanelAnswer`: whatever happens, the task ends in an answer."""

import asyncio
import time
from decimal import Decimal
from typing import Any

from fusion_contracts import PanelAnswer, PanelTask, limits

from fusion.clock import seconds_until, utc_now
from fusion.models import CompletesChat, ModelError, ModelHTTPError


async def answer_task(task: PanelTask, models: CompletesChat, worker: str) -> PanelAnswer:
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
    try:
        async with asyncio.timeout(remaining):
            reply = await models.complete(task.member, task.messages, deadline=time.monotonic() + remaining)
    except TimeoutError:
        return outcome(status="timeout", error=f"no answer within the panel deadline ({remaining:.1f} s)")
    except ModelError as error:
        status = error.status_code if isinstance(error, ModelHTTPError) else None
        return outcome(status="error", error=str(error)[:2000], error_status=status)
    cost = reply.cost_usd or Decimal(0)
    text = reply.text.strip()
    if not text:
        return outcome(
            status="error", error="the model returned an empty answer", usage=reply.usage, cost_usd=cost
        )
    return outcome(status="ok", text=text[: limits.MAX_ANSWER_CHARS], usage=reply.usage, cost_usd=cost)
