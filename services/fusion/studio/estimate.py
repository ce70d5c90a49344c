"""What a fused request may cost before it is sent: pure, from the catalog's prices.

The figure is the one the dispatcher checks `max_cost_usd` against (`fusion.costs.estimate`), split by
model so the chat room can say where it comes from. It leans high: every call is assumed to write
its whole output limit (`max_tokens`, else the model's `max_output_tokens`, else
`costs.DEFAULT_OUTPUT_TOKENS`), and the judge to read the prompt and every answer twice."""

from dataclasses import dataclass
from decimal import Decimal

from fusion_contracts import FusionRequest, ModelSpec, Usage

from fusion import costs
from fusion.catalog import Catalog, Model

__all__ = ["Estimate", "PartEstimate", "estimate_request", "panel_of"]


@dataclass(frozen=True, slots=True)
class PartEstimate:
    role: str
    """`member` or `judge`."""
    model: str
    input_tokens: int
    output_tokens: int
    usd: Decimal


@dataclass(frozen=True, slots=True)
class Estimate:
    usd: Decimal
    prompt_tokens: int
    parts: list[PartEstimate]
    basis: str


def _output_limit(spec: ModelSpec, model: Model) -> int:
    return spec.max_tokens or model.max_output_tokens or costs.DEFAULT_OUTPUT_TOKENS


def _part(role: str, spec: ModelSpec, model: Model, input_tokens: int, output_tokens: int) -> PartEstimate:
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return PartEstimate(role, spec.model, input_tokens, output_tokens, costs.price(model, usage))


def panel_of(request: FusionRequest, catalog: Catalog) -> tuple[list[ModelSpec], ModelSpec]:
    """The members and the judge a request will have (its own panel, or its preset's)."""
    preset = catalog.preset(request.preset or catalog.default_preset)
    return list(request.panel or preset.panel), request.judge or preset.judge


def estimate_request(request: FusionRequest, catalog: Catalog) -> Estimate:
    members, judge = panel_of(request, catalog)
    prompt = costs.prompt_tokens(request.messages)
    parts = []
    for spec in members:
        model = catalog.model(spec.model)
        parts.append(_part("member", spec, model, prompt, _output_limit(spec, model)))
    if len(members) > 1:  # a panel of one calls no judge
        model = catalog.model(judge.model)
        answers = sum(part.output_tokens for part in parts)
        reads = 2 * (prompt + answers + costs.JUDGE_PROMPT_OVERHEAD_TOKENS)
        writes = costs.ANALYSIS_OUTPUT_TOKENS + _output_limit(judge, model)
        parts.append(_part("judge", judge, model, reads, writes))
    total = sum((part.usd for part in parts), Decimal(0))
    return Estimate(total, prompt, parts, _basis(prompt, len(members), any(not p.usd for p in parts)))


def _basis(prompt: int, members: int, unpriced: bool) -> str:
    words = [
        f"about {prompt} prompt tokens ({costs.CHARS_PER_TOKEN} characters a token)",
        f"{members} member{'s' if members != 1 else ''} each writing its whole output limit "
        f"(max_tokens, else the model's max_output_tokens, else {costs.DEFAULT_OUTPUT_TOKENS})",
    ]
    if members > 1:
        words.append(
            "the judge reading the prompt and every answer twice and writing an analysis and its "
            "own output limit"
        )
    basis = "An upper estimate at the catalog's prices: " + "; ".join(words) + "."
    if unpriced:
        basis += " Models without a price in the catalog count as free."
    return basis
