"""`fusion eval DATASET -c CONFIG ...`: a dataset against configurations, through the running services;
a table on the terminal, `report.json` and plots in the output folder, every answer in its SQLite
store (a rerun asks only for what is missing)."""

import argparse
import asyncio
import json
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from fusion.catalog import Catalog, CatalogError
from fusion.evaluation.configs import (
    ConfigError,
    EvalConfig,
    check_models,
    check_names,
    load_configs,
    parse_config,
)
from fusion.evaluation.datasets import Dataset, DatasetError, load_dataset, shipped
from fusion.evaluation.plots import write_plots
from fusion.evaluation.report import summarise
from fusion.evaluation.runner import Evaluation, Grader
from fusion.evaluation.store import Store
from fusion.settings import Settings

EXIT_USAGE = 2
EXIT_OVER_BUDGET = 3
EXIT_NO_KAFKA = 4


def add_parser(commands: Any) -> None:
    run = commands.add_parser(
        "eval",
        help="run a dataset against configurations and compare quality, cost and latency",
        description="Configurations: MODEL (a catalog model alone), preset:NAME, or "
        "panel:M1,M2[@TEMP][*COUNT]/judge:J/quorum:N, each optionally NAME=...; or [[config]] tables in "
        "a TOML file (--configs). Datasets: a JSONL file, or a shipped set: " + ", ".join(shipped()) + ".",
    )
    run.add_argument("dataset", help="a JSONL file (short, choice, rubric or pairwise; DRACO's file too)")
    run.add_argument("-c", "--config", action="append", default=[], help="a configuration (repeatable)")
    run.add_argument("--configs", type=Path, help="a TOML file of [[config]] tables")
    run.add_argument("--format", choices=["short", "choice", "rubric", "pairwise"], help="when not detected")
    run.add_argument("--limit", type=int, help="only the first N items (0: all)")
    run.add_argument("--sample", type=int, help="N items spread evenly over the set (every domain in it)")
    run.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    run.add_argument(
        "--max-cost", help="US dollars: refuse to start when the estimate of what is left is higher"
    )
    run.add_argument("--grader", help="the catalog model that grades rubric and pairwise sets")
    run.add_argument("--grader-repeats", type=int, default=1, help="grade each answer N times (majority)")
    run.add_argument("--grader-max-tokens", type=int, help="the grader's output limit")
    run.add_argument(
        "--baseline", help="the configuration others are compared with (default: best single model)"
    )
    run.add_argument("--out", type=Path, help="report folder (default .cache/eval/<dataset>)")
    run.add_argument("--store", type=Path, help="the run's SQLite file (default <out>/eval.sqlite)")
    run.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    run.add_argument("--estimate-only", action="store_true", help="print the cost estimate and stop")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (logs and CI)")
    run.set_defaults(run=run_eval)


