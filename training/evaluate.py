"""Evaluate a checkpoint on a dataset split: metrics at the card's threshold, plus ROC / confusion / curve PNGs.

Images go through exactly the shared inference preprocessing (``Preprocessor.from_card`` then
``normalize``), so these numbers describe what the exported and served model does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from deepfake_edge.checkpoint import load_checkpoint
from deepfake_edge.preprocessing import Preprocessor
from deepfake_edge.training.datasets import is_full_size_crop
from deepfake_edge.training.metrics import compute_metrics
from deepfake_edge.training.pairing import pair_groups
from deepfake_edge.training.plots import plot_confusion, plot_curves, plot_roc, plot_twins
from deepfake_edge.training.synth import read_sources
from deepfake_edge.training.train import HISTORY_FILE, predict
from deepfake_edge.training.transforms import DetectorDataset, collate

METRICS_FILE = "metrics.json"
_MIN_IMAGES_SHOWN = 20  # the summary line skips photos with fewer images (their AUC is mostly noise)


def find_history(checkpoint: Path) -> Path | None:
    """Training curves of a checkpoint: ``<stem>.history.json`` beside it, or its run dir's ``history.json``."""
    for candidate in (checkpoint.with_name(f"{checkpoint.stem}.history.json"), checkpoint.parent / HISTORY_FILE):
        if candidate.is_file():
            return candidate
    return None


