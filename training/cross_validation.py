"""Stratified k-fold cross-validation: one checkpoint per fold and a mean ± std summary.

The folds partition train + validation (the test split stays untouched and, when present, every fold's
checkpoint is also scored on it). Each fold's held-out part is that fold's validation set: it drives
early stopping and calibrates the fold's threshold.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from deepfake_edge.training.evaluate import evaluate_checkpoint, to_json
from deepfake_edge.training.train import FitResult, TrainConfig, fit

log = logging.getLogger(__name__)

SUMMARY_FILE = "cv_summary.json"
SUMMARY_METRICS = ("roc_auc", "accuracy", "average_precision", "precision", "recall", "f1", "fpr", "eer")


def summarize(per_fold: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean": m, "std": s}}`` over folds (population std, NaN folds ignored)."""
    summary = {}
    for key in SUMMARY_METRICS:
        values = np.array([fold[key] for fold in per_fold if fold.get(key) is not None], dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            summary[key] = {"mean": float(values.mean()), "std": float(values.std())}
    return summary


def cross_validate(splits, folds: int, config: TrainConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train ``folds`` models into ``out_dir/fold_K/`` and write ``out_dir/cv_summary.json``; the returned
    dict is that file's content (``format_summary(results["summary"], folds)`` puts it in words)."""
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    out_dir = Path(out_dir)
    pool = list(splits.train) + list(splits.validation)
    labels = np.array([sample.label for sample in pool])
    smallest = int(min(np.sum(labels == 0), np.sum(labels == 1)))
    if smallest < folds:
        raise ValueError(f"{folds} folds need at least {folds} images of each class; the smaller class has {smallest}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    results: dict[str, Any] = {"folds": folds, "training_data": splits.describe(), "validation": [], "test": []}
    for fold, (train_idx, val_idx) in enumerate(splitter.split(np.zeros(len(pool)), labels), start=1):
        log.info("--- fold %d/%d: %d train / %d held-out images", fold, folds, len(train_idx), len(val_idx))
        result: FitResult = fit(
            [pool[i] for i in train_idx], [pool[i] for i in val_idx], config, out_dir / f"fold_{fold}",
            training_data=f"{splits.describe()} Cross-validation fold {fold} of {folds} over train+validation.",
        )
        results["validation"].append({"fold": fold, "checkpoint": str(result.checkpoint),
                                      **result.card.metrics["validation"]})
        if splits.test:
            report = evaluate_checkpoint(result.checkpoint, splits.test, split="test")
            results["test"].append({"fold": fold, **{k: report[k] for k in (*SUMMARY_METRICS, "threshold")}})
    results["summary"] = {"validation": summarize(results["validation"])}
    if results["test"]:
        results["summary"]["test"] = summarize(results["test"])
    (out_dir / SUMMARY_FILE).write_text(to_json(results) + "\n")
    return results


def format_summary(summary: dict[str, dict[str, dict[str, float]]], folds: int) -> str:
    lines = [f"{folds}-fold cross-validation (mean ± std over folds)"]
    for split, metrics in summary.items():
        lines.append(f"  {split}: " + ", ".join(f"{k} {v['mean']:.4f} ± {v['std']:.4f}" for k, v in metrics.items()))
    return "\n".join(lines)
