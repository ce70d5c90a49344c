"""`fusion eval` end to end, as a user runs it: the command, through the session's services on the real
broker, with stand-in models whose correctness is set per model (`right-30` answers 30% of the items
right, `right-80` 80%, see fusion_testing/standin.py). The scores it reports must match those shares
within their intervals; a second run of the same command must make no model call at all."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fusion.settings import Settings

from fusion_testing.stack import Services

pytestmark = [pytest.mark.kafka]

ITEMS = 60
CONFIGS = [
    "low=right-30",
    "high=right-80",
    "fused=panel:right-30,right-80,right-80/judge:right-80",
]


def _dataset(path: Path, kind: str = "short", items: int = ITEMS) -> Path:
    """Questions whose answer is a code word written in them; `rubric` items give one criterion for
    the code word and one error, `pairwise` items the question alone."""
    with path.open("w", encoding="utf-8") as out:
        for n in range(items):
            code = f"w{n:03d}q"
            item: dict[str, Any] = {
                "id": f"code-{n}",
                "question": f"Item {n}: the code word is «{code}». Which is it?",
                "domain": "odd" if n % 2 else "even",
            }
            if kind == "short":
                item["answer"] = code
            elif kind == "rubric":
                item["sections"] = [
                    {
                        "name": "Accuracy",
                        "criteria": [
                            {"id": "code", "text": "Gives the code word", "weight": 10},
                            {"id": "other", "text": "Gives another code word", "weight": -5},
                        ],
                    }
                ]
            out.write(json.dumps(item) + "\n")
    return path


def _fusion_eval(
    settings: Settings,
    dataset: Path,
    out: Path,
    *,
    max_cost: str = "5",
    expect: int = 0,
    configs: list[str] = CONFIGS,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    env = {
        **os.environ,
        "FUSION_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FUSION_CATALOG": str(settings.catalog),
    }
    args = [
        sys.executable,
        "-m",
        "fusion.cli.main",
        "eval",
        str(dataset),
        "--out",
        str(out),
        "--no-progress",
        "--concurrency",
        "8",
        "--max-cost",
        max_cost,
        *extra,
    ]
    for config in configs:
        args += ["-c", config]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == expect, done.stderr
    if expect != 0:
        return {"stderr": done.stderr}
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def _model_calls(standin: str) -> int:
    total: int = httpx.get(f"{standin}/v1/stats").json()["total"]
    return total


def test_scores_match_the_set_shares_and_a_rerun_calls_no_model(
    settings: Settings, services: Services, standin: str, tmp_path: Path
) -> None:
    dataset = _dataset(tmp_path / "codes.jsonl")
    out = tmp_path / "report"
    before = _model_calls(standin)

    refused = _fusion_eval(settings, dataset, out, max_cost="0.01", expect=3)

    assert "is over --max-cost $0.01; nothing was sent" in refused["stderr"]
    assert _model_calls(standin) == before

    report = _fusion_eval(settings, dataset, out)

    rows = {row["name"]: row for row in report["configurations"]}
    for name, share in (("low", 0.3), ("high", 0.8)):
        row = rows[name]
        assert row["n"] == ITEMS
        assert row["errors"] == 0
        low, high = row["ci95"]
        assert low <= share <= high, f"{name}: {row['score']} [{low}, {high}] does not hold {share}"
        assert float(row["cost_usd"]["per_item"]) > 0
        assert row["latency_ms"]["p50"] is not None
        assert row["tokens"]["judge"] == 0  # a model alone: no judge call
    assert rows["fused"]["tokens"]["judge_per_item"] > 0
    assert report["baseline"] == "high"  # the better single model
    comparisons = {row["config"]: row for row in report["comparisons"]}
    assert comparisons["low"]["delta"] < 0
    assert comparisons["low"]["ci95"][1] < 0  # 30% against 80%: clearly worse
    assert comparisons["low"]["p_value"] < 0.01
    assert set(rows["high"]["by_domain"]) == {"odd", "even"}
    for plot in ("score-cost.png", "score-domain.png", "latency-cdf.png"):
        assert (out / plot).stat().st_size > 1000
    assert report["requests_sent"] == ITEMS * len(CONFIGS)

    calls = _model_calls(standin)
    again = _fusion_eval(settings, dataset, out)

    assert _model_calls(standin) == calls
    assert again["requests_sent"] == 0
    assert again["configurations"] == report["configurations"]


def test_a_rubric_set_is_graded_criterion_by_criterion_and_the_grades_are_kept(
    settings: Settings, services: Services, standin: str, tmp_path: Path
) -> None:
    """The stand-in grader finds the code word's criterion met when the answer holds it: the DRACO
    scores match the configurations' shares, by section too, and a rerun asks the grader nothing."""
    dataset = _dataset(tmp_path / "rubric.jsonl", "rubric", items=40)
    configs = ["low=right-30", "high=right-80"]

    report = _fusion_eval(settings, dataset, tmp_path / "out", configs=configs, extra=("--grader", "grader"))

    rows = {row["name"]: row for row in report["configurations"]}
    assert report["format"] == "rubric"
    assert report["grader"]["model"] == "grader"
    for name, share in (("low", 0.3), ("high", 0.8)):
        low, high = rows[name]["ci95"]
        assert low <= share <= high, rows[name]
        assert rows[name]["by_section"] == {"Accuracy": rows[name]["score"]}
        assert rows[name]["errors"] == 0
    # the answers, then a grading of each (two configurations giving one item the same answer may
    # share a grading: the grader's replies are cached by what it is asked)
    assert 2 * 40 < report["requests_sent"] <= 2 * 40 + 2 * 40

    calls = _model_calls(standin)
    again = _fusion_eval(settings, dataset, tmp_path / "out", configs=configs, extra=("--grader", "grader"))

    assert again["requests_sent"] == 0
    assert _model_calls(standin) == calls
    assert again["configurations"] == report["configurations"]


def test_a_pairwise_set_counts_wins_ties_and_losses_against_the_baseline(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    dataset = _dataset(tmp_path / "pairwise.jsonl", "pairwise", items=40)
    configs = ["high=right-80", "low=right-30"]

    report = _fusion_eval(settings, dataset, tmp_path / "out", configs=configs, extra=("--grader", "grader"))

    rows = {row["name"]: row for row in report["configurations"]}
    assert report["format"] == "pairwise"
    assert report["baseline"] == "high"  # the first configuration
    assert rows["high"]["score"] == 0.5
    outcomes = rows["low"]["pairwise"]
    assert sum(outcomes.values()) == 40
    assert outcomes["loss"] > outcomes.get("win", 0)
    assert rows["low"]["ci95"][1] < 0.5  # clearly worse than the baseline
    [comparison] = report["comparisons"]
    assert comparison["config"] == "low"
    assert comparison["delta"] < 0
    # the answers, then both orders of each pair (when both answers are the same, the two orders ask
    # the grader the same thing, and the second is answered from the store)
    assert 2 * 40 < report["requests_sent"] <= 2 * 40 + 2 * 40
