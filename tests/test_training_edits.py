"""Full-size edit families (training/edits.py) and the full-size pair writer (training/edit_synth.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from deepfake_edge.model_card import LABELS
from deepfake_edge.training import edit_synth
from deepfake_edge.training.edits import EDIT_FAMILIES, Edit, make_edit
from deepfake_edge.training.photos import Photo

SIDE = 288


def _small(array: np.ndarray, long_side: int = SIDE) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    height, width = array.shape[:2]
    factor = long_side / max(height, width)
    return cv2.resize(array, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def pictures():
    astronaut = _small(skimage.data.astronaut())
    face = (int(0.43 * SIDE), int(0.12 * SIDE), int(0.16 * SIDE), int(0.2 * SIDE))  # her face, roughly
    return {"astronaut": astronaut, "faces": [face], "chelsea": _small(skimage.data.chelsea()),
            "coffee": _small(skimage.data.coffee())}


def _check(edit: Edit, photo: np.ndarray, family: str) -> None:
    assert isinstance(edit, Edit) and edit.family == family
    assert edit.image.dtype == np.uint8 and edit.image.shape == photo.shape
    assert edit.mask.dtype == np.float32 and edit.mask.shape == photo.shape[:2]
    assert 0.0 <= float(edit.mask.min()) and float(edit.mask.max()) <= 1.0
    changed = (edit.image != photo).any(axis=2)
    assert not (changed & (edit.mask == 0)).any(), f"{family} changed pixels outside its mask"
    assert changed.any(), f"{family} changed nothing"
    covered = float((edit.mask > 0).mean())
    assert 0.0 < covered < 0.9, f"{family} mask covers {covered:.0%} of the image"
    json.dumps(edit.detail)


@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_every_family_changes_pixels_only_inside_its_mask(family, pictures):
    photo, donor = pictures["astronaut"], pictures["coffee"]
    for seed in range(4):
        edit = make_edit(family, photo, donor, np.random.default_rng(seed), pictures["faces"], pictures["faces"])
        _check(edit, photo, family)


def test_face_swap_pastes_a_face_into_a_photo_without_one_and_refuses_without_any(pictures):
    photo, donor = pictures["chelsea"], pictures["astronaut"]
    edit = make_edit("face_swap", photo, donor, np.random.default_rng(0), [], pictures["faces"])
    _check(edit, photo, "face_swap")
    assert edit.detail["mode"] == "paste"
    # A 25 px grey face crop (LFW-like) as the donor: upscaled onto her face.
    crop = np.repeat(cv2.resize(pictures["astronaut"], (25, 25))[..., :1], 3, axis=2)
    edit = make_edit("face_swap", pictures["astronaut"], crop, np.random.default_rng(1), pictures["faces"],
                     [(0, 0, 25, 25)])
    _check(edit, pictures["astronaut"], "face_swap")
    assert edit.detail["mode"] == "swap"
    with pytest.raises(ValueError):
        make_edit("face_swap", photo, pictures["coffee"], np.random.default_rng(0), [], [])
    with pytest.raises(ValueError):
        make_edit("sharpen", photo, donor, np.random.default_rng(0))


@pytest.mark.parametrize("family", ["splice", "graphic", "copy_move", "inpaint"])
def test_edits_reach_the_borders(family, pictures):
    photo, donor = pictures["chelsea"], pictures["coffee"]
    touched = set()
    for seed in range(40):
        mask = make_edit(family, photo, donor, np.random.default_rng(seed)).mask > 0
        touched.update(side for side, edge in
                       (("top", mask[0]), ("bottom", mask[-1]), ("left", mask[:, 0]), ("right", mask[:, -1]))
                       if edge.any())
    assert len(touched) >= 2, f"{family} masks touched only {touched} over 40 seeds"


def test_edits_vary_in_size_shape_and_edge(pictures):
    photo, donor = pictures["chelsea"], pictures["coffee"]
    edits = [make_edit("splice", photo, donor, np.random.default_rng(seed)) for seed in range(30)]
    areas = [float((e.mask > 0).mean()) for e in edits]
    assert min(areas) < 0.06 and max(areas) > 0.15
    assert {e.detail["edge"] for e in edits} == {"hard", "feathered"}
    assert len({e.detail["shape"] for e in edits}) >= 4
    assert len({e.detail["blend"].split("_")[0] for e in edits}) >= 2
    feathered = next(e for e in edits if e.detail["edge"] == "feathered")
    assert ((feathered.mask > 0) & (feathered.mask < 1)).sum() > 20  # soft weights at the edge


def test_make_edit_is_deterministic(pictures):
    photo, donor = pictures["astronaut"], pictures["coffee"]
    for family in EDIT_FAMILIES:
        a = make_edit(family, photo, donor, np.random.default_rng(5), pictures["faces"], pictures["faces"])
        b = make_edit(family, photo, donor, np.random.default_rng(5), pictures["faces"], pictures["faces"])
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.detail == b.detail


# ------------------------------------------------------------------------------------ edit_synth


def _photos() -> list[Photo]:
    pictures = {"astronaut": ("people", skimage.data.astronaut()), "chelsea": ("animals", skimage.data.chelsea()),
                "coffee": ("objects", skimage.data.coffee()), "rocket": ("objects", skimage.data.rocket()),
                "camera": ("people", skimage.data.camera()), "coins": ("objects", skimage.data.coins()),
                "brick": ("texture", skimage.data.brick())}
    photos = [Photo(name, category, name, Image.fromarray(_small(array, 320)), find_faces=category == "people")
              for name, (category, array) in pictures.items()]
    for index, face in enumerate(skimage.data.lfw_subset()[:3]):
        image = Image.fromarray(np.round(face * 255).astype(np.uint8)).convert("RGB")
        photos.append(Photo(f"lfw_face_{index:03d}", "faces", f"lfw_{index:03d}", image))
    return photos


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


_ARGS = {"pairs": 10, "seed": 3, "sizes": (256, 360), "progress": False}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("edits") / "set"
    (out / "train" / "Real").mkdir(parents=True)  # a self-blend set already there stays
    (out / "train" / "Real" / "000000.jpg").write_bytes(b"keep")
    manifest = edit_synth.synthesize_edits(out, photos=_photos(), **_ARGS)
    return out, manifest


def test_layout_and_manifest(written):
    out, manifest = written
    assert (out / "train" / "Real" / "000000.jpg").read_bytes() == b"keep"
    assert json.loads((out / edit_synth.FULL_MANIFEST).read_text()) == manifest
    assert sum(manifest["pairs"].values()) == 10 and manifest["seed"] == 3 and manifest["sizes"] == [256, 360]
    assert sum(sum(f.values()) for f in manifest["families"].values()) == 10
    assert not list(out.glob(".*")), "staging left behind"
    for split, count in manifest["pairs"].items():
        folder = out / split / edit_synth.FULL_FOLDER
        records = json.loads((folder / edit_synth.EDITS_FILE).read_text())
        assert sorted(records) == [f"{i:06d}" for i in range(count)]
        for stem, record in records.items():
            assert record["family"] in EDIT_FAMILIES and {"detail", "source", "donor", "augment"} <= set(record)
            real = Image.open(folder / LABELS[0] / f"{stem}.jpg")
            fake = Image.open(folder / LABELS[1] / f"{stem}.jpg")
            mask = np.asarray(Image.open(folder / "masks" / f"{stem}.png"))
            assert real.size == fake.size == (record["width"], record["height"]) == mask.shape[::-1]
            assert mask.dtype == np.uint8 and 0 < (mask > 0).mean() < 0.9
            assert not record["source"].startswith("lfw_")  # 25 px crops are never destinations


def test_splits_are_disjoint_in_sources_and_donors(written):
    out, manifest = written
    used = {}
    for split in manifest["pairs"]:
        records = json.loads((out / split / "full" / edit_synth.EDITS_FILE).read_text())
        names = {r["source"] for r in records.values()} | {r["donor"] for r in records.values() if r["donor"]}
        assert names <= set(manifest["photos"][split])
        used[split] = names
    splits = list(used)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not used[a] & used[b] and not set(manifest["photos"][a]) & set(manifest["photos"][b])


def test_same_arguments_same_bytes_with_any_worker_count_and_rerun_replaces(written, tmp_path):
    out, manifest = written
    before = _digest(out / "test" / "full") + _digest(out / "train" / "full")
    other = tmp_path / "other"
    edit_synth.synthesize_edits(other, photos=_photos(), workers=2, **_ARGS)
    assert _digest(other / "test" / "full") + _digest(other / "train" / "full") == before
    (other / "train" / "full" / "stale.txt").write_text("old")
    # Another seed with the first's split seed draws new pairs of the same split photos.
    fresh = edit_synth.synthesize_edits(other, photos=_photos(), **{**_ARGS, "pairs": 5, "seed": 4, "split_seed": 3})
    assert not (other / "train" / "full" / "stale.txt").exists()
    assert fresh["photos"] == manifest["photos"] and fresh["split_seed"] == 3
    assert json.loads((other / "full.json").read_text())["pairs"]["train"] == 3


def test_pairs_differ_only_inside_the_mask_after_augmentation():
    photos = _photos()
    faces = [p for p in photos if p.category == "faces"]
    for index, family in enumerate(EDIT_FAMILIES):
        real, fake, mask, record = edit_synth.make_pair(photos[0], index, family, photos[2], faces,
                                                        (256, 360), (70, 100), [0, 0])
        assert real.shape == fake.shape and mask.shape == real.shape[:2]
        changed = (real != fake).any(axis=2)
        assert changed.any() and not (changed & (mask == 0)).any(), record["family"]
        assert not (changed & (np.asarray(edit_synth.mask_png(mask)) == 0)).any()  # the 8-bit mask too
        assert max(real.shape[:2]) <= 360


# ------------------------------------------------------------------------------------ hard negatives


def test_hard_negatives_are_the_highest_scored_regions_of_unedited_training_photos(written, tmp_path):
    import shutil

    import torch

    from deepfake_edge.checkpoint import save_checkpoint
    from deepfake_edge.model_card import ModelCard
    from deepfake_edge.models import build_model
    from deepfake_edge.preprocessing import Preprocessor, load_image
    from deepfake_edge.regions import analyse
    from deepfake_edge.training import hard_negatives
    from deepfake_edge.training.datasets import load_splits
    from deepfake_edge.training.evaluate import by_kind
    from deepfake_edge.training.pairing import pair_groups
    from deepfake_edge.training.region_crops import write_region_crops
    from deepfake_edge.training.whole_image import forward_rows, served_session

    root = tmp_path / "set"
    shutil.copytree(written[0], root)
    write_region_crops(root, Preprocessor(64, 72), progress=False)
    for label in LABELS:  # one self-blend pair beside the region crops
        Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(root / "train" / label / "000001.jpg")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "cnn.safetensors", build_model("small_cnn"),
                                 ModelCard(arch="small_cnn", input_size=64, resize_size=72))
    photos = json.loads((root / "train" / "full" / edit_synth.EDITS_FILE).read_text())

    counts = hard_negatives.mine_hard_negatives(root, checkpoint, per_photo=2, min_probability=0.0, progress=False)
    assert counts == {"train": {"photos": len(photos), "crops": 2 * len(photos)}}
    written_names = sorted(p.stem for p in (root / "train" / "Real").glob("n*.jpg"))
    assert written_names == sorted(f"n{stem}_{rank}" for stem in photos for rank in range(2))
    assert not list((root / "validation" / "Real").glob("n*")), "only the training split is mined by default"
    sources = json.loads((root / "train" / "sources.json").read_text())
    assert all(sources[f"n{stem}_0"] == record["source"] for stem, record in photos.items())
    manifest = json.loads((root / hard_negatives.MANIFEST_FILE).read_text())
    assert manifest["per_photo"] == 2 and len(manifest["checkpoint_sha256"]) == 64

    # The crops are the regions the checkpoint scored highest, cut as inference cuts them (JPEG 95 apart).
    stem = sorted(photos)[0]
    with served_session(checkpoint) as (session, preprocessor):
        _, rows = analyse(load_image(root / "train" / "full" / "Real" / f"{stem}.jpg"), preprocessor)
        probabilities, _ = forward_rows(session, rows)
    for rank, index in enumerate(np.argsort(-probabilities, kind="stable")[:2]):
        crop = np.asarray(Image.open(root / "train" / "Real" / f"n{stem}_{rank}.jpg"), dtype=np.float32)
        assert np.abs(crop - rows[index].transpose(1, 2, 0)).mean() < 3.0

    # train reads them as Real images without a twin; crop-level evaluation counts them with the edit regions.
    samples = load_splits(root).split("train")
    mined = [i for i, s in enumerate(samples) if s.path.stem.startswith("n")]
    assert len(mined) == 2 * len(photos) and all(samples[i].label == 0 for i in mined)
    assert all([i] in pair_groups(samples) for i in mined)
    labels = np.array([s.label for s in samples])
    kinds = by_kind(samples, labels, np.random.default_rng(0).random(len(samples)))
    assert kinds["edit_regions"]["n"] == sum(s.path.stem.startswith(("e", "n")) for s in samples)

    # A rerun replaces them; a probability floor no region reaches writes none.
    again = hard_negatives.mine_hard_negatives(root, checkpoint, per_photo=1, min_probability=1.0, progress=False)
    assert again["train"]["crops"] == 0 and not list((root / "train" / "Real").glob("n*.jpg"))
    assert not [name for name in json.loads((root / "train" / "sources.json").read_text()) if name.startswith("n")]
    with pytest.raises(ValueError, match="data edits"):
        hard_negatives.mine_hard_negatives(tmp_path / "empty", checkpoint, progress=False)


def test_hardest_regions_keeps_the_top_ones_over_the_floor():
    from deepfake_edge.training.hard_negatives import hardest_regions

    assert hardest_regions(np.array([0.2, 0.9, 0.6, 0.9, 0.1]), 3, 0.5) == [1, 3, 2]
    assert hardest_regions(np.array([0.2, 0.9, 0.6]), 2, 0.7) == [1]
    assert hardest_regions(np.array([0.2, 0.3]), 2, 0.5) == []
