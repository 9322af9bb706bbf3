"""Refit the detector's last layer on the regions that whole-image analysis scores (``deepfake-edge refit-head``).

Training sees 224-px crops: self-blends, and the few regions of each full photo that hold its edit
(region_crops.py). A photo's verdict is different: the highest of its ~20-50 regions (deepfake_edge/regions.py),
so every tile of an unedited photo is a chance of a false alarm, and one edited tile is enough. This stage
keeps the backbone and refits only the linear classifier (features -> one logit) on exactly what inference
cuts from the training split's full photos (``data edits``' ``train/full``), by L-BFGS, minimising:

1. **regions**: weighted binary cross-entropy on every region (faces, tiles, global view). A region of an
   unedited photo, or of an edited one without an edited pixel, is Real; one that the edit mask covers for at
   least :data:`FAKE_OVERLAP` of its area, or that holds at least :data:`FAKE_COVER` of the edit, is Fake;
   regions in between are left out. Fake and Real regions weigh ``fake_share`` and ``1 - fake_share``.
2. **photos** (multiple-instance learning): each photo's soft maximum of its region logits (temperature
   ``temperature``), the verdict rule made differentiable, against the photo's label, times ``photo_weight``.
3. **self-blends**: cross-entropy on up to :data:`SELF_BLEND_CROPS` of the split's self-blended crops (both
   labels, drawn by ``seed``), times ``self_blend_weight``, so the crop-scale detector is kept.
4. ``pull`` / 2 times the squared distance from the checkpoint's own classifier weights.

The backbone's pooled features are computed once (an ONNX graph in onnxruntime, ~13 ms a region on one core),
so the fit itself takes seconds. The new card keeps the checkpoint's preprocessing, sets the crop threshold
and validation metrics on the validation crops again, and drops what the old head had calibrated (image and
video thresholds): run ``calibrate`` next.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from deepfake_edge.checkpoint import load_checkpoint, save_checkpoint
from deepfake_edge.export.evaluate import make_session
from deepfake_edge.export.graph import DetectorGraph, export_onnx
from deepfake_edge.model_card import LABELS
from deepfake_edge.preprocessing import Preprocessor, load_image
from deepfake_edge.regions import analyse
from deepfake_edge.serving_contract import INPUT_NAME
from deepfake_edge.training.config import RefitOptions
from deepfake_edge.training.datasets import MASK_FOLDER, Sample, is_full_size_crop, load_splits
from deepfake_edge.training.edit_synth import EDITS_FILE, FULL_FOLDER
from deepfake_edge.training.metrics import calibrate_threshold, compute_metrics

FAKE_OVERLAP = 0.1  # share of a region's area the edit covers
FAKE_COVER = 0.25  # share of the edit inside the region
SELF_BLEND_CROPS = 4000
_ROWS_PER_FORWARD = 32


@dataclass
class RegionTable:
    """Pooled features of the regions of a split's full photos: ``features`` (R, C); ``labels`` per region
    (1 Fake, 0 Real, -1 left out); ``photo`` the index of each region's photo; ``photo_labels`` per photo."""

    features: np.ndarray
    labels: np.ndarray
    photo: np.ndarray
    photo_labels: np.ndarray


