"""`fusion eval`'s configurations (command line and TOML) and its report: pure logic."""

import argparse
import hashlib
from decimal import Decimal
from pathlib import Path

import pytest
from fusion.catalog import Catalog, load_catalog
from fusion.cli.evaluate import dataset_of
from fusion.evaluation.configs import ConfigError, check_models, load_configs, parse_config
from fusion.evaluation.report import Scored, summarise

CATALOG = Path(__file__).parents[2] / "fusion_testing" / "catalog.toml"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(CATALOG)


def test_a_model_alone_is_a_panel_of_one_without_judge() -> None:
    config = parse_config("smollm2-135m@0.2")

    request = config.request("Why?", "r-1")

    assert config.kind == "single"
    assert config.name == "smollm2-135m@0.2"
    assert request.panel is not None
    assert [(m.model, m.temperature) for m in request.panel] == [("smollm2-135m", 0.2)]
    assert request.judge is None
    assert request.preset is None


def test_self_fusion_repeats_a_model_with_seeds_of_its_own() -> None:
    config = parse_config("self3=panel:smollm2-135m@0.7*3/judge:gemma3-270m/quorum:2")

    request = config.request("Why?", "r-1")

    assert config.name == "self3"
    assert config.kind == "panel"
    assert request.panel is not None
    assert [(m.model, m.temperature, m.seed) for m in request.panel] == [
        ("smollm2-135m", 0.7, 1),
        ("smollm2-135m", 0.7, 2),
        ("smollm2-135m", 0.7, 3),
    ]
    assert request.judge is not None
    assert request.judge.model == "gemma3-270m"
    assert request.policy.quorum == 2


def test_a_preset_keeps_its_own_panel_and_judge(catalog: Catalog) -> None:
    config = parse_config("preset:standin")

    request = config.request("Why?", "r-1")
    members, judge = config.models(catalog)

    assert request.preset == "standin"
    assert request.panel is None
    assert [m.model for m in members] == [m.model for m in catalog.preset("standin").panel]
    assert judge == catalog.preset("standin").judge


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("panel:a,b/quorum:3", "quorum 3 is larger than the panel of 2"),
        ("a*3", "a model alone has no count"),
        ("panel:a/colour:red", "expected judge:MODEL"),
        ("bad name=a", "name"),
        ("a@hot", "expected MODEL[@TEMPERATURE][*COUNT]"),
    ],
)
def test_a_bad_configuration_says_why(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("*", r"\*")):
        parse_config(text)


