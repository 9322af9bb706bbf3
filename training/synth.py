"""``deepfake-edge data synth``: a self-blended real/fake dataset from real photos (see blending.py).

Output is the kaggle layout ``OUT/{train,validation,test}/{Real,Fake}/NNNNNN.jpg``. ``Real/N`` and
``Fake/N`` come from the same crop; the blend mask of ``Fake/N`` is ``OUT/<split>/masks/N.png`` (8-bit
weight of the perturbed copy, at output resolution), a folder the dataset readers never enter.
``OUT/<split>/sources.json`` names the source photo of every N, so ``evaluate`` can score each photo.
``OUT/synth.json`` records how the set was made. Whole source photos are assigned to one split, so the
test split holds only photos never seen in training. Every sample has its own seed derived from
(seed, split, index): the same arguments write identical bytes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepfake_edge.model_card import LABELS
from deepfake_edge.faces import detect_faces
from deepfake_edge.training.blending import blend_pair, finish, finish_mask
from deepfake_edge.training.datasets import MASK_FOLDER, SPLITS, SYNTH_MANIFEST
from deepfake_edge.training.photos import Photo, folder_photos, packaged_photo_records

DEFAULT_OUT = Path("data/synth")
DEFAULT_COUNT = 4000
DEFAULT_IMAGE_SIZE = 160
DEFAULT_JPEG_QUALITY = (75, 100)
SOURCES_FILE = "sources.json"
# Blending happens at 1-1.5x the output size, so the final resize softens it as video pipelines do.
_WORK_SCALE = (1.0, 1.5)
_MAX_PHOTO_WEIGHT = 1024.0  # sampling weight is the side of the square of equal area, capped


def assign_splits(photos: list[Photo], val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, list[Photo]]:
    """Deal whole scenes to train/validation/test, spread over categories, seeded.

    Scenes are shuffled within their category and the categories concatenated; test and validation
    then take evenly spaced positions of that list (random phase), so each split samples every part
    of it. Validation and test get at least one scene each, train keeps the rest.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    scenes: dict[str, list[Photo]] = {}
    for photo in photos:
        scenes.setdefault(photo.scene, []).append(photo)
    if len(scenes) < 3:
        raise ValueError(f"need at least 3 distinct source photos to keep splits disjoint, got {len(scenes)}")
    by_category: dict[str, list[str]] = {}
    for scene, members in sorted(scenes.items()):
        by_category.setdefault(members[0].category, []).append(scene)
    order = [by_category[c][i] for c in sorted(by_category) for i in rng.permutation(len(by_category[c]))]
    n_test = max(1, round(len(order) * test_fraction))
    n_val = max(1, round(len(order) * val_fraction))
    if n_test + n_val >= len(order):
        raise ValueError(f"{len(order)} source photos are too few for a train split with these fractions")
    test = set(_evenly_spaced(list(range(len(order))), n_test, rng.random()))
    rest = [position for position in range(len(order)) if position not in test]
    validation = set(_evenly_spaced(rest, n_val, rng.random()))
    assigned: dict[str, list[Photo]] = {name: [] for name in SPLITS}
    for position, scene in enumerate(order):
        split = "test" if position in test else "validation" if position in validation else "train"
        assigned[split].extend(scenes[scene])
    return assigned


def _evenly_spaced(items: list[int], n: int, phase: float) -> list[int]:
    return [items[int((i + phase) * len(items) / n)] for i in range(n)]