class FeatureGraph(DetectorGraph):
    """``image`` UINT8 (N, 3, H, W) -> the backbone's average-pooled features (N, C): the classifier's input."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model.forward_features(self.normalize(image)).mean(dim=(2, 3))


def region_labels(overlap: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """Labels of an edited photo's regions from the share of each region the edit covers (``overlap``) and the
    share of the edit each holds (``cover``): 1 Fake, 0 Real (no edited pixel), -1 in between (left out)."""
    fake = (overlap >= FAKE_OVERLAP) | (cover >= FAKE_COVER)
    return np.where(fake, 1, np.where(overlap == 0, 0, -1)).astype(np.int8)


def _forward(session: Any, rows: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(None, {INPUT_NAME: rows[start:start + _ROWS_PER_FORWARD]})[0]
                           for start in range(0, len(rows), _ROWS_PER_FORWARD)])


def _edit_shares(mask: np.ndarray, boxes: list[tuple[float, ...]]) -> tuple[np.ndarray, np.ndarray]:
    total = max(1, int(mask.sum()))
    overlap, cover = np.zeros(len(boxes)), np.zeros(len(boxes))
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        inside = mask[y0:y1, x0:x1]
        overlap[i] = inside.mean() if inside.size else 0.0
        cover[i] = inside.sum() / total
    return overlap, cover


def _photo_regions(session: Any, preprocessor: Preprocessor, full: Path, stem: str,
                   label: int) -> tuple[np.ndarray, np.ndarray]:
    plan, rows = analyse(load_image(full / LABELS[label] / f"{stem}.jpg"), preprocessor)
    labels = np.zeros(len(rows), dtype=np.int8)
    if label:
        with Image.open(full / MASK_FOLDER / f"{stem}.png") as mask:
            edited = np.asarray(mask.convert("L")) >= 128
        labels = region_labels(*_edit_shares(edited, [region.box for region in plan.regions]))
    return _forward(session, rows), labels


def region_table(session: Any, preprocessor: Preprocessor, root: Path, split: str = "train",
                 max_pairs: int | None = None, progress: bool = True) -> RegionTable:
    """Features and labels of every region of ``root/<split>/full``'s photos (both twins of each pair), one
    photo per core at a time (``session`` is shared: onnxruntime's ``run`` may be called from several threads)."""
    full = root / split / FULL_FOLDER
    if not (full / EDITS_FILE).is_file():
        raise ValueError(f"refitting the head needs full-size photos in {full} (run 'data edits' on {root})")
    stems = sorted(json.loads((full / EDITS_FILE).read_text()))
    if max_pairs is not None and len(stems) > max_pairs:
        stems = [stems[int(i * len(stems) / max_pairs)] for i in range(max_pairs)]
    jobs = [(stem, label) for stem in stems for label in (0, 1)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = pool.map(lambda job: _photo_regions(session, preprocessor, full, *job), jobs)
        photos = list(tqdm(done, total=len(jobs), desc=f"regions, {split}", unit="photo", disable=not progress))
    return RegionTable(np.concatenate([features for features, _ in photos]),
                       np.concatenate([labels for _, labels in photos]),
                       np.concatenate([np.full(len(labels), index) for index, (_, labels) in enumerate(photos)]),
                       np.array([label for _, label in jobs], dtype=np.int8))


def crop_features(session: Any, preprocessor: Preprocessor, paths: list[Path], progress: bool = True,
                  desc: str = "crops") -> np.ndarray:
    """Pooled features of single crops, preprocessed as the fast mode's view, a batch per core at a time."""
    chunks = [paths[start:start + _ROWS_PER_FORWARD] for start in range(0, len(paths), _ROWS_PER_FORWARD)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = pool.map(lambda chunk: _forward(session, np.stack([preprocessor(path) for path in chunk])), chunks)
        features = list(tqdm(done, total=len(chunks), desc=desc, unit="batch", disable=not progress))
    return np.concatenate(features) if features else np.zeros((0, 0), dtype=np.float32)


def fit_head(table: RegionTable, weight: np.ndarray, bias: float, options: RefitOptions,
             blends: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, float]:
    """The classifier ``(weight (C,), bias)`` that minimises the objective of the module docstring, started
    from (and pulled towards) the given one; ``blends`` = (features, labels) of self-blended crops."""
    kept = table.labels >= 0
    x = torch.from_numpy(table.features[kept].astype(np.float32))
    y = torch.from_numpy(table.labels[kept].astype(np.float32))
    photo = torch.from_numpy(table.photo[kept].astype(np.int64))
    photo_labels = torch.from_numpy(table.photo_labels.astype(np.float32))
    fakes = float(y.sum())
    if fakes == 0 or fakes == len(y):
        raise ValueError("refitting the head needs Fake and Real regions (edited and unedited photos)")
    region_weights = torch.where(y > 0, options.fake_share / fakes, (1 - options.fake_share) / (len(y) - fakes))
    start = torch.from_numpy(np.asarray(weight, dtype=np.float32))
    w = start.clone().requires_grad_(True)
    b = torch.tensor([float(bias)], requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=options.iterations, history_size=20, line_search_fn="strong_wolfe")
    n_photos = len(photo_labels)
    blend_x, blend_y = x[:0], y[:0]
    if blends is not None:
        blend_x, blend_y = (torch.from_numpy(a.astype(np.float32)) for a in blends)

    def objective() -> torch.Tensor:
        optimiser.zero_grad()
        logits = x @ w + b
        loss = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * region_weights).sum()
        loss = loss + options.pull / 2 * ((w - start) ** 2).sum()
        if options.photo_weight:
            peak = torch.full((n_photos,), -1e4).scatter_reduce(0, photo, logits.detach(), "amax")
            spread = torch.zeros(n_photos).index_add(0, photo, torch.exp((logits - peak[photo]) / options.temperature))
            soft_max = peak + options.temperature * spread.clamp_min(1e-30).log()
            loss = loss + options.photo_weight * F.binary_cross_entropy_with_logits(soft_max, photo_labels)
        if len(blend_y) and options.self_blend_weight:
            loss = loss + options.self_blend_weight * F.binary_cross_entropy_with_logits(blend_x @ w + b, blend_y)
        loss.backward()
        return loss

    optimiser.step(objective)
    return w.detach().numpy().astype(np.float64), float(b.detach()[0])


def _paths_and_labels(samples: list[Sample]) -> tuple[list[Path], np.ndarray]:
    return [sample.path for sample in samples], np.array([sample.label for sample in samples], dtype=np.int8)


def refit_head(checkpoint: str | Path, root: str | Path, out: str | Path, options: RefitOptions = RefitOptions(),
               max_pairs: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Write ``checkpoint`` with its classifier refitted on ``root``'s training photos to ``out``; returns what
    the card records (``extra["head_refit"]``)."""
    started, root = time.perf_counter(), Path(root)
    model, card = load_checkpoint(checkpoint)
    model, preprocessor = model.float().eval(), Preprocessor.from_card(card)
    classifier: nn.Linear = model.get_classifier()
    with tempfile.TemporaryDirectory(prefix="deepfake-edge-refit-") as workdir:
        path = Path(workdir) / "features.onnx"
        export_onnx(model, card, path, graph_class=FeatureGraph, output_names=("features",))
        session = make_session(path, threads=1)
        table = region_table(session, preprocessor, root, "train", max_pairs, progress)
        splits = load_splits(root, seed=options.seed)
        self_blends = [sample for sample in splits.train if not is_full_size_crop(sample.path)]
        random.Random(options.seed).shuffle(self_blends)
        blend_paths, blend_labels = _paths_and_labels(self_blends[:SELF_BLEND_CROPS])
        blends = (crop_features(session, preprocessor, blend_paths, progress, "self-blends, train"), blend_labels)
        val_paths, val_labels = _paths_and_labels(splits.validation)
        val_features = crop_features(session, preprocessor, val_paths, progress, "crops, validation")
    weight, bias = fit_head(table, classifier.weight.detach().numpy()[0], float(classifier.bias.detach()[0]),
                            options, blends if len(blend_paths) else None)
    with torch.no_grad():
        classifier.weight.copy_(torch.from_numpy(weight).float()[None])
        classifier.bias.fill_(bias)
    scores = 1 / (1 + np.exp(-(val_features.astype(np.float64) @ weight + bias)))
    threshold = calibrate_threshold(val_labels, scores)
    record = {"from": str(checkpoint), "options": asdict(options), "photos": int(len(table.photo_labels)),
              "regions": {"fake": int((table.labels == 1).sum()), "real": int((table.labels == 0).sum()),
                          "left_out": int((table.labels < 0).sum())},
              "self_blend_crops": len(blend_paths), "seconds": round(time.perf_counter() - started, 1)}
    card = card.replace(threshold=threshold, metrics={"validation": compute_metrics(val_labels, scores, threshold)},
                        image_threshold=None, video_rule=None, video_threshold=None, video_length_thresholds=None,
                        extra={**card.extra, "head_refit": record})
    save_checkpoint(out, model, card)
    return record