def evaluate_checkpoint(
    checkpoint: str | Path,
    samples: Sequence,
    split: str = "test",
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    history: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` on ``samples``; with ``out_dir``, also writes metrics.json and the PNGs."""
    checkpoint = Path(checkpoint)
    if not samples:
        raise ValueError(f"no images in the {split} split to evaluate on")
    model, card = load_checkpoint(checkpoint, device=device)
    dataset = DetectorDataset(samples, Preprocessor.from_card(card))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    labels, scores, dropped = predict(model, loader, card, torch.device(device))
    if labels.size == 0:
        raise ValueError(f"none of the {len(samples)} images in the {split} split could be read")
    metrics = compute_metrics(labels, scores, card.threshold)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint), "arch": card.arch, "input_size": card.input_size, "split": split,
        "skipped_images": dropped, **metrics,
    }
    if dropped == 0 and (per_source := by_source(samples, labels, scores)):
        report["by_source"] = per_source
    if dropped == 0 and (per_kind := by_kind(samples, labels, scores)):
        report["by_kind"] = per_kind
    # Dropped images would shift the indices, as for by_source.
    twins = twin_indices(samples) if dropped == 0 else np.empty((0, 2), dtype=int)
    real_twins, fake_twins = scores[twins[:, 0]], scores[twins[:, 1]]
    if len(twins):
        report.update(twin_ranking(real_twins, fake_twins))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        title = f"{card.arch} on {split} ({metrics['n']} images)"
        report["plots"] = {
            "roc": str(plot_roc(labels, scores, metrics, out_dir / "roc.png", title)),
            "confusion_matrix": str(plot_confusion(metrics["confusion_matrix"], card.labels,
                                                   out_dir / "confusion_matrix.png", title)),
        }
        if len(twins):
            report["plots"]["twins"] = str(plot_twins(real_twins, fake_twins, report, out_dir / "twins.png", title))
        history_path = Path(history) if history else find_history(checkpoint)
        if history_path is not None:
            curves = json.loads(history_path.read_text())
            report["plots"]["training_curves"] = str(plot_curves(curves, out_dir / "training_curves.png",
                                                                 f"{card.arch} training"))
        (out_dir / METRICS_FILE).write_text(to_json(report) + "\n")
    return report


def by_source(samples: Sequence, labels: np.ndarray, scores: np.ndarray) -> dict[str, dict[str, Any]]:
    """ROC-AUC and count per source photo, for sets written by ``data synth`` (empty for any other set).

    One pooled AUC hides which photos a detector fails on and how differently it is calibrated on each.
    """
    sources_by_folder: dict[Path, dict[str, str] | None] = {}
    groups: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        split_folder = sample.path.parent.parent
        if split_folder not in sources_by_folder:
            sources_by_folder[split_folder] = read_sources(split_folder)
        source = (sources_by_folder[split_folder] or {}).get(sample.path.stem)
        if source is None:
            return {}
        groups.setdefault(source, []).append(index)
    return {
        source: {"n": len(members), "roc_auc": float(roc_auc_score(labels[members], scores[members]))}
        for source, members in sorted(groups.items()) if len(set(labels[members].tolist())) == 2
    }


def by_kind(samples: Sequence, labels: np.ndarray, scores: np.ndarray) -> dict[str, dict[str, Any]]:
    """ROC-AUC and count of the self-blended crops and of the regions of full-size photos (``data edits``' and
    ``data negatives``' crops, :func:`is_full_size_crop`) when a split holds both: one pooled AUC would let one
    kind hide the other."""
    kinds = np.array(["edit_regions" if is_full_size_crop(sample.path) else "self_blends" for sample in samples])
    if len(set(kinds.tolist())) < 2:
        return {}
    return {kind: {"n": int((kinds == kind).sum()),
                   "roc_auc": float(roc_auc_score(labels[kinds == kind], scores[kinds == kind]))}
            for kind in sorted(set(kinds.tolist())) if len(set(labels[kinds == kind].tolist())) == 2}


def twin_indices(samples: Sequence) -> np.ndarray:
    """(real index, fake index) of every real/fake twin pair (``data synth`` writes them), shape (n, 2)."""
    return np.array([group for group in pair_groups(samples) if len(group) == 2], dtype=int).reshape(-1, 2)


def twin_ranking(real: np.ndarray, fake: np.ndarray) -> dict[str, Any]:
    """How often a fake scores above its own real twin (ties count half).

    The twins differ only by the blend, so this says whether the detector sees the blend whatever the
    content. ROC-AUC also needs one threshold to fit every image: a large gap between the two means the
    score moves more with content than with the blend.
    """
    return {"twin_pairs": len(real), "twin_accuracy": float(np.mean((fake > real) + 0.5 * (fake == real)))}


def _finite(value: Any) -> Any:
    """NaN/inf become null: strict JSON has no NaN (AUC is undefined when a split has one class)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(_finite(report), indent=2, sort_keys=True)


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`evaluate_checkpoint`'s result."""
    (tn, fp), (fn, tp) = report["confusion_matrix"]
    lines = [
        f"{report['arch']} ({report['input_size']} px) on the {report['split']} split: {report['n']} images "
        f"({report['n_real']} real, {report['n_fake']} fake)"
        + (f", {report['skipped_images']} unreadable skipped" if report["skipped_images"] else ""),
        f"  threshold          {report['threshold']:.4f} (from the checkpoint's model card)",
    ]
    for key in ("accuracy", "roc_auc", "average_precision", "precision", "recall", "f1", "fpr", "eer"):
        lines.append(f"  {key:<18} {report[key]:.4f}")
    lines.append(f"  confusion matrix   true Real: {tn} Real / {fp} Fake;  true Fake: {fn} Real / {tp} Fake")
    if "twin_accuracy" in report:
        lines.append(f"  twin_accuracy      {report['twin_accuracy']:.4f} (a fake above its own real twin, "
                     f"{report['twin_pairs']} pairs)")
    sources = [item for item in report.get("by_source", {}).items() if item[1]["n"] >= _MIN_IMAGES_SHOWN]
    if ranked := sorted(sources, key=lambda item: item[1]["roc_auc"]):
        shown = ranked if len(ranked) <= 6 else [*ranked[:3], *ranked[-3:]]
        low, high = ranked[0][1]["roc_auc"], ranked[-1][1]["roc_auc"]
        lines.append(f"  per source photo   ROC-AUC {low:.3f} to {high:.3f} over the {len(ranked)} photos with "
                     f">= {_MIN_IMAGES_SHOWN} images: " + ", ".join(f"{name} {m['roc_auc']:.3f}" for name, m in shown))
    for name, path in report.get("plots", {}).items():
        lines.append(f"  {name:<18} {path}")
    return "\n".join(lines)
