"""The short CI version of ``deepfake-edge soak``: the real service (``deepfake-edge serve``: tritonserver +
web app) under a valid/malformed mix at concurrency 16, with every target but the RSS growth one checked
(a few hundred requests are too few for allocators to settle; the full 10,000-request run checks it)."""

from __future__ import annotations

import json

import psutil
import pytest

from deepfake_edge.benchmarks.soak import MALFORMED_KINDS, VALID_KINDS, SoakSettings, rss_table, plan, run_soak
from deepfake_edge.benchmarks.soak_report import write_report

pytestmark = pytest.mark.server


def test_rss_growth_follows_a_leak_not_the_swing_with_load():
    def results(series: dict[str, list[float | None]]) -> dict:
        samples = [{"t_s": float(t), "rss_mb": {name: values[t] for name, values in series.items()}}
                   for t in range(len(next(iter(series.values()))))]
        first = samples[0]["rss_mb"]
        return {"rss_samples": samples, "rss_warm_mb": first, "rss_ready_mb": first}

    swinging = [500.0, 650.0] * 50  # in-flight uploads come and go; the last reading happens to be high
    leaking = [500.0 + t for t in range(100)]  # one MB per second, steadily
    dying = [100.0] * 99 + [None]
    table = rss_table(results({"web": swinging, "leak": leaking, "stub": dying}))
    assert abs(table["web"]["growth"]) < 0.01 and table["web"]["last_mb"] == 650.0 and table["web"]["max_mb"] == 650.0
    assert table["leak"]["growth"] > 0.15
    assert table["stub"]["growth"] is None, "a process gone at the end has no growth figure (a crash)"


def test_plan_is_seeded_exact_and_covers_every_kind():
    settings = SoakSettings(requests=1_000, malformed_fraction=0.1, seed=3)
    kinds = plan(settings)
    assert len(kinds) == 1_000 and kinds == plan(settings)
    assert sum(not kind.valid for kind in kinds) == 100
    assert {kind.name for kind in kinds} == {kind.name for kind in list(VALID_KINDS) + list(MALFORMED_KINDS)}
    assert kinds != plan(SoakSettings(requests=1_000, seed=4)), "the seed decides the order"


def test_short_soak_meets_its_targets_and_leaves_nothing_behind(demo_repository, tmp_path):
    # Generous per-request timeout: CI machines are shared; a slow answer is not what this test is about.
    settings = SoakSettings(repository=demo_repository / "embedded", out=tmp_path / "soak", requests=200,
                            concurrency=16, warmup_requests=16, max_seconds=300, request_timeout_s=180, progress=False)
    results = run_soak(settings)
    paths = write_report(results, settings.out, "pytest")

    targets = dict(results["targets"])
    targets.pop("rss_growth_below_10_percent")
    assert all(targets.values()), (targets, results["unexpected_examples"], results["crash_events"])
    by_kind = results["requests"]["by_kind"]
    assert all(row["sent"] >= 2 for row in by_kind.values()), by_kind
    assert results["served"] == results["requests"]["valid_sent"]
    assert results["web_5xx"] == 0 and results["web_app_tracebacks"] == 0
    # Every process was watched, and none of them survives the run.
    labels = " ".join(results["rss"])
    assert "serve (web app)" in labels and "tritonserver" in labels and "stub deepfake_b0" in labels
    pids = [int(label.rsplit("[", 1)[1].rstrip("]")) for label in results["rss"]]
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert all(row["last_mb"] is not None and row["last_mb"] < 4096 for row in results["rss"].values())
    assert results["latency_ms"]["all_valid"]["p99"] > 0

    figures = json.loads(paths[0].read_text())
    assert figures["command"] == "pytest" and "timeline" not in figures
    assert "## Errors by class" in paths[2].read_text() and paths[3].stat().st_size > 10_000
