"""Whole-image calibration and evaluation of a checkpoint on full-size photos (``data edits``' ``full/``).

The served verdict on a photo is the highest fake probability among its regions (deepfake_edge/regions.py)
and its copy-move finding (deepfake_edge/copy_move.py), so its threshold is set on whole photos, not on
crops. ``calibrate --copy-move`` first fits the copy-move calibration (the logistic curve from a finding's
support to a fake probability, even odds) on the *training* split's copy-move pairs: the check learns
nothing, so those photos are as unseen to it as validation's, seven times as many, and the threshold is then
not set on the photos its curve was fitted on. Then it picks the lowest threshold at which at most
``max_false_alarm`` of the unedited validation photos are called Fake, and stores both in the checkpoint's
card (``copy_move_calibration``, ``image_threshold``), from where export carries them to the served model.
``evaluate --whole-images`` reports, on a split's full photos: ROC-AUC, share caught at that threshold,
false-alarm rate, overall and per edit family, the pointing game (the stitched heatmap's peak inside the
edit mask) and the share with a copy-move finding.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from deepfake_edge.checkpoint import load_checkpoint, read_card, save_checkpoint
from deepfake_edge.copy_move import copy_move_score, find_copy_move, fit_calibration
from deepfake_edge.export.evaluate import make_session
from deepfake_edge.export.graph import export_onnx
from deepfake_edge.model_card import LABELS, ModelCard
from deepfake_edge.preprocessing import Preprocessor, load_image
from deepfake_edge.regions import DEFAULT_MAX_FALSE_ALARM, analyse, stitch_heatmap
from deepfake_edge.serving_contract import INPUT_NAME, OUTPUT_NAMES
from deepfake_edge.training.datasets import MASK_FOLDER
from deepfake_edge.training.edit_synth import EDITS_FILE, FULL_FOLDER

_ROWS_PER_FORWARD = 32
# Pairs scored per split: 300 pairs (600 photos, ~25 regions each) take ~10 minutes of two CPU cores.
DEFAULT_MAX_PAIRS = 300


@dataclass(frozen=True)
class PhotoScore:
    """One full photo's whole-image ``score``: the higher of ``region_score`` (its regions' highest) and its
    copy-move finding's probability under the card's calibration, if both exist (``copy_move_support`` 0:
    no finding; None: the check did not run). ``family`` is None for an unedited photo; ``peak_in_edit`` tells whether the stitched
    heatmap's hottest pixel lies in the edit mask (None for unedited photos)."""

    stem: str
    label: int
    family: str | None
    score: float
    peak_in_edit: bool | None
    region_score: float
    copy_move_support: int | None

    def calibrated(self, calibration: tuple[float, float] | None) -> "PhotoScore":
        """This photo scored under copy-move ``calibration`` (None: the regions alone), as the client does."""
        score = self.region_score
        if calibration is not None and self.copy_move_support:
            score = max(score, copy_move_score(self.copy_move_support, calibration)[0])
        return dataclasses.replace(self, score=score)


@contextmanager
def served_session(checkpoint: str | Path) -> Iterator[tuple[Any, Preprocessor]]:
    """The checkpoint exported to ONNX as for serving, in an onnxruntime session, with its preprocessor;
    the ONNX file lives in a temporary folder for the ``with`` block only."""
    model, card = load_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory(prefix="deepfake-edge-session-") as workdir:
        yield make_session(export_onnx(model.float(), card, Path(workdir) / "model.onnx")), Preprocessor.from_card(card)


