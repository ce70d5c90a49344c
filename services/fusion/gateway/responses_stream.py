"""A response's server-sent events (OpenAI's Responses streaming events), from a fusion's updates or
a provider's streamed chat completion."""

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fusion_contracts import FusionProgress

from fusion.gateway import openrouter, translate
from fusion.gateway.errors import GatewayError
from fusion.gateway.responses_shapes import (
    ResponseFrame,
    fusion_item_id,
    message_item,
    output_annotations,
    responses_usage,
    text_part,
)
from fusion.gateway.sse import SseData
from fusion.gateway.updates import Failed, Finished, KeepAlive, Progress, TextDelta, Update
from fusion.models import ModelError, ModelResponseError

Keep = Callable[[str], None]
"""Keeps a response's answer for `previous_response_id`, once it is complete."""


@dataclass
class ResponseEvents:
    """One response's server-sent events, numbered in order (OpenAI's Responses streaming events):
    `opening()` until the first text, `delta()` for each piece, then `closing()` or `failure()`.

    `lead` are output items ahead of the message, as they are while the text streams (a fusion's
    `openrouter:fusion` item, in progress); `closing()` gives them whole."""

    frame: ResponseFrame
    lead: list[dict[str, Any]] = field(default_factory=list)
    sequence: int = 0
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.frame.message_id, "output_index": len(self.lead), "content_index": 0}

    def opening(self) -> list[str]:
        started = self.frame.render("in_progress", [])
        message = {**message_item(self.frame.message_id, "", "in_progress"), "content": []}
        return [
            self._event("response.created", response=started),
            self._event("response.in_progress", response=started),
            *(
                self._event("response.output_item.added", output_index=index, item=item)
                for index, item in enumerate([*self.lead, message])
            ),
            self._event("response.content_part.added", **self._where(), part=text_part("", [])),
        ]

    def progress(self, event: FusionProgress) -> list[str]:
        """A fusion's progress as OpenRouter names it, on its `openrouter:fusion` item: a member's
        answer comes as `panel.delta` (the whole text: members do not stream) then `panel.completed`."""
        where = {"item_id": self.lead[0]["id"], "output_index": 0} if self.lead else {}
        fields = translate.progress_fields(event)
        kind = f"response.fusion_call.{event.event}"
        if event.event == "panel.completed" and event.text:
            delta = self._event(
                "response.fusion_call.panel.delta",
                **where,
                member_index=event.member_index,
                model=event.model,
                delta=event.text,
            )
            return [delta, self._event(kind, **where, **fields)]
        return [self._event(kind, **where, **fields)]

    def fusion_call(self, stage: str) -> str:
        """`response.fusion_call.in_progress` or `.completed`, around the fusion's progress."""
        where = {"item_id": self.lead[0]["id"], "output_index": 0} if self.lead else {}
        return self._event(f"response.fusion_call.{stage}", **where)

    def delta(self, text: str) -> str:
        self.parts.append(text)
        return self._event("response.output_text.delta", **self._where(), delta=text, logprobs=[])

    def closing(
        self,
        usage: dict[str, Any],
        annotations: list[dict[str, Any]] | None = None,
        lead: list[dict[str, Any]] | None = None,
        status: str = "completed",
        **extra: Any,
    ) -> list[str]:
        """The lead items whole (`lead`, in their order), the text's end, then the response."""
        text, notes, done = self.text, annotations or [], lead or []
        item = message_item(self.frame.message_id, text, status, notes)
        events = [
            *(
                self._event("response.output_item.done", output_index=i, item=led)
                for i, led in enumerate(done)
            ),
            self._event("response.output_text.done", **self._where(), text=text, logprobs=[]),
            self._event("response.content_part.done", **self._where(), part=text_part(text, notes)),
            self._event("response.output_item.done", output_index=len(self.lead), item=item),
        ]
        final = self.frame.render(status, [*done, item], usage, **extra)
        if status == "incomplete":
            final["incomplete_details"] = {"reason": "max_output_tokens"}
            return [*events, self._event("response.incomplete", response=final)]
        return [*events, self._event("response.completed", response=final)]

    def failure(self, error: GatewayError) -> list[str]:
        """An `error` event for clients that watch for it, then `response.failed`, the last event: its
        response carries the error, and the items so far, incomplete."""
        items = [*self.lead, message_item(self.frame.message_id, self.text)] if self.parts else self.lead
        output = [{**item, "status": "incomplete"} for item in items]
        extra = {"fusion": error.fusion} if error.fusion is not None else {}
        failed = self.frame.render("failed", output, **extra)
        failed["error"] = {"code": error.code, "message": error.message}
        return [
            self._event("error", code=error.code, message=error.message, param=error.param),
            self._event("response.failed", response=failed),
        ]