def test_an_unknown_model_is_refused_before_anything_is_sent(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        check_models([parse_config("panel:fast,nope")], catalog)


def test_a_toml_file_gives_each_kind_and_changes_the_digest_only_with_what_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "configs.toml"
    path.write_text(
        """
[[config]]
name = "alone"
model = "smollm2-135m"

[[config]]
name = "self"
panel = [{ model = "smollm2-135m", temperature = 0.7, count = 3 }]
judge = "smollm2-135m"

[[config]]
name = "renamed"
model = "smollm2-135m"
""",
        encoding="utf-8",
    )

    alone, self_fusion, renamed = load_configs(path)

    assert (alone.kind, self_fusion.kind) == ("single", "panel")
    assert self_fusion.panel is not None
    assert [m.seed for m in self_fusion.panel] == [1, 2, 3]
    assert alone.digest() == renamed.digest()  # the name is not what is sent
    assert alone.digest() != self_fusion.digest()


def test_a_toml_file_with_two_configurations_of_one_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "configs.toml"
    path.write_text('[[config]]\nname = "a"\nmodel = "x"\n[[config]]\nname = "a"\nmodel = "y"\n')

    with pytest.raises(ConfigError, match="two configurations are named 'a'"):
        load_configs(path)


def test_the_estimate_of_a_model_alone_has_no_judge_and_a_panel_more(catalog: Catalog) -> None:
    alone = parse_config("priced")
    panel = parse_config("panel:priced,priced/judge:priced")

    one = alone.estimate_usd("What does it cost?", catalog)
    fused = panel.estimate_usd("What does it cost?", catalog)

    assert one > 0
    assert fused > 2 * one  # two members, and two judge calls on top


def _scored(config: str, scores: list[float], cost: str = "0.001") -> list[Scored]:
    return [
        Scored(f"item-{i}", "geo" if i % 2 else "sci", config, s, None, Decimal(cost), 1000.0 + i, 10, 5, 0)
        for i, s in enumerate(scores)
    ]


def test_the_report_compares_every_configuration_with_the_best_single_model() -> None:
    configs = [parse_config("weak=fast"), parse_config("strong=slow"), parse_config("fused=panel:fast,slow")]
    weak = [1.0 if i % 4 == 0 else 0.0 for i in range(40)]  # 0.25
    strong = [1.0 if i % 4 else 0.0 for i in range(40)]  # 0.75
    fused = [1.0] * 36 + [0.0] * 4  # 0.9
    rows = _scored("weak", weak) + _scored("strong", strong) + _scored("fused", fused, "0.003")

    report = summarise("codes", "short", configs, rows)

    by_name = {row["name"]: row for row in report["configurations"]}
    assert report["baseline"] == "strong"  # the best single model, though "fused" scores higher
    assert by_name["weak"]["score"] == 0.25
    assert by_name["weak"]["ci95"][0] < 0.25 < by_name["weak"]["ci95"][1]
    assert by_name["fused"]["cost_usd"] == {"total": "0.120", "per_item": "0.003000000"}
    assert by_name["fused"]["latency_ms"]["p50"] == pytest.approx(1019.5)
    assert set(by_name["weak"]["by_domain"]) == {"geo", "sci"}
    comparisons = {row["config"]: row for row in report["comparisons"]}
    assert set(comparisons) == {"weak", "fused"}
    assert comparisons["weak"]["delta"] == -0.5
    assert comparisons["weak"]["ci95"][1] < 0
    assert comparisons["weak"]["p_value"] == pytest.approx(0.002221, abs=1e-6)  # 10 better, 30 worse
    assert comparisons["fused"]["delta"] == pytest.approx(0.15)


def test_a_failed_call_scores_zero_and_is_counted() -> None:
    configs = [parse_config("a=fast")]
    rows = _scored("a", [1.0, 1.0, 0.0])
    rows[2] = Scored("item-2", None, "a", 0.0, "failed: no member answered", Decimal(0), 5.0, 0, 0, 0)

    row = summarise("codes", "short", configs, rows)["configurations"][0]

    assert row["errors"] == 1
    assert row["score"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["latency_ms"]["p50"] == pytest.approx(1000.5)  # failed calls are not in the latencies


def test_a_sample_spreads_over_the_whole_set_and_a_limit_takes_its_start() -> None:
    sample = dataset_of(argparse.Namespace(dataset="short", format=None, limit=None, sample=10))
    first = dataset_of(argparse.Namespace(dataset="short", format=None, limit=10, sample=None))
    whole = dataset_of(argparse.Namespace(dataset="short", format=None, limit=0, sample=0))

    assert len(sample.items) == len(first.items) == 10
    assert sample.items[0] == whole.items[0]
    assert len({item.domain for item in sample.items}) > len({item.domain for item in first.items})
    assert len(whole.items) >= 150


def test_a_strategy_is_sent_and_changes_the_digest_only_when_given() -> None:
    plain = parse_config("preset:local")
    voted = parse_config("preset:local/strategy:vote")
    assert voted.strategy == "vote"
    assert voted.request("q", "r").strategy == "vote"
    assert plain.request("q", "r").strategy is None
    assert voted.digest() != plain.digest()
    # A configuration without a strategy keeps the digest it had before strategies existed, so the
    # answers stored by earlier runs still count.
    before = hashlib.sha256(plain.model_dump_json(exclude={"name", "strategy"}).encode()).hexdigest()[:16]
    assert plain.digest() == before


def test_a_model_alone_has_no_strategy() -> None:
    with pytest.raises(ConfigError, match="no strategy"):
        parse_config("smollm2-135m/strategy:vote")
