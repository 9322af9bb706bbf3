"""Dataset readers (both layouts, bad files, errors) and self-blended synthesis (masks, determinism)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from deepfake_edge.cli import CommandError
from deepfake_edge.faces import detect_faces
from deepfake_edge.training import blending, synth
from deepfake_edge.training import photos as photos_module
from deepfake_edge.training.commands import register
from deepfake_edge.training.datasets import (
    DatasetSplits,
    Sample,
    balanced_sample_weights,
    load_splits,
    pos_weight,
)
from deepfake_edge.training.evaluate import by_source, twin_indices, twin_ranking


def _photo(seed: int, size: int = 40) -> Image.Image:
    """A small natural-ish image (smooth gradients plus noise), different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y - seed), x * y], axis=-1)
    pixels = (base * 0.5 + 0.5) * 200 + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _fill(folder: Path, count: int, start: int = 0, suffix: str = ".jpg") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = folder / f"img_{index:04d}{suffix}"
        _photo(index).save(path)
        paths.append(path)
    return paths


def test_kaggle_layout_with_any_letter_case_and_val_alias(tmp_path: Path) -> None:
    _fill(tmp_path / "Train" / "REAL", 6)
    _fill(tmp_path / "Train" / "fake", 4, start=100)
    _fill(tmp_path / "val" / "Real", 2, start=200)
    _fill(tmp_path / "val" / "Fake" / "nested", 3, start=300)
    _fill(tmp_path / "TEST" / "real", 1, start=400, suffix=".png")
    _fill(tmp_path / "TEST" / "Fake", 2, start=500)
    splits = load_splits(tmp_path)
    assert splits.layout == "kaggle"
    assert splits.class_counts() == {
        "train": {"Real": 6, "Fake": 4},
        "validation": {"Real": 2, "Fake": 3},
        "test": {"Real": 1, "Fake": 2},
    }
    assert all(s.label == 0 for s in splits.train if s.path.parent.name == "REAL")
    assert all(s.label == 1 for s in splits.validation if "Fake" in s.path.parts)
    assert splits.skipped == []
    assert "train 6 Real / 4 Fake" in splits.describe()


def test_kaggle_layout_without_test_folder_carves_it_from_train(tmp_path: Path) -> None:
    _fill(tmp_path / "train" / "Real", 20)
    _fill(tmp_path / "train" / "Fake", 20, start=100)
    _fill(tmp_path / "validation" / "Real", 3, start=200)
    _fill(tmp_path / "validation" / "Fake", 3, start=300)
    splits = load_splits(tmp_path, test_fraction=0.25)
    assert splits.layout == "kaggle+carved"
    assert splits.class_counts()["test"] == {"Real": 5, "Fake": 5}
    assert splits.class_counts()["train"] == {"Real": 15, "Fake": 15}
    assert not {s.path for s in splits.test} & {s.path for s in splits.train}


