"""The chat room's cost estimate: the dispatcher's own upper estimate, split by model."""

from decimal import Decimal
from pathlib import Path

import pytest
from fusion import costs
from fusion.catalog import Catalog, load_catalog
from fusion.studio.estimate import estimate_request, panel_of
from fusion_contracts import ChatMessage, FusionRequest, ModelSpec

CATALOG = """
replace = true
default_preset = "pair"

[providers.unit]
api = "openai"
base_url = "http://provider.test/v1"

[models.cheap]
provider = "unit"
id = "cheap"
input_usd_per_mtok = "1"
output_usd_per_mtok = "2"

[models.dear]
provider = "unit"
id = "dear"
input_usd_per_mtok = "3.5"
output_usd_per_mtok = "17.25"
max_output_tokens = 500

[models.free]
provider = "unit"
id = "free"

[presets.pair]
panel = [{ model = "cheap" }, { model = "dear" }]
judge = { model = "dear", max_tokens = 300 }

[presets.solo]
panel = [{ model = "dear" }]
judge = { model = "cheap" }
"""


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path: Path = tmp_path_factory.mktemp("catalog") / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return load_catalog(path)


def asking(question: str = "Why is the sky blue?", **fields: object) -> FusionRequest:
    return FusionRequest(messages=[ChatMessage(role="user", content=question)], **fields)


def test_a_preset_costs_what_the_dispatcher_would_estimate(catalog: Catalog) -> None:
    request = asking(preset="pair")

    found = estimate_request(request, catalog)

    members, judge = panel_of(request, catalog)
    assert found.usd == costs.estimate(request.messages, members, judge, catalog)
    assert [(part.role, part.model) for part in found.parts] == [
        ("member", "cheap"),
        ("member", "dear"),
        ("judge", "dear"),
    ]
    assert sum(part.usd for part in found.parts) == found.usd


def test_output_is_max_tokens_else_the_models_limit_else_the_default(catalog: Catalog) -> None:
    request = asking(
        panel=[ModelSpec(model="cheap"), ModelSpec(model="dear"), ModelSpec(model="cheap", max_tokens=64)]
    )
    request = request.model_copy(update={"judge": ModelSpec(model="dear", max_tokens=300)})

    parts = estimate_request(request, catalog).parts

    assert [part.output_tokens for part in parts[:3]] == [costs.DEFAULT_OUTPUT_TOKENS, 500, 64]
    assert parts[3].output_tokens == costs.ANALYSIS_OUTPUT_TOKENS + 300
    prompt = costs.prompt_tokens(request.messages)
    assert parts[0].usd == (Decimal(1) * prompt + Decimal(2) * costs.DEFAULT_OUTPUT_TOKENS) / costs.MILLION


def test_a_panel_of_one_calls_no_judge(catalog: Catalog) -> None:
    found = estimate_request(asking(preset="solo"), catalog)

    assert [part.role for part in found.parts] == ["member"]
    assert "judge" not in found.basis


def test_the_basis_says_when_a_model_has_no_price(catalog: Catalog) -> None:
    priced = estimate_request(asking(preset="pair"), catalog)
    unpriced = estimate_request(asking(panel=[ModelSpec(model="free")]), catalog)

    assert "free" not in priced.basis
    assert unpriced.usd == 0
    assert "count as free" in unpriced.basis


def test_a_custom_panel_without_a_judge_takes_the_default_presets(catalog: Catalog) -> None:
    members, judge = panel_of(asking(panel=[ModelSpec(model="cheap"), ModelSpec(model="free")]), catalog)

    assert [spec.model for spec in members] == ["cheap", "free"]
    assert judge == catalog.presets["pair"].judge
