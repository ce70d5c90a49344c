"""`fusion eval` on the real local models: a handful of the shipped short questions through the real
pipeline, SmolLM2 alone and a self-fusion of SmolLM2, with the report and plots written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fusion.settings import Settings

from fusion_testing.stack import Services

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

ITEMS = 3


def test_fusion_eval_runs_the_shipped_short_set_on_the_local_models(
    local_models: str, settings: Settings, services: Services, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "FUSION_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FUSION_CATALOG": str(settings.catalog),
    }
    args = [sys.executable, "-m", "fusion.cli.main", "eval", "short", "--limit", str(ITEMS)]
    args += ["--out", str(tmp_path), "--no-progress", "--concurrency", "1"]
    args += ["-c", "alone=smollm2-135m@0.3", "-c", "self2=panel:smollm2-135m@0.7*2/judge:smollm2-135m@0.2"]

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900, check=False)

    print(done.stdout[-4000:])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {row["name"]: row for row in report["configurations"]}
    assert report["items"] == ITEMS
    assert report["requests_sent"] == 2 * ITEMS
    for row in rows.values():
        assert row["n"] == ITEMS
        assert row["errors"] == 0
        assert 0.0 <= row["score"] <= 1.0
        assert row["latency_ms"]["p50"] > 0
        assert row["tokens"]["output"] > 0
    assert rows["alone"]["tokens"]["judge"] == 0
    assert rows["self2"]["tokens"]["judge"] > 0
    assert report["baseline"] == "alone"
    assert (tmp_path / "score-cost.png").exists()
    assert "alone" in done.stdout