def test_flat_layout_split_is_stratified_seeded_and_disjoint(tmp_path: Path) -> None:
    _fill(tmp_path / "real", 40)
    _fill(tmp_path / "FAKE", 20, start=100)
    splits = load_splits(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert splits.layout == "flat"
    assert splits.class_counts() == {
        "train": {"Real": 28, "Fake": 14},
        "validation": {"Real": 8, "Fake": 4},
        "test": {"Real": 4, "Fake": 2},
    }
    parts = [{s.path for s in splits.split(name)} for name in ("train", "validation", "test")]
    assert len(parts[0] | parts[1] | parts[2]) == 60 and sum(map(len, parts)) == 60
    again = load_splits(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert again.test == splits.test and again.validation == splits.validation
    other = load_splits(tmp_path, val_fraction=0.2, test_fraction=0.1, seed=4)
    assert {s.path for s in other.test} != parts[2]


def test_bad_files_are_skipped_with_a_warning_and_counted(tmp_path: Path) -> None:
    good = _fill(tmp_path / "Real", 5) + _fill(tmp_path / "Fake", 5, start=100)
    (tmp_path / "Real" / "empty.jpg").write_bytes(b"")
    (tmp_path / "Real" / "text.png").write_text("not an image")
    truncated = good[0].read_bytes()
    (tmp_path / "Fake" / "truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    (tmp_path / "Fake" / "notes.txt").write_text("hello")
    (tmp_path / "Fake" / ".DS_Store").write_bytes(b"\0\0")  # hidden files are not dataset files
    with pytest.warns(UserWarning, match="skipping") as record:
        splits = load_splits(tmp_path, val_fraction=0.2, test_fraction=0.2)
    skipped = {path.name: reason for path, reason in splits.skipped}
    assert set(skipped) == {"empty.jpg", "text.png", "truncated.jpg", "notes.txt"}
    assert "empty" in skipped["empty.jpg"] and "truncated" in skipped["truncated.jpg"].lower()
    assert len(record) == 4
    assert sum(sum(c.values()) for c in splits.class_counts().values()) == 10
    assert "4 unreadable file(s) skipped" in splits.describe()


def test_empty_or_missing_class_folder_is_a_clear_error(tmp_path: Path) -> None:
    _fill(tmp_path / "a" / "Real", 3)
    (tmp_path / "a" / "Fake").mkdir()
    with pytest.raises(ValueError, match=r"a/Fake has no readable images"):
        load_splits(tmp_path / "a")
    _fill(tmp_path / "b" / "train" / "Real", 3)
    with pytest.raises(ValueError, match=r"missing class folder .*b/train/Fake"):
        load_splits(tmp_path / "b")
    (tmp_path / "c" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="neither split folders"):
        load_splits(tmp_path / "c")


def test_pos_weight_and_sample_weights_balance_the_classes() -> None:
    samples = [Sample(Path(f"r{i}"), 0) for i in range(6)] + [Sample(Path(f"f{i}"), 1) for i in range(2)]
    assert pos_weight(samples) == 3.0
    weights = balanced_sample_weights(samples)
    assert sum(weights[:6]) == pytest.approx(1.0) and sum(weights[6:]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both classes"):
        pos_weight(samples[:6])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), photo_side=st.integers(25, 160), work_size=st.integers(16, 128))
def test_fake_differs_from_real_only_inside_the_mask(seed: int, photo_side: int, work_size: int) -> None:
    photo = np.asarray(_photo(seed % 1000, size=photo_side))
    pair = blending.blend_pair(photo, np.random.default_rng(seed), work_size=work_size)
    assert pair.real.shape == pair.fake.shape == (work_size, work_size, 3)
    assert pair.mask.shape == (work_size, work_size)
    assert 0.0 <= pair.mask.min() and 0.0 < pair.mask.max() <= 1.0
    border = np.concatenate([pair.mask[0], pair.mask[-1], pair.mask[:, 0], pair.mask[:, -1]])
    assert not border.any(), "the mask must lie inside the image, away from its border"
    changed = np.any(pair.real != pair.fake, axis=-1)
    assert changed.any(), "the blend changed nothing"
    assert not (changed & (pair.mask == 0)).any(), "pixels outside the mask were modified"


def test_masks_are_varied_and_soft() -> None:
    masks = [blending.random_blend_mask(64, np.random.default_rng(seed)) for seed in range(20)]
    areas = [float((m > 0).mean()) for m in masks]
    assert min(areas) > 0.03 and max(areas) < 0.9
    assert len({round(a, 3) for a in areas}) > 15
    assert all(((m > 0) & (m < 1)).any() for m in masks), "masks must have soft edges"


def test_face_centred_crops_put_the_mask_on_the_face(monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    from deepfake_edge.preprocessing import load_image

    grace = np.asarray(load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    faces = detect_faces(grace)
    assert len(faces) == 1
    x, y, w, h = faces[0]
    assert 0.15 < (x + w / 2) / grace.shape[1] < 0.85 and (y + h / 2) / grace.shape[0] < 0.6  # her face
    monkeypatch.setattr(blending, "FACE_CROP_PROBABILITY", 1.0)
    for seed in range(8):
        pair = blending.blend_pair(grace, np.random.default_rng(seed), work_size=96, faces=faces)
        rows, cols = np.nonzero(pair.mask)
        # the crop is centred on the face (+-10 % jitter), so the mask's centre is near the crop's
        assert abs(rows.mean() - 48) < 20 and abs(cols.mean() - 48) < 20
        assert not (np.any(pair.real != pair.fake, axis=-1) & (pair.mask == 0)).any()


def test_splits_get_disjoint_source_photos_spread_over_categories() -> None:
    photos = [photos_module.Photo(f"{c}{i}", c, f"{c}{i}", _photo(i)) for c in "abc" for i in range(10)]
    photos.append(photos_module.Photo("a0_twin", "a", "a0", _photo(99)))  # same scene as a0
    assigned = synth.assign_splits(photos, val_fraction=0.2, test_fraction=0.2, seed=0)
    names = {split: {p.name for p in members} for split, members in assigned.items()}
    assert sum(map(len, names.values())) == 31
    assert not names["train"] & names["test"] and not names["validation"] & names["test"]
    assert not names["train"] & names["validation"]
    assert {len(names["validation"] - {"a0_twin"}), len(names["test"] - {"a0_twin"})} == {6}
    twin_split = next(split for split, n in names.items() if "a0_twin" in n)
    assert "a0" in names[twin_split]
    assert {p.category for p in assigned["test"]} == {"a", "b", "c"}


def test_packaged_photos_load_offline() -> None:
    photos = photos_module.packaged_photos()
    names = {name for name, _ in photos}
    assert {"astronaut", "coffee", "grace_hopper", "lfw_face_000"} <= names
    assert all(image.mode == "RGB" and min(image.size) >= 25 for _, image in photos)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synthesis_is_deterministic_readable_and_masks_are_not_samples(tmp_path: Path) -> None:
    source = tmp_path / "photos"
    for index in range(6):
        source.mkdir(exist_ok=True)
        _photo(index, size=90).save(source / f"p{index}.png")
    (source / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    kwargs = dict(source=source, count=24, image_size=48, seed=7, progress=False)
    manifest = synth.synthesize(tmp_path / "a", **kwargs)
    synth.synthesize(tmp_path / "b", **kwargs, workers=2)  # sharing photos among processes changes no byte
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "photos"]  # no staging left behind
    # Replaces its own earlier output; another seed with the first's split seed: new samples, same split photos.
    fresh = synth.synthesize(tmp_path / "a", **{**kwargs, "seed": 8, "split_seed": 7})
    assert _digest(tmp_path / "a") != _digest(tmp_path / "b")
    assert fresh["photos"] == manifest["photos"] and (fresh["seed"], fresh["split_seed"]) == (8, 7)

    photos = manifest["photos"]
    assert not set(photos["train"]) & set(photos["test"]) and not set(photos["validation"]) & set(photos["test"])
    assert "broken.jpg" not in sum(photos.values(), [])
    splits = load_splits(tmp_path / "b")
    assert isinstance(splits, DatasetSplits) and splits.layout == "kaggle" and not splits.skipped
    counts = splits.class_counts()
    assert sum(sum(c.values()) for c in counts.values()) == 24
    assert all(c["Real"] == c["Fake"] for c in counts.values())
    assert not any("masks" in s.path.parts for name in ("train", "validation", "test") for s in splits.split(name))
    for sample in splits.test:
        assert Image.open(sample.path).size == (48, 48)
        if sample.label == 1:
            mask = Image.open(sample.path.parent.parent / synth.MASK_FOLDER / f"{sample.path.stem}.png")
            assert mask.size == (48, 48) and np.asarray(mask).max() > 0
    assert "not real deepfakes" in splits.describe()
    assert json.loads((tmp_path / "b" / "synth.json").read_text())["seed"] == 7
    for name in ("train", "validation", "test"):
        sources = synth.read_sources(tmp_path / "b" / name)
        assert sorted(sources) == sorted({s.path.stem for s in splits.split(name)})
        assert set(sources.values()) <= set(photos[name])


def test_evaluation_scores_each_source_photo_of_a_synth_set(tmp_path: Path) -> None:
    split = tmp_path / "test"
    (split / synth.SOURCES_FILE).parent.mkdir(parents=True)
    (split / synth.SOURCES_FILE).write_text(json.dumps({"000000": "sky", "000001": "sky", "000002": "leaf"}))
    samples = [Sample(split / label / f"{stem}.jpg", index) for index, label in enumerate(("Real", "Fake"))
               for stem in ("000000", "000001", "000002")]
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.3, 0.6, 0.2, 0.9, 0.5])  # sky: 0.1 0.3 vs 0.2 0.9; leaf: 0.6 vs 0.5
    per_source = by_source(samples, labels, scores)
    assert per_source == {"leaf": {"n": 2, "roc_auc": 0.0}, "sky": {"n": 4, "roc_auc": 0.75}}
    assert by_source([Sample(tmp_path / "other" / "Real" / "a.jpg", 0)], labels[:1], scores[:1]) == {}


def test_twin_ranking_compares_each_fake_with_its_own_real(tmp_path: Path) -> None:
    stems = ("000000", "000001", "000002", "000003")
    samples = [Sample(tmp_path / "test" / label / f"{stem}.jpg", index)
               for index, label in enumerate(("Real", "Fake")) for stem in stems]
    samples.append(Sample(tmp_path / "test" / "Fake" / "lonely.jpg", 1))  # no twin: not a pair
    # real/fake: 0.1/0.2 above, 0.3/0.9 above, 0.6/0.5 below, 0.4/0.4 a tie (half)
    scores = np.array([0.1, 0.3, 0.6, 0.4, 0.2, 0.9, 0.5, 0.4, 0.99])
    twins = twin_indices(samples)
    assert twins.tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert twin_ranking(scores[twins[:, 0]], scores[twins[:, 1]]) == {"twin_pairs": 4, "twin_accuracy": 2.5 / 4}
    assert twin_indices(samples[4:]).shape == (0, 2)


def test_synthesis_refuses_to_overwrite_foreign_folders(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not empty"):
        synth.synthesize(tmp_path, count=6, image_size=32, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_data_info_command_reports_counts_and_skips(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import argparse

    _fill(tmp_path / "real", 10)
    _fill(tmp_path / "fake", 10, start=100)
    (tmp_path / "fake" / "bad.jpg").write_bytes(b"garbage")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["data", "info", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "layout: flat" in out and "skipped: 1 file(s)" in out and "bad.jpg" in out
    args = parser.parse_args(["data", "info", str(tmp_path / "nowhere")])
    with pytest.raises(CommandError, match="not found") as raised:
        args.func(args)
    assert raised.value.exit_code == 2
