"""What every research tool offers a panel member, and what it gives back."""

from dataclasses import dataclass
from typing import Any, Protocol

from fusion_contracts import Source


class ToolError(Exception):
    """A tool call that could not be carried out: arguments the tool cannot use, a refused URL, a
    backend that failed. Its message goes back to the model as the tool's result (so it must never
    hold a secret); the worker carries on."""


@dataclass(frozen=True, slots=True)
class ToolOutput:
    text: str
    """What the model reads (the tool loop bounds it and fences it as data)."""
    sources: tuple[Source, ...] = ()
    """The pages or documents in `text`, in the order the text gives them."""


class Tool(Protocol):
    """One tool as a model sees it, and how to run it. `name` matches `^[A-Za-z0-9_-]{1,64}$`;
    `parameters` is the JSON Schema of the arguments (an object). The tool loop validates the
    arguments against it before `run`, so `run` gets an object that fits."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...

    async def run(self, arguments: dict[str, Any]) -> ToolOutput: ...


def domain_matches(host: str, domains: list[str]) -> bool:
    """Whether `host` is one of `domains` or a subdomain of one (case-insensitive, a leading "*." or
    "." ignored)."""
    host = host.lower().rstrip(".")
    for entry in domains:
        domain = entry.lower().strip().removeprefix("*.").strip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


CALLER_HEADER = "X-Fusion-Caller"
"""Sent with every HTTP request a panel worker makes (model calls, fetches, searches, MCP): a Fusion
gateway refuses requests that carry it, so a panel member can never call Fusion itself."""
CALLER = "panel-worker"