def score_photos(checkpoint: str | Path, root: str | Path, split: str, max_pairs: int | None = DEFAULT_MAX_PAIRS,
                 progress: bool = True, copy_move: bool | None = None) -> list[PhotoScore]:
    """Score the photos of ``root/<split>/full`` (at most ``max_pairs`` pairs, evenly spread over the split)
    with whole-image analysis: the checkpoint exported to ONNX as for serving, run by onnxruntime, and, with
    ``copy_move`` (default: when the card is calibrated for it, as served), the copy-move check (~0.1 s a
    photo), under the card's copy-move calibration."""
    full = Path(root) / split / FULL_FOLDER
    edits = json.loads((full / EDITS_FILE).read_text())
    stems = sorted(edits)
    if max_pairs is not None and len(stems) > max_pairs:
        stems = [stems[round(i * len(stems) / max_pairs)] for i in range(max_pairs)]
    scores = []
    jobs = [(stem, label) for stem in stems for label in (0, 1)]
    calibration = read_card(checkpoint).copy_move_calibration
    check = calibration is not None if copy_move is None else copy_move
    with served_session(checkpoint) as (session, preprocessor):
        for stem, label in tqdm(jobs, desc=f"whole-image {split}", unit="photo", disable=not progress):
            scores.append(_score_photo(session, preprocessor, full, stem, label, edits[stem]["family"], check))
    return [score.calibrated(calibration) for score in scores]


def _score_photo(session: Any, preprocessor: Preprocessor, full: Path, stem: str, label: int,
                 family: str, copy_move: bool) -> PhotoScore:
    image = load_image(full / LABELS[label] / f"{stem}.jpg")
    plan, rows = analyse(image, preprocessor)
    probabilities, heatmaps = forward_rows(session, rows)
    peak = None
    if label == 1:
        heat = stitch_heatmap(plan, probabilities, heatmaps)
        with Image.open(full / MASK_FOLDER / f"{stem}.png") as mask_image:
            mask = np.asarray(mask_image.convert("L").resize(heat.shape[::-1], Image.Resampling.BILINEAR))
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        peak = bool(mask[y, x] >= 128)
    support = None
    if copy_move:
        support = copy_move_support(image)
    region_score = float(probabilities.max())
    return PhotoScore(stem, label, family if label else None, region_score, peak, region_score, support)


