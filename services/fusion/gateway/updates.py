"""What happens to a streamed fusion, as the gateway's APIs render it: text as the judge writes it,
keep-alives while it waits, then the result or an error. Each API (chat completions, responses,
messages) turns these into its own server-sent events."""

from dataclasses import dataclass

from fusion_contracts import FusedResult, FusionProgress

from fusion.gateway.errors import GatewayError


@dataclass(frozen=True, slots=True)
class TextDelta:
    """More of the answer. Joined in order, the deltas are the result's answer (a notice included,
    when the judge failed or another took over and the answer restarted)."""

    text: str


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Nothing yet: a stream sends a comment so proxies keep the connection."""


@dataclass(frozen=True, slots=True)
class Progress:
    """What the panel or the judge is doing (only for requests that asked for progress)."""

    event: FusionProgress


@dataclass(frozen=True, slots=True)
class Finished:
    """The result, with an answer (complete or partial); the last update."""

    result: FusedResult


@dataclass(frozen=True, slots=True)
class Failed:
    """No answer (a failed or rejected result, the deadline, a drain); the last update."""

    error: GatewayError


Update = TextDelta | KeepAlive | Progress | Finished | Failed