def synthesize(
    out_dir: str | Path = DEFAULT_OUT,
    source: str | Path | None = None,
    count: int = DEFAULT_COUNT,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    jpeg_quality: tuple[int, int] = DEFAULT_JPEG_QUALITY,
    progress: bool = True,
    workers: int = 1,
    split_seed: int | None = None,
) -> dict:
    """Write ``count`` images (half Real, half Fake) in the kaggle layout under ``out_dir``.

    ``source`` is a folder of real images; ``None`` uses the packaged catalogue (training/photos.py).
    ``out_dir`` must be empty, missing, or an earlier output of this function (replaced).
    ``workers`` > 1 shares the photos out among that many processes; the output is the same bytes.
    ``split_seed`` (default ``seed``) deals the photos to the splits: another ``seed`` with an existing
    set's ``split_seed`` draws fresh samples of the same train/validation/test photos.
    Returns the manifest also written to ``out_dir/synth.json``.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if count < 6:
        raise ValueError(f"count must be at least 6 (a real/fake pair per split), got {count}")
    if not 16 <= image_size <= 1024:
        raise ValueError(f"image_size must be between 16 and 1024 px, got {image_size}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction and test_fraction must be in (0, 1) and sum below 1, "
                         f"got {val_fraction} and {test_fraction}")
    low_q, high_q = jpeg_quality
    if not 1 <= low_q <= high_q <= 100:
        raise ValueError(f"jpeg_quality must be 1 <= low <= high <= 100, got {jpeg_quality}")
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    started = time.perf_counter()
    photos = folder_photos(Path(source)) if source is not None else packaged_photo_records()
    if len(photos) < 3:
        raise ValueError(f"need at least 3 readable images in {source} (one per split), found {len(photos)}")
    split_seed = seed if split_seed is None else split_seed
    assigned = assign_splits(photos, val_fraction, test_fraction, split_seed)
    staging = out_dir.with_name(f".{out_dir.name}.partial")  # readers never see a half-written set
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pairs = _pairs_per_split(count, val_fraction, test_fraction)
    face_photos = []
    with ProcessPoolExecutor(workers, mp_context=worker_context()) if workers > 1 else nullcontext() as pool:
        for split_index, split in enumerate(SPLITS):
            face_photos += _write_split(staging / split, assigned[split], pairs[split], image_size,
                                        (low_q, high_q), [seed, split_index], progress, pool)
    manifest = {
        "description": _description(source, photos, seed, image_size, (low_q, high_q)),
        "generator": "deepfake-edge data synth (self-blended images)",
        "source": str(source) if source is not None else "packaged",
        "seed": seed, "split_seed": split_seed, "count": 2 * sum(pairs.values()), "image_size": image_size,
        "jpeg_quality": [low_q, high_q], "val_fraction": val_fraction, "test_fraction": test_fraction,
        "pairs": pairs, "photos": {split: sorted(p.name for p in assigned[split]) for split in SPLITS},
        "face_centred_photos": sorted(face_photos),
        "masks": f"<split>/{MASK_FOLDER}/NNNNNN.png: 8-bit alpha of the perturbed copy in <split>/Fake/NNNNNN.jpg",
        "sources": f"<split>/{SOURCES_FILE}: the source photo of each NNNNNN",
    }
    (staging / SYNTH_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _swap_in(staging, out_dir)
    if progress:
        print(summary(out_dir, manifest, time.perf_counter() - started))
    return manifest


def worker_context() -> multiprocessing.context.BaseContext:
    """Worker processes start fresh ("spawn"): forked ones inherit a parent's OpenMP thread pool (the face
    detector's or torch's, once loaded) in a state they cannot use, and hang in it."""
    return multiprocessing.get_context("spawn")


def summary(out_dir: Path, manifest: dict, seconds: float) -> str:
    """A few lines for people: where, how many per split and class, from how many photos, how long."""
    lines = [f"wrote {manifest['count']} images to {out_dir} in {seconds:.1f} s"]
    for split in SPLITS:
        n = manifest["pairs"][split]
        lines.append(f"  {split:<10} {n:>6} {LABELS[0]}  {n:>6} {LABELS[1]}  "
                     f"from {len(manifest['photos'][split])} source photo(s)")
    return "\n".join(lines)


def _description(source: str | Path | None, photos: list[Photo], seed: int, image_size: int,
                 quality: tuple[int, int]) -> str:
    if source is None:
        faces = sum(p.category == "faces" for p in photos)
        origin = (f"{len(photos) - faces} real photographs and {faces} LFW face crops bundled with "
                  f"scikit-image, matplotlib, scikit-learn and the Debian packages of training/photos.py "
                  f"that were installed")
    else:
        origin = f"{len(photos)} real images from {source}"
    return (f"Synthetic self-blended images (SBI, Shiohara & Yamasaki 2022) made by 'deepfake-edge data synth' "
            f"(seed {seed}, {image_size} px, JPEG quality {quality[0]}-{quality[1]}) from {origin}; "
            f"source photos are disjoint across splits. These are not real deepfakes.")


def read_sources(split_folder: Path) -> dict[str, str] | None:
    """The ``{file stem: source photo}`` map that ``synthesize`` wrote into a split folder, if any."""
    path = split_folder / SOURCES_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir())
                             and not (out_dir / SYNTH_MANIFEST).is_file()):
        raise ValueError(f"{out_dir} is not empty and was not written by 'data synth'; choose another --out")


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` (an earlier synth output, or nothing) with ``staging`` by renames."""
    retired = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(retired)
    staging.rename(out_dir)
    shutil.rmtree(retired, ignore_errors=True)


