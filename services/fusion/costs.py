"""What model calls cost, exactly, in US dollars. Pure functions on `Decimal`s, no floats.

A call's cost is the one the provider reported (OpenRouter reports `usage.cost`) or else the catalog's
prices per million input and output tokens. Before dispatch, `estimate` bounds a request's cost from
its prompt size and the output limits, for `max_cost_usd`.
"""

import math
from collections.abc import Iterable
from decimal import Decimal

from fusion_contracts import ChatMessage, ModelSpec, Usage

from fusion.catalog import Catalog, Model

MILLION = Decimal(1_000_000)
CHARS_PER_TOKEN = 3
"""Conservative: most tokenizers average closer to 4 characters per token for English."""
DEFAULT_OUTPUT_TOKENS = 1024
"""Output assumed for a call without `max_tokens`, when the model has no `max_output_tokens`."""
ANALYSIS_OUTPUT_TOKENS = 1024
JUDGE_PROMPT_OVERHEAD_TOKENS = 600


def price(model: Model, usage: Usage) -> Decimal:
    return (
        model.input_usd_per_mtok * usage.input_tokens + model.output_usd_per_mtok * usage.output_tokens
    ) / MILLION


def call_cost(model: Model, usage: Usage, reported: Decimal | None) -> Decimal:
    return reported if reported is not None else price(model, usage)


def total(costs: Iterable[Decimal | None]) -> Decimal:
    return sum((cost for cost in costs if cost is not None), Decimal(0))


def prompt_tokens(messages: list[ChatMessage]) -> int:
    return math.ceil(sum(len(message.content) for message in messages) / CHARS_PER_TOKEN) + 8 * len(messages)


def _output_limit(spec: ModelSpec, model: Model) -> int:
    return spec.max_tokens or model.max_output_tokens or DEFAULT_OUTPUT_TOKENS


def estimate(
    messages: list[ChatMessage], members: list[ModelSpec], judge: ModelSpec, catalog: Catalog
) -> Decimal:
    """An upper-leaning estimate: every member writes its output limit, and the judge (unless the panel
    is of one) reads the prompt and every answer twice (analysis, then final) and writes an analysis
    and its own output limit."""
    prompt = prompt_tokens(messages)
    cost = Decimal(0)
    answers = 0
    for spec in members:
        model = catalog.model(spec.model)
        output = _output_limit(spec, model)
        answers += output
        cost += price(model, Usage(input_tokens=prompt, output_tokens=output))
    if len(members) == 1:  # a panel of one calls no judge
        return cost
    model = catalog.model(judge.model)
    judge_input = 2 * (prompt + answers + JUDGE_PROMPT_OVERHEAD_TOKENS)
    judge_output = ANALYSIS_OUTPUT_TOKENS + _output_limit(judge, model)
    return cost + price(model, Usage(input_tokens=judge_input, output_tokens=judge_output))
