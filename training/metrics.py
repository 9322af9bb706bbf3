"""Binary detection metrics for the "Fake" class, and the validation-calibrated decision threshold.

Conventions: ``labels`` are 0 (Real) / 1 (Fake), ``scores`` are fake probabilities, and an image is
called Fake when ``score >= threshold`` (the same rule as :meth:`ModelCard.label_for`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def logit(probability: Any) -> np.ndarray:
    """``log(p / (1 - p))`` of fake probabilities, clipped to [1e-7, 1 - 1e-7] first: in float32, 1 - p
    underflows above a logit of ~16, so both ends are cut there and stay finite and symmetric."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _as_arrays(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (Real) or 1 (Fake)")
    return labels, scores


def _has_both_classes(labels: np.ndarray) -> bool:
    return bool(labels.size) and 0 < labels.sum() < labels.size


def equal_error_rate(labels: Any, scores: Any) -> float:
    """The rate where the false-positive rate equals the false-negative rate (linear interpolation on the ROC)."""
    labels, scores = _as_arrays(labels, scores)
    if not _has_both_classes(labels):
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    # fpr rises and fnr falls along the curve: find the first point where they cross.
    diff = fpr - fnr
    i = int(np.argmax(diff >= 0))
    if i == 0 or diff[i] == 0:
        return float(fpr[i])
    # Interpolate between points i-1 (fpr < fnr) and i (fpr >= fnr).
    t = -diff[i - 1] / (diff[i] - diff[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def calibrate_threshold(labels: Any, scores: Any) -> float:
    """Youden's J threshold: maximise TPR - FPR on (validation) scores.

    Returns the midpoint between the best cut's score and the next lower score, so the boundary sits
    in the gap between the two classes rather than on a validation sample. 0.5 if a class is missing.
    """
    labels, scores = _as_arrays(labels, scores)
    if not _has_both_classes(labels):
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    upper = min(float(thresholds[best]), 1.0)  # roc_curve's first threshold is +inf
    lower = float(thresholds[best + 1]) if best + 1 < len(thresholds) else 0.0
    return float(np.clip((upper + lower) / 2.0, 1e-6, 1.0 - 1e-6))


def confusion_counts(labels: Any, scores: Any, threshold: float) -> dict[str, int]:
    labels, scores = _as_arrays(labels, scores)
    predicted = scores >= threshold
    positive = labels == 1
    return {
        "tn": int(np.sum(~predicted & ~positive)),
        "fp": int(np.sum(predicted & ~positive)),
        "fn": int(np.sum(~predicted & positive)),
        "tp": int(np.sum(predicted & positive)),
    }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def compute_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """All report metrics for one split; threshold-free ones (AUC, AP, EER) are NaN if a class is missing.

    ``confusion_matrix`` is ``[[tn, fp], [fn, tp]]`` (rows: true Real/Fake, columns: predicted Real/Fake).
    """
    labels, scores = _as_arrays(labels, scores)
    c = confusion_counts(labels, scores, threshold)
    precision = _ratio(c["tp"], c["tp"] + c["fp"])
    recall = _ratio(c["tp"], c["tp"] + c["fn"])
    both = _has_both_classes(labels)
    return {
        "n": int(labels.size),
        "n_real": int(np.sum(labels == 0)),
        "n_fake": int(np.sum(labels == 1)),
        "threshold": float(threshold),
        "accuracy": _ratio(c["tp"] + c["tn"], labels.size),
        "roc_auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "average_precision": float(average_precision_score(labels, scores)) if both else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
        "fpr": _ratio(c["fp"], c["fp"] + c["tn"]),
        "eer": equal_error_rate(labels, scores),
        "confusion_matrix": [[c["tn"], c["fp"]], [c["fn"], c["tp"]]],
    }