class ChunkReader:
    """A provider's streamed chat completion (OpenAI's chunk format, server-sent events) as its JSON
    chunks. `done` once `data: [DONE]` came."""

    def __init__(self) -> None:
        self._events = SseData()

    @property
    def done(self) -> bool:
        return self._events.done

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return _parsed(self._events.feed(data))

    def close(self) -> list[dict[str, Any]]:
        """The last event, when the stream ended without a blank line after it."""
        return _parsed(self._events.close())


def _parsed(events: list[str]) -> list[dict[str, Any]]:
    chunks = []
    for data in events:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError as error:
            raise ModelResponseError(f"the provider streamed malformed JSON: {error}") from error
        if isinstance(chunk, dict):
            chunks.append(chunk)
    return chunks


def _chunk_error(chunk: dict[str, Any]) -> GatewayError | None:
    """An error the provider sent in its stream (as OpenRouter does), as the gateway's error."""
    error = chunk.get("error")
    if error is None:
        return None
    message = error.get("message") if isinstance(error, dict) else str(error)
    return GatewayError(502, f"the provider failed mid-stream: {message}", "api_error", "upstream_error")


def _chunk_delta(chunk: dict[str, Any]) -> tuple[str, str | None]:
    """A chunk's text and finish reason."""
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return "", None
    delta = choices[0].get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return (content if isinstance(content, str) else ""), choices[0].get("finish_reason")


async def fusion_events(
    updates: AsyncIterator[Update], events: ResponseEvents, keep: Keep
) -> AsyncIterator[str]:
    """A fusion's updates as a response's events; `keep` gets the answer once it is complete."""
    for event in events.opening():
        yield event
    yield events.fusion_call("in_progress")
    async for update in updates:
        if isinstance(update, KeepAlive):
            yield ": keep-alive\n\n"
        elif isinstance(update, Progress):
            for event in events.progress(update.event):
                yield event
        elif isinstance(update, TextDelta):
            yield events.delta(update.text)
        elif isinstance(update, Failed):
            for event in events.failure(update.error):
                yield event
            return
        elif isinstance(update, Finished):
            yield events.fusion_call("completed")
            result = update.result
            closing = events.closing(
                responses_usage(translate.usage(result)),
                output_annotations(result, events.text),
                [openrouter.fusion_output_item(result, fusion_item_id(result.request_id))],
                fusion=translate.fusion_summary(result),
            )
            for event in closing:
                yield event
            keep(result.answer or "")
            return


async def _chunks(stream: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    reader = ChunkReader()
    async for piece in stream:
        for chunk in reader.feed(piece):
            yield chunk
        if reader.done:
            return
    for chunk in reader.close():
        yield chunk


async def passthrough_events(
    stream: AsyncIterator[bytes], events: ResponseEvents, keep: Keep
) -> AsyncIterator[str]:
    """A provider's streamed chat completion as a response's events."""
    for event in events.opening():
        yield event
    usage, finish, failure = None, None, None
    try:
        async for chunk in _chunks(stream):
            if failure := _chunk_error(chunk):
                break
            text, finished = _chunk_delta(chunk)
            finish = finished or finish
            usage = chunk["usage"] if isinstance(chunk.get("usage"), dict) else usage
            if text:
                yield events.delta(text)
    except TimeoutError as error:
        failure = GatewayError(504, str(error), "api_error", "upstream_timeout")
    except ModelError as error:
        failure = GatewayError(502, str(error), "api_error", "upstream_error")
    if failure is not None:
        for event in events.failure(failure):
            yield event
        return
    status = "incomplete" if finish == "length" else "completed"
    for event in events.closing(responses_usage(usage), status=status):
        yield event
    keep(events.text)