def dataset_of(args: argparse.Namespace) -> Dataset:
    path = shipped().get(args.dataset) or Path(args.dataset)
    dataset = load_dataset(path, args.format)
    items = dataset.items
    if args.limit:  # 0 or none: the whole set
        items = items[: args.limit]
    if args.sample and args.sample < len(items):  # spread evenly, so every domain is in it
        items = tuple(items[i * len(items) // args.sample] for i in range(args.sample))
    return Dataset(dataset.name, dataset.format, items, dataset.source)


def _configs(args: argparse.Namespace, catalog: Catalog) -> list[EvalConfig]:
    configs = load_configs(args.configs) if args.configs else []
    configs += [parse_config(text) for text in args.config]
    if not configs:
        raise ConfigError("no configuration: give -c CONFIG (repeatable) or --configs FILE")
    check_names(configs)
    check_models(configs, catalog)
    if args.baseline and args.baseline not in {config.name for config in configs}:
        raise ConfigError(f"--baseline {args.baseline!r} names no configuration")
    return configs


def run_eval(args: argparse.Namespace, settings: Settings, catalog: Catalog) -> int:
    console = Console() if sys.stdout.isatty() else Console(width=160)
    errors = Console(stderr=True)
    try:
        dataset = dataset_of(args)
        configs = _configs(args, catalog)
        grader = Grader(args.grader, args.grader_repeats, args.grader_max_tokens) if args.grader else None
        if grader is not None:
            catalog.model(grader.model)
        budget = Decimal(args.max_cost) if args.max_cost is not None else None
    except (DatasetError, ConfigError, CatalogError, InvalidOperation) as error:
        errors.print(f"fusion eval: {error}")
        return EXIT_USAGE
    out = args.out or Path(".cache") / "eval" / dataset.name
    store = Store(args.store or out / "eval.sqlite")
    try:
        try:
            evaluation = Evaluation(
                settings,
                catalog,
                dataset,
                configs,
                store,
                concurrency=args.concurrency,
                grader=grader,
                baseline=args.baseline,
                console=errors,
            )
        except ValueError as error:
            errors.print(f"fusion eval: {error}")
            return EXIT_USAGE
        pending = evaluation.pending()
        estimate = evaluation.estimate_usd()
        errors.print(
            f"{dataset.name} ({dataset.format}, {len(dataset.items)} items) × {len(configs)} configurations: "
            f"{len(pending)} answers to ask for, estimated at most ${estimate:.4f}"
        )
        if budget is not None and estimate > budget:
            errors.print(
                f"fusion eval: the estimate ${estimate:.4f} is over --max-cost ${budget}; nothing was sent"
            )
            return EXIT_OVER_BUDGET
        if args.estimate_only:
            return 0
        try:
            scored = asyncio.run(evaluation.run(show_progress=not args.no_progress))
        except KafkaError as error:
            errors.print(f"fusion eval: Kafka at {settings.kafka_bootstrap} is not reachable: {error!r}")
            return EXIT_NO_KAFKA
    finally:
        store.close()
    grader_info = (
        {"model": grader.model, "repeats": grader.repeats, "cost_usd": str(evaluation.grader_cost_usd)}
        if grader is not None
        else None
    )
    report = summarise(
        dataset.name,
        dataset.format,
        configs,
        scored,
        baseline=evaluation.baseline,
        grader=grader_info,
        seed=args.seed,
    )
    report["source"] = dataset.source
    report["requests_sent"] = evaluation.calls
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(render(report))
    plots = write_plots(report, scored, out)
    console.print(f"report: {out / 'report.json'}")
    for path in plots:
        console.print(f"plot:   {path}")
    if not plots:
        console.print("no plots: matplotlib is not installed (pip install matplotlib)")
    return 0


def render(report: dict[str, Any]) -> Table:
    """The terminal's table: one row per configuration, its comparison with the baseline beside it."""
    compared = {row["config"]: row for row in report["comparisons"]}
    table = Table(title=f"{report['dataset']} ({report['format']}, {report['items']} items)")
    for column in (
        "configuration",
        "score",
        "95% interval",
        "n",
        "errors",
        "cost/item",
        "p50 s",
        "p95 s",
        "judge tok/item",
        f"Δ vs {report['baseline']}",
        "p",
    ):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for row in report["configurations"]:
        comparison = compared.get(row["name"])
        delta = "baseline" if row["name"] == report["baseline"] else "-"
        p_value = ""
        if comparison and comparison["delta"] is not None:
            low, high = comparison["ci95"]
            delta = f"{comparison['delta']:+.3f} [{low:+.3f}, {high:+.3f}]"
            p_value = "<0.001" if comparison["p_value"] < 0.001 else f"{comparison['p_value']:.3g}"
        latency = row["latency_ms"]
        table.add_row(
            row["name"],
            f"{row['score']:.3f}" if row["score"] is not None else "-",
            f"{row['ci95'][0]:.3f}–{row['ci95'][1]:.3f}",
            str(row["n"]),
            str(row["errors"]),
            f"${Decimal(row['cost_usd']['per_item']):.6f}",
            f"{latency['p50'] / 1000:.2f}" if latency["p50"] is not None else "-",
            f"{latency['p95'] / 1000:.2f}" if latency["p95"] is not None else "-",
            f"{row['tokens']['judge_per_item']:.0f}",
            delta,
            p_value,
        )
    return table
