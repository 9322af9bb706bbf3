"""Full-size edited photos with their unedited twins and masks (the edit families of edits.py).

Layout, next to the Real/Fake crop folders that ``data synth`` writes (the training reader ignores it)::

    OUT/<split>/full/Real/NNNNNN.jpg    the unedited twin
    OUT/<split>/full/Fake/NNNNNN.jpg    the edited photo, same size
    OUT/<split>/full/masks/NNNNNN.png   8-bit weight of the new content (0 = pixel untouched)
    OUT/<split>/full/edits.json         {stem: {family, detail, source, donor, width, height, augment}}
    OUT/full.json                       how the set was made: counts per split and family, photos, seed

Source photos are dealt to splits by ``synth.assign_splits``; donors come from the photo's own split, so
no photo (as destination or donor) crosses splits. Every pair is seeded by (seed, split, index): the same
arguments write identical bytes whatever the worker count. Boxes in ``detail`` are in the pixels of the
upload-size photo before ``augment`` (orientation, flip, rescale, JPEG) was applied to both twins.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from collections import OrderedDict
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from deepfake_edge.faces import detect_faces
from deepfake_edge.model_card import LABELS
from deepfake_edge.training.datasets import FULL_MANIFEST, MASK_FOLDER, SPLITS
from deepfake_edge.training.edits import EDIT_FAMILIES, make_edit
from deepfake_edge.training.photos import Photo, packaged_photo_records
from deepfake_edge.training.synth import assign_splits, worker_context

FULL_FOLDER = "full"
EDITS_FILE = "edits.json"
DEFAULT_PAIRS = 600
DEFAULT_SIZES = (512, 2048)
DEFAULT_JPEG_QUALITY = (70, 100)
MIN_DESTINATION_SIDE = 256  # smaller photos (LFW's 25 px crops) only serve as face donors
MAX_UPSCALE = 1.5
_MAX_PHOTO_WEIGHT = 1024.0  # as synth.py: bigger photos are picked more often, up to this side
_UPRIGHT = 0.7  # share of pairs left in their upright orientation (the rest: one of the 7 EXIF turns)
_CACHE_SIZE = 12  # decoded photos kept per process (donors recur)
_FALLBACK = {"face_swap": "splice", "splice": "copy_move", "copy_move": "inpaint", "inpaint": "graphic",
             "graphic": "copy_move"}


def synthesize_edits(
    out_dir: str | Path,
    photos: list[Photo] | None = None,
    pairs: int = DEFAULT_PAIRS,
    seed: int = 0,
    sizes: tuple[int, int] = DEFAULT_SIZES,
    jpeg_quality: tuple[int, int] = DEFAULT_JPEG_QUALITY,
    workers: int = 1,
    progress: bool = True,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    split_seed: int | None = None,
) -> dict:
    """Write ``pairs`` full-size (twin, edited photo, mask) triples under ``out_dir/<split>/full/``.

    ``photos`` defaults to the packaged catalogue. ``sizes`` bounds the long side of the upload size
    (never more than 1.5x the photo's own). Anything else in ``out_dir`` is left alone; an earlier
    ``full/`` output is replaced. ``split_seed`` (default ``seed``) deals the photos to the splits, as
    ``data synth``'s does. Returns the manifest also written to ``out_dir/full.json``.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if pairs < 3:
        raise ValueError(f"pairs must be at least 3 (one per split), got {pairs}")
    low_size, high_size = sizes
    if not 64 <= low_size <= high_size <= 8192:
        raise ValueError(f"sizes must be 64 <= low <= high <= 8192 px, got {sizes}")
    low_q, high_q = jpeg_quality
    if not 1 <= low_q <= high_q <= 100:
        raise ValueError(f"jpeg_quality must be 1 <= low <= high <= 100, got {jpeg_quality}")
    out_dir = Path(out_dir)
    if out_dir.is_file():
        raise ValueError(f"{out_dir} is a file")
    started = time.perf_counter()
    photos = packaged_photo_records() if photos is None else list(photos)
    split_seed = seed if split_seed is None else split_seed
    assigned = assign_splits(photos, val_fraction, test_fraction, split_seed)
    counts = _pairs_per_split(pairs, val_fraction, test_fraction)
    staging = out_dir / f".{FULL_FOLDER}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    families: dict[str, dict[str, int]] = {}
    used: dict[str, dict[str, list[str]]] = {}
    with ProcessPoolExecutor(workers, mp_context=worker_context()) if workers > 1 else nullcontext() as pool:
        for split_index, split in enumerate(SPLITS):
            families[split], used[split] = _write_split(
                staging / split / FULL_FOLDER, assigned[split], counts[split], (low_size, high_size),
                (low_q, high_q), [seed, split_index], progress, pool)
    manifest = {
        "generator": "deepfake-edge full-size edits (training/edit_synth.py)",
        "description": (f"Full-size photos edited by {', '.join(EDIT_FAMILIES)} (training/edits.py), each with "
                        f"its unedited twin and a mask; seed {seed}, long side {low_size}-{high_size} px, JPEG "
                        f"quality {low_q}-{high_q}; source and donor photos are disjoint across splits."),
        "seed": seed, "split_seed": split_seed, "sizes": [low_size, high_size], "jpeg_quality": [low_q, high_q],
        "val_fraction": val_fraction, "test_fraction": test_fraction,
        "pairs": counts, "families": families,
        "photos": {split: sorted(p.name for p in assigned[split]) for split in SPLITS},
        "sources": {split: used[split]["sources"] for split in SPLITS},
        "donors": {split: used[split]["donors"] for split in SPLITS},
        "layout": {
            "real": f"<split>/{FULL_FOLDER}/{LABELS[0]}/NNNNNN.jpg: the unedited twin",
            "fake": f"<split>/{FULL_FOLDER}/{LABELS[1]}/NNNNNN.jpg: the edited photo (same size)",
            "mask": f"<split>/{FULL_FOLDER}/{MASK_FOLDER}/NNNNNN.png: 8-bit weight of the new content",
            "edits": f"<split>/{FULL_FOLDER}/{EDITS_FILE}: family, detail, source, donor, size, augment",
        },
    }
    (staging / FULL_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _swap_in(staging, out_dir)
    if progress:
        seconds = time.perf_counter() - started
        total = sum(counts.values())
        print(f"wrote {total} full-size edit pairs to {out_dir} in {seconds:.1f} s ({seconds / total:.2f} s a pair)")
        for split in SPLITS:
            print(f"  {split:<10} " + "  ".join(f"{f} {n}" for f, n in families[split].items()))
    return manifest


def _pairs_per_split(pairs: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    validation = max(1, round(pairs * val_fraction))
    test = max(1, round(pairs * test_fraction))
    return {"train": max(1, pairs - validation - test), "validation": validation, "test": test}


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Move ``staging/<split>/full`` and ``staging/full.json`` into ``out_dir``, replacing earlier ones."""
    for split in SPLITS:
        target = out_dir / split / FULL_FOLDER
        retired = out_dir / split / f".{FULL_FOLDER}.old"
        shutil.rmtree(retired, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.rename(retired)
        (staging / split / FULL_FOLDER).rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    (staging / FULL_MANIFEST).replace(out_dir / FULL_MANIFEST)
    shutil.rmtree(staging, ignore_errors=True)


def _is_face_crop(photo: Photo) -> bool:
    return photo.category == "faces"


def _write_split(folder: Path, photos: list[Photo], n_pairs: int, sizes: tuple[int, int],
                 quality: tuple[int, int], seed: list[int], progress: bool, pool: Executor | None
                 ) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Plan and write one split; returns (pairs per family, {"sources": [...], "donors": [...]})."""
    for name in (*LABELS, MASK_FOLDER):
        (folder / name).mkdir(parents=True, exist_ok=True)
    photo_sizes = [p.size for p in photos]
    destinations = [i for i, (w, h) in enumerate(photo_sizes) if max(w, h) >= MIN_DESTINATION_SIDE]
    if not destinations:
        raise ValueError(f"split {folder.parent.name} has no photo with a side of {MIN_DESTINATION_SIDE} px or more")
    face_donors = [i for i, p in enumerate(photos) if p.find_faces and i in set(destinations)]
    face_crops = [i for i, p in enumerate(photos) if _is_face_crop(p)]
    weights = np.array([min(math.sqrt(photo_sizes[i][0] * photo_sizes[i][1]), _MAX_PHOTO_WEIGHT)
                        for i in destinations])
    rng = np.random.default_rng([*seed, 1])
    chosen = rng.choice(destinations, size=n_pairs, p=weights / weights.sum())
    start = int(rng.integers(len(EDIT_FAMILIES)))  # round-robin from a random family: small splits vary too
    plan: dict[int, list[tuple[int, str, Photo | None, list[Photo]]]] = {}
    for index, photo_index in enumerate(chosen):
        photo_index = int(photo_index)
        scene = photos[photo_index].scene
        others = [i for i in destinations if photos[i].scene != scene] or [photo_index]
        donor = photos[others[int(rng.integers(len(others)))]]
        candidates = []  # face donors in the order they are tried: a people photo, then a face crop
        people = [i for i in face_donors if photos[i].scene != scene]
        if people and rng.random() < 0.6:
            candidates.append(photos[people[int(rng.integers(len(people)))]])
        crops = [i for i in face_crops if photos[i].scene != scene]
        if crops:
            candidates.append(photos[crops[int(rng.integers(len(crops)))]])
        family = EDIT_FAMILIES[(start + index) % len(EDIT_FAMILIES)]
        plan.setdefault(photo_index, []).append((index, family, donor, candidates))
    jobs = [(folder, photos[photo_index], items, sizes, quality, seed) for photo_index, items in sorted(plan.items())]
    records: dict[str, dict] = {}
    with tqdm(total=n_pairs, desc=f"edits {folder.parent.name}", unit="pair", disable=not progress) as bar:
        if pool is None:
            done = (_write_photo(*job) for job in jobs)
        else:
            done = (future.result() for future in as_completed([pool.submit(_write_photo, *job) for job in jobs]))
        for written in done:
            records.update(written)
            bar.update(len(written))
    records = dict(sorted(records.items()))
    (folder / EDITS_FILE).write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    families = {family: sum(r["family"] == family for r in records.values()) for family in EDIT_FAMILIES}
    return families, {"sources": sorted({r["source"] for r in records.values()}),
                      "donors": sorted({r["donor"] for r in records.values() if r["donor"]})}


# ------------------------------------------------------------------------------------- worker side

_cache: OrderedDict[str, tuple[np.ndarray, list]] = OrderedDict()


def _base(photo: Photo, max_side: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """``photo`` decoded and area-shrunk to a long side of at most ``max_side``, and its face boxes there.

    Face crops (LFW) are one face each: the box is the whole picture. Cached per process; the result
    depends only on the photo, so caching never changes the bytes written.
    """
    key = f"{photo.name}\0{max_side}"
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    pixels = np.asarray(photo.load().convert("RGB"), dtype=np.uint8)
    height, width = pixels.shape[:2]
    if max(height, width) > max_side:
        factor = max_side / max(height, width)
        pixels = cv2.resize(pixels, (max(1, round(width * factor)), max(1, round(height * factor))),
                            interpolation=cv2.INTER_AREA)
    pixels = np.ascontiguousarray(pixels)
    if _is_face_crop(photo):
        faces = [(0, 0, pixels.shape[1], pixels.shape[0])]
    elif photo.find_faces:
        faces = [tuple(int(v) for v in box) for box in detect_faces(pixels)]
    else:
        faces = []
    _cache[key] = (pixels, faces)
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return pixels, faces


def upload_size(shape: tuple[int, ...], original_long: int, sizes: tuple[int, int],
                rng: np.random.Generator) -> tuple[int, int]:
    """A random upload size (w, h): long side uniform in ``sizes``, at most 1.5x ``original_long``."""
    height, width = shape[:2]
    long_side = min(rng.uniform(*sizes), MAX_UPSCALE * original_long)
    factor = long_side / max(height, width)
    return max(1, int(round(width * factor))), max(1, int(round(height * factor)))


def _at_upload(photo: Photo, sizes: tuple[int, int], rng: np.random.Generator):
    pixels, faces = _base(photo, sizes[1])
    w, h = upload_size(pixels.shape, max(photo.size), sizes, rng)
    if (w, h) != (pixels.shape[1], pixels.shape[0]):
        shrink = w < pixels.shape[1]
        resized = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    else:
        resized = pixels.copy()
    fx, fy = w / pixels.shape[1], h / pixels.shape[0]
    scaled = [(int(round(x * fx)), int(round(y * fy)), max(1, int(round(bw * fx))), max(1, int(round(bh * fy))))
              for x, y, bw, bh in faces]
    return resized, scaled


def augment(images: list[np.ndarray], mask: np.ndarray, rng: np.random.Generator
            ) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """The same orientation (EXIF-like), flip and mild rescale for every image and the mask."""
    orientation = 0 if rng.random() < _UPRIGHT else int(rng.integers(1, 8))
    flip = bool(rng.random() < 0.5)
    scale = float(rng.uniform(0.75, 1.0))

    def geometry(a: np.ndarray) -> np.ndarray:
        if orientation >= 4:
            a = np.swapaxes(a, 0, 1)
        a = np.rot90(a, orientation % 4)
        if flip:
            a = a[:, ::-1]
        return np.ascontiguousarray(a)

    images, mask = [geometry(a) for a in images], geometry(mask)
    height, width = mask.shape
    size = (max(16, int(round(width * scale))), max(16, int(round(height * scale))))
    if size != (width, height):
        images = [cv2.resize(a, size, interpolation=cv2.INTER_AREA) for a in images]
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
    return images, mask, {"orientation": orientation, "flip": flip, "scale": round(scale, 4)}


def mask_png(mask: np.ndarray) -> Image.Image:
    """8-bit mask: any changed pixel gets at least 1 (ceil), full weight 255."""
    mask = np.where(mask < 1e-6, 0.0, mask)
    return Image.fromarray(np.ceil(np.clip(mask, 0, 1) * 255 - 1e-3).clip(0, 255).astype(np.uint8))


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def make_pair(photo: Photo, index: int, family: str, donor: Photo | None, face_donors: list[Photo],
              sizes: tuple[int, int], quality: tuple[int, int], seed: list[int]):
    """One (twin, fake, mask, record) at output size, before encoding; deterministic in (seed, index)."""
    rng = np.random.default_rng([*seed, 2, int(index)])
    pixels, faces = _at_upload(photo, sizes, rng)
    attempts = []
    for attempt in range(6):
        edit_rng = np.random.default_rng([*seed, 3, int(index), attempt])
        try:
            if family == "face_swap":
                edit, used = None, None
                for candidate in face_donors:
                    donor_pixels, donor_faces = _at_upload(candidate, sizes, edit_rng)
                    try:
                        edit = make_edit(family, pixels, donor_pixels, edit_rng, faces, donor_faces)
                        used = candidate
                        break
                    except ValueError:
                        continue
                if edit is None:
                    if not faces:
                        raise ValueError("no face in the photo or its face donors")
                    edit = make_edit(family, pixels, pixels, edit_rng, faces, [])  # two faces in the photo
                    used = photo
            else:
                used = donor if family == "splice" else None
                donor_pixels = _at_upload(donor, sizes, edit_rng)[0] if used is not None else None
                edit = make_edit(family, pixels, donor_pixels, edit_rng, faces, [])
            break
        except ValueError as error:
            attempts.append(f"{family}: {error}")
            if attempt % 2 == 1:
                family = _FALLBACK[family]
    else:
        raise RuntimeError(f"no edit could be made for pair {index} of {photo.name}: {attempts}")
    (real, fake), mask, augmentation = augment([pixels, edit.image], edit.mask, rng)
    augmentation["jpeg_quality"] = int(rng.integers(quality[0], quality[1] + 1))
    record = {"family": edit.family, "detail": edit.detail, "source": photo.name,
              "donor": used.name if used is not None else None,
              "width": int(real.shape[1]), "height": int(real.shape[0]), "augment": augmentation}
    if attempts:
        record["fallbacks"] = attempts
    return real, fake, mask, record


def _write_photo(folder: Path, photo: Photo, items: list, sizes: tuple[int, int], quality: tuple[int, int],
                 seed: list[int]) -> dict[str, dict]:
    """Write the pairs ``items`` made from ``photo``; returns their edits.json records by stem."""
    records = {}
    for index, family, donor, face_donors in items:
        real, fake, mask, record = make_pair(photo, index, family, donor, face_donors, sizes, quality, seed)
        stem = f"{index:06d}"
        q = record["augment"]["jpeg_quality"]
        (folder / LABELS[0] / f"{stem}.jpg").write_bytes(_jpeg(real, q))
        (folder / LABELS[1] / f"{stem}.jpg").write_bytes(_jpeg(fake, q))
        mask_png(mask).save(folder / MASK_FOLDER / f"{stem}.png")
        records[stem] = record
    return records
