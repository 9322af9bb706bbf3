"""``refit-head`` (training/head_refit.py): the last layer refitted on every region of the training photos."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from safetensors import safe_open
from sklearn.metrics import roc_auc_score

from deepfake_edge.checkpoint import read_card, save_checkpoint
from deepfake_edge.model_card import ModelCard
from deepfake_edge.models import build_model
from deepfake_edge.training.config import RefitOptions
from deepfake_edge.training.head_refit import RegionTable, fit_head, refit_head, region_labels


def _photos(rng: np.random.Generator, pairs: int, regions: int = 12, channels: int = 8) -> RegionTable:
    """Twins of ``pairs`` photos whose regions are noise; in each edited twin one region also carries the edit,
    a shift along channel 0, and is labelled Fake. Channel 1 carries the photo's scene, shared by both twins
    and by every region: a head that reads it scores whole photos, not edits."""
    features, labels, photo = [], [], []
    for index in range(2 * pairs):
        edited = index % 2
        x = rng.normal(size=(regions, channels))
        x[:, 1] += rng.normal() * 3
        y = np.zeros(regions, dtype=np.int8)
        if edited:
            x[0, 0] += 4.0
            y[0] = 1
        features.append(x)
        labels.append(y)
        photo.append(np.full(regions, index))
    return RegionTable(np.concatenate(features), np.concatenate(labels), np.concatenate(photo),
                       np.array([index % 2 for index in range(2 * pairs)], dtype=np.int8))


def _photo_auc(table: RegionTable, weight: np.ndarray, bias: float) -> float:
    logits = table.features @ weight + bias
    peaks = [logits[table.photo == index].max() for index in range(len(table.photo_labels))]
    return roc_auc_score(table.photo_labels, peaks)


def test_the_refitted_head_finds_the_edited_region_where_the_old_one_read_the_scene():
    rng = np.random.default_rng(0)
    train, held_out = _photos(rng, 150), _photos(rng, 150)
    old = np.zeros(8)
    old[1] = 1.0  # the old head reads the scene only
    assert _photo_auc(held_out, old, 0.0) < 0.6
    weight, bias = fit_head(train, old, 0.0, RefitOptions(pull=1e-3))
    assert _photo_auc(held_out, weight, bias) > 0.95
    assert weight[0] > 5 * abs(weight[1])
    # The pull keeps a head where it was when it is strong enough.
    held, _ = fit_head(train, old, 0.0, RefitOptions(pull=1e4))
    assert np.allclose(held, old, atol=0.05)


def test_region_labels_follow_the_edit_mask():
    overlap = np.array([0.0, 0.05, 0.1, 0.02, 0.5])
    cover = np.array([0.0, 0.1, 0.0, 0.3, 1.0])
    assert region_labels(overlap, cover).tolist() == [0, -1, 1, 1, 1]


def _write_set(root, size: int = 64) -> None:
    """A 'data edits'-style set: train/full with two pairs (a square pasted from another photo), and crops."""
    full = root / "train" / "full"
    for name in ("Real", "Fake", "masks"):
        (full / name).mkdir(parents=True)
    donor = skimage.data.astronaut()
    edits = {}
    for stem, picture in (("000000", skimage.data.coffee()), ("000001", skimage.data.chelsea())):
        edited = picture.copy()
        edited[100:228, 150:278] = donor[180:308, 180:308]
        Image.fromarray(picture).save(full / "Real" / f"{stem}.jpg", quality=95)
        Image.fromarray(edited).save(full / "Fake" / f"{stem}.jpg", quality=95)
        Image.fromarray(((edited != picture).any(axis=2) * 255).astype(np.uint8)).save(full / "masks" / f"{stem}.png")
        edits[stem] = {"family": "splice", "source": stem}
    (full / "edits.json").write_text(json.dumps(edits))
    rng = np.random.default_rng(0)
    for split in ("train", "validation", "test"):
        for label in ("Real", "Fake"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(6):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i:06d}.jpg")


def test_refit_head_changes_only_the_classifier_and_resets_the_calibrated_verdicts(tmp_path):
    _write_set(tmp_path / "set")
    torch.manual_seed(0)
    card = ModelCard(arch="small_cnn", input_size=64, resize_size=72, image_threshold=0.9, video_rule="peak",
                     video_threshold=0.8, copy_move_calibration=(-1.0, 2.0), extra={"epochs": 3})
    checkpoint = save_checkpoint(tmp_path / "cnn.safetensors", build_model("small_cnn"), card)
    out = tmp_path / "refit.safetensors"

    record = refit_head(checkpoint, tmp_path / "set", out, RefitOptions(), progress=False)

    assert record["photos"] == 4 and record["regions"]["fake"] >= 2 and record["self_blend_crops"] == 12
    with safe_open(str(checkpoint), "pt") as before, safe_open(str(out), "pt") as after:
        assert set(before.keys()) == set(after.keys())
        changed = {name for name in before.keys() if not torch.equal(before.get_tensor(name), after.get_tensor(name))}
    assert changed == {"classifier.weight", "classifier.bias"}
    refitted = read_card(out)
    assert refitted.image_threshold is None and refitted.video_rule is None and refitted.video_threshold is None
    assert refitted.copy_move_calibration == (-1.0, 2.0)  # the check does not depend on the head
    assert refitted.extra["epochs"] == 3 and refitted.extra["head_refit"]["from"] == str(checkpoint)
    assert refitted.metrics["validation"]["n"] == 12 and 0 < refitted.threshold < 1


def test_the_verb_needs_full_size_photos(tmp_path):
    (tmp_path / "set" / "train" / "Real").mkdir(parents=True)
    checkpoint = save_checkpoint(tmp_path / "cnn.safetensors", build_model("small_cnn"),
                                 ModelCard(arch="small_cnn", input_size=64, resize_size=72))
    result = subprocess.run([sys.executable, "-m", "deepfake_edge.cli", "refit-head", str(checkpoint),
                             str(tmp_path / "set"), "--out", str(tmp_path / "out.safetensors")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "needs full-size photos" in result.stderr and "data edits" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.safetensors").exists()
