"""`fusion ask`: publish one request, show live progress, print the fused result."""

import argparse
import asyncio
import sys
import time

from aiokafka.errors import KafkaConnectionError, KafkaError
from fusion_contracts import (
    ChatMessage,
    FusedResult,
    FusionRequest,
    ModelSpec,
    PanelAnswer,
    PanelPlan,
    Policy,
    ToolSpec,
)
from pydantic import ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from fusion.cli.render import render_result
from fusion.cli.timeline import render_timeline
from fusion.client import FusionClient
from fusion.kafka.codec import describe
from fusion.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_RESULT = 0, 1, 2, 3


def build_request(args: argparse.Namespace) -> FusionRequest:
    messages = [ChatMessage(role="user", content=args.question)]
    if args.system:
        messages.insert(0, ChatMessage(role="system", content=args.system))
    policy = {
        key: value
        for key, value in {
            "quorum": args.quorum,
            "grace_s": args.grace,
            "deadline_s": args.deadline,
            "max_cost_usd": args.max_cost,
        }.items()
        if value is not None
    }
    panel = [ModelSpec(model=name.strip()) for name in args.panel.split(",")] if args.panel else None
    return FusionRequest(
        messages=messages,
        preset=args.preset,
        panel=panel,
        judge=ModelSpec(model=args.judge) if args.judge else None,
        policy=Policy(**policy),
        strategy=args.strategy,
        tools=tools_option(args.tools),
        max_tool_calls=args.max_tool_calls,
    )


def tools_option(value: str | None) -> list[ToolSpec] | None:
    """`--tools web_search,mcp:docs` as tool specs; "none" for none; None when not given."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["none"]:
        return []
    return [
        ToolSpec(type="mcp", server=name.removeprefix("mcp:"))
        if name.startswith("mcp:")
        else ToolSpec.model_validate({"type": name})
        for name in names
    ]


class Progress:
    """The live view on stderr: where the request is and the elapsed time, then each member's status
    as it changes (answering, answered with its latency and tool calls, or failed and why)."""

    def __init__(self) -> None:
        self.plan: PanelPlan | None = None
        self.answers: list[PanelAnswer] = []
        self.started = time.monotonic()

    def on_progress(self, message: PanelPlan | PanelAnswer) -> None:
        if isinstance(message, PanelPlan):
            self.plan = message
        else:
            self.answers.append(message)

    def line(self) -> Text:
        elapsed = f"{time.monotonic() - self.started:5.1f} s"
        if self.plan is None:
            return Text(f"⏳ waiting for the dispatcher · {elapsed}", style="cyan")
        members = len(self.plan.members)
        if len(self.answers) < members:
            failed = sum(1 for answer in self.answers if answer.status != "ok")
            extra = f" ({failed} failed)" if failed else ""
            return Text(f"⏳ members answered {len(self.answers)}/{members}{extra} · {elapsed}", style="cyan")
        return Text(f"⏳ all {members} members answered; the judge is writing · {elapsed}", style="cyan")

    def view(self) -> Group:
        return Group(self.line(), *self.member_lines())

    def member_lines(self) -> list[Text]:
        if self.plan is None:
            return []
        answered = {answer.member_index: answer for answer in self.answers}
        waited = time.monotonic() - self.started
        lines = []
        for index, member in enumerate(self.plan.members):
            answer = answered.get(index)
            name = f"  {index} {member.model}"
            if answer is None:
                lines.append(Text(f"{name}: answering… {waited:.1f} s", style="dim"))
            elif answer.status == "ok":
                tools = ", ".join(f"{tool} ×{count}" for tool, count in answer.tool_calls.items())
                extra = f", {tools}" if tools else ""
                lines.append(
                    Text(f"{name}: answered in {answer.latency_ms / 1000:.1f} s{extra}", style="green")
                )
            else:
                lines.append(Text(f"{name}: {answer.status}: {(answer.error or '')[:80]}", style="red"))
        return lines


async def _ask(request: FusionRequest, settings: Settings, show_progress: bool) -> FusedResult:
    progress = Progress()
    async with FusionClient(settings, watch_answers=show_progress) as client:
        if not show_progress:
            return await client.fuse(request)
        console = Console(stderr=True)
        with Live(progress.view(), console=console, refresh_per_second=10, transient=True) as live:
            task = asyncio.create_task(client.fuse(request, on_progress=progress.on_progress))
            while not task.done():
                live.update(progress.view())
                await asyncio.wait({task}, timeout=0.1)
            return await task


def run_ask(args: argparse.Namespace, settings: Settings) -> int:
    try:
        request = build_request(args)
    except ValidationError as error:
        print(f"fusion ask: invalid request: {describe(error)}", file=sys.stderr)
        return EXIT_USAGE
    show_progress = not args.json and sys.stderr.isatty()
    try:
        result = asyncio.run(_ask(request, settings, show_progress))
    except TimeoutError:
        print(
            f"fusion ask: no result for {request.request_id} within the deadline;"
            " are the services up? (make up)",
            file=sys.stderr,
        )
        return EXIT_NO_RESULT
    except (KafkaConnectionError, KafkaError, RuntimeError) as error:
        print(
            f"fusion ask: cannot use Kafka at {settings.kafka_bootstrap}: {error} (make up)", file=sys.stderr
        )
        return EXIT_NO_RESULT
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        console = Console()
        render_result(result, console)
        if args.timeline:
            render_timeline(result, console)
    return EXIT_OK if result.status in ("complete", "partial") else EXIT_FAILED
