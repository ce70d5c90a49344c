"""The pictures of a report: score against cost (and against median latency, which tells configurations
apart when every model is free), score by domain or rubric section, and the latency CDF. matplotlib is
imported here only, so `fusion eval` runs without it (and says so)."""

from pathlib import Path
from typing import Any

from fusion.evaluation.report import Scored
from fusion.evaluation.statistics import mean


def write_plots(report: dict[str, Any], scored: list[Scored], out: Path) -> list[Path]:
    """PNG files in `out`; [] when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = [row for row in report["configurations"] if row["score"] is not None]
    paths = []

    figure, (by_cost, by_latency) = plt.subplots(1, 2, figsize=(12, 4.8))
    for axis, key, label in (
        (by_cost, "cost", "cost per item (USD)"),
        (by_latency, "latency", "median latency (s)"),
    ):
        for row in rows:
            x = (
                float(row["cost_usd"]["per_item"])
                if key == "cost"
                else (row["latency_ms"]["p50"] or 0) / 1000
            )
            low, high = row["ci95"]
            axis.errorbar(
                x, row["score"], yerr=[[row["score"] - low], [high - row["score"]]], fmt="o", capsize=4
            )
            axis.annotate(
                row["name"], (x, row["score"]), textcoords="offset points", xytext=(6, 4), fontsize=8
            )
        free = key == "cost" and all(float(row["cost_usd"]["per_item"]) == 0 for row in rows)
        axis.set_xlabel(label + (" (every model here is free)" if free else ""))
        axis.set_ylabel("score (95% interval)")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    figure.suptitle(f"{report['dataset']}: score against cost and latency")
    figure.tight_layout()
    paths.append(_save(figure, out / "score-cost.png"))

    groups = "by_section" if any(row["by_section"] for row in rows) else "by_domain"
    names = sorted({name for row in rows for name in row[groups]})
    if names:
        figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(names) * max(len(rows), 1) / 2), 4.8))
        width = 0.8 / max(len(rows), 1)
        for index, row in enumerate(rows):
            xs = [i + index * width for i in range(len(names))]
            axis.bar(xs, [row[groups].get(name, 0.0) for name in names], width, label=row["name"])
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30, ha="right")
        axis.set_ylabel("score")
        axis.set_ylim(0, 1.02)
        axis.set_title(f"{report['dataset']}: score by {'section' if groups == 'by_section' else 'domain'}")
        axis.legend(fontsize=8)
        figure.tight_layout()
        paths.append(_save(figure, out / f"score-{'section' if groups == 'by_section' else 'domain'}.png"))

    figure, axis = plt.subplots(figsize=(7, 4.8))
    for row in rows:
        latencies = sorted(s.latency_ms / 1000 for s in scored if s.config == row["name"] and s.error is None)
        if latencies:
            axis.step(
                latencies,
                [(i + 1) / len(latencies) for i in range(len(latencies))],
                where="post",
                label=f"{row['name']} (mean {mean(latencies):.1f} s)",
            )
    axis.set_xlabel("latency (s)")
    axis.set_ylabel("share of answers")
    axis.set_title(f"{report['dataset']}: latency CDF")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    paths.append(_save(figure, out / "latency-cdf.png"))
    return paths


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