def _pairs_per_split(count: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    total = count // 2
    validation = max(1, round(total * val_fraction))
    test = max(1, round(total * test_fraction))
    return {"train": max(1, total - validation - test), "validation": validation, "test": test}


def _write_split(folder: Path, photos: list[Photo], n_pairs: int, image_size: int,
                 quality: tuple[int, int], seed: list[int], progress: bool,
                 pool: Executor | None) -> list[str]:
    """Write one split; returns the names of the photos whose crops were centred on a detected face."""
    for name in (*LABELS, MASK_FOLDER):
        (folder / name).mkdir(parents=True, exist_ok=True)
    # Bigger photos hold more distinct crops, but a 14-megapixel wallpaper must not crowd out the rest.
    weights = np.array([min(math.sqrt(width * height), _MAX_PHOTO_WEIGHT)
                        for width, height in (p.size for p in photos)])
    chosen = np.random.default_rng([*seed, 1]).choice(len(photos), size=n_pairs, p=weights / weights.sum())
    with_faces = []
    sources = {f"{index:06d}": photos[photo_index].name for index, photo_index in enumerate(chosen)}
    (folder / SOURCES_FILE).write_text(json.dumps(sources, indent=0, sort_keys=True) + "\n")
    # Each photo is loaded (and searched for faces) once; samples are seeded by index, so the bytes written
    # do not depend on how photos are shared out among worker processes.
    jobs = [(folder, photos[photo_index], np.flatnonzero(chosen == photo_index), image_size, quality, seed)
            for photo_index in np.unique(chosen)]
    with tqdm(total=n_pairs, desc=f"synth {folder.name}", unit="pair", disable=not progress) as bar:
        if pool is None:
            done = (_write_photo(*job) for job in jobs)
        else:
            done = (future.result() for future in as_completed([pool.submit(_write_photo, *job) for job in jobs]))
        for photo_name, found_faces, written in done:
            if found_faces:
                with_faces.append(photo_name)
            bar.update(written)
    return sorted(with_faces)


def _write_photo(folder: Path, photo: Photo, indices: np.ndarray, image_size: int, quality: tuple[int, int],
                 seed: list[int]) -> tuple[str, bool, int]:
    """Write the pairs ``indices`` cut from ``photo``; returns (photo name, whether a face was found, pairs)."""
    pixels = np.asarray(photo.load(), dtype=np.uint8)
    faces = detect_faces(pixels) if photo.find_faces else []
    for index in indices:
        rng = np.random.default_rng([*seed, 2, int(index)])
        work_size = int(round(image_size * rng.uniform(*_WORK_SCALE)))
        pair = blend_pair(pixels, rng, work_size, faces)
        jpeg_quality = int(rng.integers(quality[0], quality[1] + 1))
        stem = f"{index:06d}"
        (folder / LABELS[0] / f"{stem}.jpg").write_bytes(finish(pair.real, image_size, jpeg_quality))
        (folder / LABELS[1] / f"{stem}.jpg").write_bytes(finish(pair.fake, image_size, jpeg_quality))
        finish_mask(pair.mask, image_size).save(folder / MASK_FOLDER / f"{stem}.png")
    return photo.name, bool(faces), len(indices)
