"""PNG figures for evaluation reports: ROC curve, confusion matrix, training curves, real/fake twins
(matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from deepfake_edge.training.metrics import logit  # noqa: E402


def plot_roc(labels: Sequence[int], scores: Sequence[float], metrics: dict[str, Any], path: Path, title: str) -> Path:
    """ROC curve with AUC/EER in the legend and the operating point at the card's threshold."""
    fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(scores))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, lw=2, label=f"ROC (AUC {metrics['roc_auc']:.4f}, EER {metrics['eer']:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.scatter([metrics["fpr"]], [metrics["recall"]], color="red", zorder=3,
               label=f"threshold {metrics['threshold']:.3f}")
    ax.set(xlabel="false-positive rate (Real called Fake)", ylabel="true-positive rate (Fake caught)",
           xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_confusion(matrix: list[list[int]], class_names: Sequence[str], path: Path, title: str) -> Path:
    counts = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(counts, cmap="Blues")
    for (row, col), value in np.ndenumerate(counts):
        colour = "white" if value > counts.max() / 2 else "black"
        ax.text(col, row, str(value), ha="center", va="center", color=colour, fontsize=14)
    ax.set_xticks([0, 1], [f"pred. {n}" for n in class_names])
    ax.set_yticks([0, 1], [f"true {n}" for n in class_names])
    ax.set_title(title)
    return _save(fig, path)


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Loss (train/validation, and the mask head's when it trained) and validation AUC per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, auc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    if "train_mask_loss" in history[0]:
        loss_ax.plot(epochs, [h["train_mask_loss"] for h in history], marker="o", linestyle="--",
                     label="train, blend mask (--mask-loss)")
    loss_ax.set(xlabel="epoch", ylabel="BCE loss", title="loss")
    loss_ax.legend()
    auc_ax.plot(epochs, [h["val_roc_auc"] for h in history], marker="o", color="green", label="ROC-AUC")
    auc_ax.plot(epochs, [h["val_accuracy"] for h in history], marker="o", color="orange", label="accuracy")
    auc_ax.set(xlabel="epoch", title="validation")
    auc_ax.legend(loc="lower right")
    for ax in (loss_ax, auc_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_twins(real: np.ndarray, fake: np.ndarray, metrics: dict[str, Any], path: Path, title: str) -> Path:
    """Each real/fake twin pair as one point: the real image's logit across, its fake's up.

    Points above the diagonal are pairs the detector ranks right (``metrics["twin_accuracy"]``); the
    spread along the diagonal is how far content alone moves the score, which one threshold (the dashed
    lines) has to live with. Logits beyond +-16 sit on the edges.
    """
    threshold = metrics["threshold"]
    real_logit, fake_logit = logit(real), logit(fake)
    cut = float(logit(np.array([threshold]))[0])
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(real_logit, fake_logit, s=4, alpha=0.25, linewidths=0)
    low = float(min(real_logit.min(), fake_logit.min(), cut)) - 0.5
    high = float(max(real_logit.max(), fake_logit.max(), cut)) + 0.5
    ax.plot([low, high], [low, high], color="grey", lw=1, label="fake = real")
    ax.axvline(cut, color="red", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.axhline(cut, color="red", ls="--", lw=1)
    ax.set(xlabel="logit of the real image", ylabel="logit of its fake twin", xlim=(low, high), ylim=(low, high),
           title=f"{title}\nfake above its real twin: {metrics['twin_accuracy']:.1%} of {len(real)} pairs")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def _save(fig: "plt.Figure", path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