def forward_rows(session: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The served graph's fake probability (N,) and heatmap of every region row, run in chunks of 32."""
    probabilities, heatmaps = [], []
    for start in range(0, len(rows), _ROWS_PER_FORWARD):
        probability, _, heatmap = session.run(list(OUTPUT_NAMES), {INPUT_NAME: rows[start:start + _ROWS_PER_FORWARD]})
        probabilities.append(probability.reshape(-1))
        heatmaps.append(heatmap)
    return np.concatenate(probabilities), np.concatenate(heatmaps)


def false_alarm_threshold(real_scores: np.ndarray, max_false_alarm: float) -> float:
    """The lowest threshold at which at most ``max_false_alarm`` of ``real_scores`` reach it."""
    ordered = np.sort(np.asarray(real_scores, dtype=np.float64))[::-1]
    allowed = int(np.floor(max_false_alarm * len(ordered)))
    if allowed >= len(ordered):
        return 0.0
    return float(min(np.nextafter(ordered[allowed], 1.0), 1.0))


def report(scores: list[PhotoScore], threshold: float) -> dict[str, Any]:
    """ROC-AUC, caught share, false alarms and pointing game, overall and per edit family."""
    real = np.array([s.score for s in scores if s.label == 0])
    summary = {"threshold": threshold, "photos_unedited": int(len(real)),
               "false_alarm_rate": float(np.mean(real >= threshold)) if len(real) else float("nan")}
    checked = any(s.copy_move_support is not None for s in scores)
    families = sorted({s.family for s in scores if s.family})
    for name, members in [("all", [s for s in scores if s.label == 1])] + [
            (family, [s for s in scores if s.family == family]) for family in families]:
        fake = np.array([s.score for s in members])
        labels = np.r_[np.zeros(len(real)), np.ones(len(fake))]
        pointing = [s.peak_in_edit for s in members]
        summary[name] = {
            "photos_edited": int(len(fake)),
            "roc_auc": float(roc_auc_score(labels, np.r_[real, fake])) if len(fake) and len(real) else float("nan"),
            "caught": float(np.mean(fake >= threshold)) if len(fake) else float("nan"),
            "pointing_game": float(np.mean(pointing)) if pointing else float("nan"),
        }
        if checked:
            summary[name]["copy_move_found"] = (float(np.mean([bool(s.copy_move_support) for s in members]))
                                                if members else float("nan"))
    if checked:
        summary["copy_move_found_unedited"] = float(np.mean([bool(s.copy_move_support) for s in scores
                                                             if s.label == 0]))
    return summary


def calibrate(checkpoint: str | Path, root: str | Path, max_false_alarm: float = DEFAULT_MAX_FALSE_ALARM,
              max_pairs: int | None = DEFAULT_MAX_PAIRS, progress: bool = True, copy_move: bool = False) -> dict[str, Any]:
    """Set ``image_threshold`` in ``checkpoint``'s card from the validation photos (rewritten in place, same
    dtype), and with ``copy_move`` first ``copy_move_calibration`` from the training split's copy-move pairs
    (without it: None, the check off); returns the validation report at that threshold, which the card keeps
    in ``metrics``."""
    calibration = fit_calibration(*copy_move_pairs(root, "train", progress)) if copy_move else None
    scores = score_photos(checkpoint, root, "validation", max_pairs, progress, copy_move)
    scores = [score.calibrated(calibration) for score in scores]
    threshold = false_alarm_threshold(np.array([s.score for s in scores if s.label == 0]), max_false_alarm)
    validation = report(scores, threshold)
    model, card = load_checkpoint(checkpoint)
    dtype = next(model.parameters()).dtype
    metrics = {**card.metrics, "whole_image_validation": validation}
    card = card.replace(image_threshold=threshold, copy_move_calibration=calibration, metrics=metrics)
    save_checkpoint(checkpoint, model, card, dtype=dtype)
    return validation


def copy_move_pairs(root: str | Path, split: str, progress: bool = True) -> tuple[list[int], list[int]]:
    """The copy-move check's support (0: no finding) on every copy-move pair of ``root/<split>/full``, the
    edited photo and its unedited twin, and their labels (1 = copy-moved); no model runs. Raises ValueError
    when the split has no copy-move pair."""
    full = Path(root) / split / FULL_FOLDER
    edits = json.loads((full / EDITS_FILE).read_text()) if (full / EDITS_FILE).is_file() else {}
    jobs = [(stem, label) for stem in sorted(edits) if edits[stem]["family"] == "copy_move" for label in (0, 1)]
    if not jobs:
        raise ValueError(f"fitting the copy-move calibration needs copy-move pairs in {full} ('data edits')")
    supports = [copy_move_support(load_image(full / LABELS[label] / f"{stem}.jpg"))
                for stem, label in tqdm(jobs, desc=f"copy-move check, {split}", unit="photo", disable=not progress)]
    return supports, [label for _, label in jobs]


def copy_move_support(image: Image.Image) -> int:
    """The support of ``image``'s copy-move finding, 0 without one."""
    found = find_copy_move(image)
    return found.support if found else 0


def format_whole_image_report(summary: dict[str, Any]) -> str:
    checked = "copy_move_found_unedited" in summary
    found = f"; a copy-move found in {summary['copy_move_found_unedited']:.1%} of them" if checked else ""
    lines = [f"threshold {summary['threshold']:.4f}: false alarms on {summary['photos_unedited']} unedited photos "
             f"{summary['false_alarm_rate']:.1%}{found}",
             f"{'edit family':<12}{'photos':>8}{'ROC-AUC':>9}{'caught':>8}{'pointing':>10}" + (
                 f"{'copy-move':>11}" if checked else "")]
    for name, row in summary.items():
        if isinstance(row, dict):
            lines.append(f"{name:<12}{row['photos_edited']:>8}{row['roc_auc']:>9.3f}{row['caught']:>8.1%}"
                         f"{row['pointing_game']:>10.1%}" + (f"{row['copy_move_found']:>11.1%}" if checked else ""))
    return "\n".join(lines)


def card_threshold(card: ModelCard) -> float:
    """The threshold whole-image evaluation applies: the calibrated one, else the crop threshold."""
    return card.image_threshold if card.image_threshold is not None else card.threshold
