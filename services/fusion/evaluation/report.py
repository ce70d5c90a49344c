"""From scored items to the report: per configuration its mean score with a 95% bootstrap interval,
cost, latency and tokens; per configuration against the baseline (the best single model unless one
is named) the paired difference with its 95% paired bootstrap interval and a sign-test p-value.
Pure: the runner gathers the scores, `render` and `fusion.evaluation.plots` show them."""

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fusion.evaluation.configs import EvalConfig
from fusion.evaluation.statistics import bootstrap_ci, mean, paired_bootstrap, percentile, sign_test


@dataclass(frozen=True)
class Scored:
    """One item as one configuration answered it. `score` is in [0, 1]; a failed call scores 0 and is
    counted in `errors` (the user got no answer)."""

    item_id: str
    domain: str | None
    config: str
    score: float
    error: str | None
    cost_usd: Decimal
    latency_ms: float
    input_tokens: int
    output_tokens: int
    judge_tokens: int
    sections: dict[str, float] = field(default_factory=dict)
    outcome: str | None = None
    """For pairwise grading: win, tie or loss against the baseline."""


def _round(value: float, digits: int = 4) -> float:
    return round(value, digits)


def summarise(
    dataset: str,
    format: str,
    configs: list[EvalConfig],
    scored: list[Scored],
    *,
    baseline: str | None = None,
    grader: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The report as `report.json` holds it."""
    by_config: dict[str, list[Scored]] = defaultdict(list)
    for row in scored:
        by_config[row.config].append(row)
    rows = [_config_row(config, by_config.get(config.name, []), seed) for config in configs]
    chosen = baseline or _best_single(configs, rows)
    comparisons = []
    if chosen is not None:
        base = {row.item_id: row.score for row in by_config.get(chosen, [])}
        for config in configs:
            if config.name == chosen:
                continue
            comparisons.append(_compare(config.name, chosen, by_config.get(config.name, []), base, seed))
    return {
        "dataset": dataset,
        "format": format,
        "items": len({row.item_id for row in scored}),
        "baseline": chosen,
        "grader": grader,
        "configurations": rows,
        "comparisons": comparisons,
    }


def _config_row(config: EvalConfig, rows: list[Scored], seed: int) -> dict[str, Any]:
    scores = [row.score for row in rows]
    latencies = [row.latency_ms for row in rows if row.error is None]
    cost = sum((row.cost_usd for row in rows), Decimal(0))
    domains: dict[str, list[float]] = defaultdict(list)
    sections: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        domains[row.domain or "-"].append(row.score)
        for name, value in row.sections.items():
            sections[name].append(value)
    outcomes: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.outcome:
            outcomes[row.outcome] += 1
    ci = bootstrap_ci(scores, seed=seed) if scores else (0.0, 0.0)
    return {
        "name": config.name,
        "kind": config.kind,
        "score": _round(mean(scores)) if scores else None,
        "ci95": [_round(ci[0]), _round(ci[1])],
        "n": len(rows),
        "errors": sum(1 for row in rows if row.error is not None),
        "cost_usd": {
            "total": str(cost),
            "per_item": str((cost / len(rows)).quantize(Decimal("0.000000001"))) if rows else "0",
        },
        "latency_ms": {
            "p50": _round(percentile(latencies, 0.5), 1) if latencies else None,
            "p95": _round(percentile(latencies, 0.95), 1) if latencies else None,
        },
        "tokens": {
            "input": sum(row.input_tokens for row in rows),
            "output": sum(row.output_tokens for row in rows),
            "judge": sum(row.judge_tokens for row in rows),
            "judge_per_item": _round(sum(row.judge_tokens for row in rows) / len(rows), 1) if rows else 0,
        },
        "by_domain": {name: _round(mean(values)) for name, values in sorted(domains.items())},
        "by_section": {name: _round(mean(values)) for name, values in sorted(sections.items())},
        "pairwise": dict(outcomes) or None,
    }


def _best_single(configs: list[EvalConfig], rows: list[dict[str, Any]]) -> str | None:
    """The single model that scored highest; the best configuration when none is a single model."""
    singles = {config.name for config in configs if config.kind == "single"}
    candidates = [row for row in rows if row["score"] is not None and (not singles or row["name"] in singles)]
    if not candidates:
        return None
    return str(max(candidates, key=lambda row: row["score"])["name"])


def _compare(
    name: str, baseline: str, rows: list[Scored], base: dict[str, float], seed: int
) -> dict[str, Any]:
    """Paired over the items both answered (every item, unless a run was cut short)."""
    pairs = [(row.score, base[row.item_id]) for row in rows if row.item_id in base]
    if not pairs:
        return {"config": name, "baseline": baseline, "delta": None, "ci95": None, "p_value": None, "n": 0}
    ours, theirs = [a for a, _ in pairs], [b for _, b in pairs]
    delta, (low, high) = paired_bootstrap(ours, theirs, seed=seed)
    return {
        "config": name,
        "baseline": baseline,
        "delta": _round(delta),
        "ci95": [_round(low), _round(high)],
        "p_value": float(f"{sign_test(ours, theirs):.3g}"),
        "n": len(pairs),
        "better": sum(1 for a, b in pairs if a > b),
        "worse": sum(1 for a, b in pairs if a < b),
    }
