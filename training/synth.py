"""Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): fakes made from real photos only.

A fake is a real crop blended with a colour-, sharpness- and geometry-perturbed copy of itself inside
a soft, randomly deformed mask, which leaves the blending boundary and statistics mismatch that face
swaps leave. The real sample is the same crop untouched. Both then get the same final processing
(resize to ``image_size`` and JPEG at a random quality), so the only difference is the blend.

Output is the kaggle layout ``OUT/{train,validation,test}/{Real,Fake}/NNNNNN.jpg``; the blend mask of
``Fake/NNNNNN.jpg`` is ``OUT/<split>/masks/NNNNNN.png`` (8-bit alpha of the perturbed copy, at output
resolution), a folder the dataset readers never enter. ``OUT/synth.json`` records how it was made.
Whole source photos are assigned to one split, so the test split holds only unseen photos.
Everything is seeded per sample: the same arguments write identical bytes.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from deepfake_edge.model_card import LABELS
from deepfake_edge.preprocessing import BadImageError, load_image
from deepfake_edge.training.datasets import IMAGE_SUFFIXES, SPLITS, SYNTH_MANIFEST

DEFAULT_OUT = Path("data/synth")
DEFAULT_COUNT = 4000
DEFAULT_IMAGE_SIZE = 160
DEFAULT_JPEG_QUALITY = (75, 100)
MASK_FOLDER = "masks"
# SBI's blend ratios: a full swap half the time, partial blends otherwise.
_BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)

# Real photographs bundled with scikit-image (loaded offline) -> (category, scene). Photos of the same
# scene share a split; categories are spread over the splits (see assign_splits).
_SKIMAGE_PHOTOS = {
    "astronaut": ("people", "astronaut"), "camera": ("people", "camera"),
    "chelsea": ("objects", "chelsea"), "coffee": ("objects", "coffee"), "rocket": ("objects", "rocket"),
    "coins": ("objects", "coins"), "motorcycle_left": ("objects", "motorcycle"),
    "motorcycle_right": ("objects", "motorcycle"), "brick": ("texture", "brick"),
    "grass": ("texture", "grass"), "gravel": ("texture", "gravel"), "moon": ("science", "moon"),
    "hubble_deep_field": ("science", "hubble"), "retina": ("science", "retina"),
    "immunohistochemistry": ("science", "ihc"), "text": ("documents", "text"), "page": ("documents", "page"),
}
_LFW_FACES = 100  # lfw_subset.npy: 100 face crops (25x25 grey) followed by 100 non-faces


@dataclass(frozen=True)
class Photo:
    """A source photograph: ``category`` stratifies the split, photos of one ``scene`` stay together."""

    name: str
    image: Image.Image
    category: str
    scene: str


@dataclass(frozen=True)
class BlendPair:
    """One real/fake pair before final processing: uint8 (H, W, 3) images and a float32 (H, W) mask."""

    real: np.ndarray
    fake: np.ndarray
    mask: np.ndarray


def packaged_photos() -> list[tuple[str, Image.Image]]:
    """The real photographs that ship inside installed packages, as ``(name, RGB image)``."""
    return [(photo.name, photo.image) for photo in _packaged_photo_records()]


def _packaged_photo_records() -> list[Photo]:
    import matplotlib
    import skimage.data

    photos = []
    for name, (category, scene) in _SKIMAGE_PHOTOS.items():
        if name.startswith("motorcycle_"):
            array = skimage.data.stereo_motorcycle()[0 if name.endswith("left") else 1]
        else:
            array = getattr(skimage.data, name)()
        photos.append(Photo(name, Image.fromarray(array).convert("RGB"), category, scene))
    grace = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photos.append(Photo("grace_hopper", load_image(grace), "people", "grace_hopper"))
    faces = skimage.data.lfw_subset()[:_LFW_FACES]
    for index, face in enumerate(faces):
        grey = Image.fromarray(np.round(face * 255).astype(np.uint8))
        photos.append(Photo(f"lfw_face_{index:03d}", grey.convert("RGB"), "faces", f"lfw_{index:03d}"))
    return photos


def folder_photos(folder: Path) -> list[Photo]:
    """Every readable image below ``folder``; unreadable files are reported and left out."""
    photos = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            image = load_image(path)
        except BadImageError as error:
            print(f"skipping {path}: {error}")
            continue
        name = str(path.relative_to(folder))
        photos.append(Photo(name, image, "photos", name))
    return photos


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


def blend_pair(photo: np.ndarray, rng: np.random.Generator, work_size: int) -> BlendPair:
    """Cut a random square crop of ``photo`` (uint8 HxWx3), resize it to ``work_size`` and self-blend it.

    ``fake`` equals ``real`` wherever ``mask`` is 0; ``mask`` is 0 on the image border.
    """
    height, width = photo.shape[:2]
    short = min(height, width)
    low = min(short, max(0.2 * short, 48.0))
    side = int(round(rng.uniform(low, max(low, 0.9 * short))))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = photo[top:top + side, left:left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interpolation = cv2.INTER_AREA if side > work_size else cv2.INTER_CUBIC
    real = cv2.resize(np.ascontiguousarray(crop), (work_size, work_size), interpolation=interpolation)
    mask = random_blend_mask(work_size, rng) * rng.choice(_BLEND_RATIOS)
    source = perturb(real, rng)
    blended = mask[..., None] * source.astype(np.float32) + (1.0 - mask[..., None]) * real.astype(np.float32)
    fake = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return BlendPair(real, fake, mask)


def random_blend_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A soft float32 (size, size) mask in [0, 1] with maximum 1: an ellipse, a random convex hull or a
    rounded box, elastically deformed, possibly eroded or dilated, then Gaussian-blurred. It is zero
    within one pixel of the border, so the whole blending boundary is in the picture."""
    blur_sigma = size * rng.uniform(0.01, 0.05)
    warp = size * 0.04
    margin = int(math.ceil(3 * blur_sigma + warp + size * 0.03)) + 2
    region = rng.uniform(0.3, 0.7) * size
    region = min(region, size - 2 * margin)
    cx, cy = rng.uniform(margin + region / 2, size - margin - region / 2, size=2)
    hard = np.zeros((size, size), np.uint8)
    shape = rng.integers(3)
    if shape == 0:
        axes = (int(region / 2), int(region / 2 * rng.uniform(0.6, 1.0)))
        cv2.ellipse(hard, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    elif shape == 1:
        points = rng.uniform(-region / 2, region / 2, size=(int(rng.integers(5, 16)), 2)) + (cx, cy)
        cv2.fillConvexPoly(hard, cv2.convexHull(points.astype(np.int32)), 255)
    else:
        half_w, half_h = region / 2, region / 2 * rng.uniform(0.7, 1.0)
        radius = int(min(half_w, half_h) * rng.uniform(0.2, 0.6))
        box = (int(cx - half_w + radius), int(cy - half_h + radius), int(cx + half_w - radius), int(cy + half_h - radius))
        cv2.rectangle(hard, box[:2], box[2:], 255, -1)
        cv2.rectangle(hard, box[:2], box[2:], 255, 2 * radius)
    mask = _elastic(hard.astype(np.float32) / 255.0, warp, rng)
    if rng.random() < 0.5:
        k = 2 * int(rng.integers(1, max(2, int(size * 0.02) + 1))) + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = cv2.erode(mask, kernel) if rng.random() < 0.5 else cv2.dilate(mask, kernel)
    mask = cv2.GaussianBlur(mask, (0, 0), blur_sigma, borderType=cv2.BORDER_CONSTANT)
    mask[mask < 1e-3] = 0.0  # cut the Gaussian tails: "inside the mask" has a crisp meaning
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 0.0
    peak = float(mask.max())
    if peak <= 0:
        raise RuntimeError("empty blend mask")  # cannot happen with the margins above
    return np.clip(mask / peak, 0.0, 1.0).astype(np.float32)


def _elastic(mask: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Displace pixels by a smooth random field of at most ``amplitude`` pixels."""
    size = mask.shape[0]
    sigma = size * 0.08
    field = rng.uniform(-1, 1, size=(2, size, size)).astype(np.float32)
    field = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in field])
    field *= amplitude / max(float(np.abs(field).max()), 1e-6)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    return cv2.remap(mask, grid_x + field[0], grid_y + field[1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def perturb(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The blended-in copy: colour jitter, then blur (downscale) or sharpen, then a small scale/shift.

    Ranges follow SBI's source transforms. Grey photos stay grey, so colour is never the tell.
    """
    out = image.astype(np.float32)
    contrast, brightness = rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1) * 255
    out = (out - out.mean()) * contrast + out.mean() + brightness
    if rng.random() < 0.5:
        out += rng.uniform(-20, 20, size=3)
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.8, 1.2)
    if _is_grey(image):
        out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
    out = np.clip(out, 0, 255)
    size = image.shape[0]
    if rng.random() < 0.5:
        factor = rng.choice((2, 4))
        small = cv2.resize(out, (max(1, size // factor),) * 2, interpolation=cv2.INTER_LINEAR)
        out = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    else:
        amount = rng.uniform(0.3, 1.0)
        out = out + amount * (out - cv2.GaussianBlur(out, (0, 0), 1.0))
    scale = rng.uniform(0.95, 1 / 0.95)
    shift_x, shift_y = rng.uniform(-0.03, 0.03) * size, rng.uniform(-0.015, 0.015) * size
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), 0.0, scale)
    matrix[:, 2] += (shift_x, shift_y)
    out = cv2.warpAffine(out, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _is_grey(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def finish(image: np.ndarray, image_size: int, quality: int) -> bytes:
    """The final processing both classes share: area-resize to ``image_size``, JPEG at ``quality``."""
    if image.shape[0] != image_size:
        image = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


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
) -> dict:
    """Write ``count`` images (half Real, half Fake) in the kaggle layout under ``out_dir``.

    ``source`` is a folder of real images; ``None`` uses :func:`packaged_photos` (plus the LFW face
    crops). ``out_dir`` must be empty, missing, or an earlier output of this function (replaced).
    Returns the manifest also written to ``out_dir/synth.json``.
    """
    if count < 6:
        raise ValueError(f"count must be at least 6 (a real/fake pair per split), got {count}")
    if not 16 <= image_size <= 1024:
        raise ValueError(f"image_size must be between 16 and 1024 px, got {image_size}")
    low_q, high_q = jpeg_quality
    if not 1 <= low_q <= high_q <= 100:
        raise ValueError(f"jpeg_quality must be 1 <= low <= high <= 100, got {jpeg_quality}")
    started = time.perf_counter()
    photos = folder_photos(Path(source)) if source is not None else _packaged_photo_records()
    assigned = assign_splits(photos, val_fraction, test_fraction, seed)
    out_dir = Path(out_dir)
    _prepare_output(out_dir)
    pairs = _pairs_per_split(count, val_fraction, test_fraction)
    for split_index, split in enumerate(SPLITS):
        _write_split(out_dir / split, assigned[split], pairs[split], image_size, (low_q, high_q),
                     [seed, split_index], progress)
    manifest = {
        "description": _description(source, photos, seed, image_size, (low_q, high_q)),
        "generator": "deepfake-edge data synth (self-blended images)",
        "source": str(source) if source is not None else "packaged",
        "seed": seed, "count": 2 * sum(pairs.values()), "image_size": image_size,
        "jpeg_quality": [low_q, high_q], "val_fraction": val_fraction, "test_fraction": test_fraction,
        "pairs": pairs, "photos": {split: sorted(p.name for p in assigned[split]) for split in SPLITS},
        "masks": f"<split>/{MASK_FOLDER}/NNNNNN.png: 8-bit alpha of the perturbed copy in <split>/Fake/NNNNNN.jpg",
    }
    (out_dir / SYNTH_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    manifest_seconds = time.perf_counter() - started
    if progress:
        print(summary(out_dir, manifest, manifest_seconds))
    return manifest


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
                  f"scikit-image and matplotlib")
    else:
        origin = f"{len(photos)} real images from {source}"
    return (f"Synthetic self-blended images (SBI, Shiohara & Yamasaki 2022) made by 'deepfake-edge data synth' "
            f"(seed {seed}, {image_size} px, JPEG quality {quality[0]}-{quality[1]}) from {origin}; "
            f"source photos are disjoint across splits. These are not real deepfakes.")


def _prepare_output(out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / SYNTH_MANIFEST).is_file():
            raise ValueError(f"{out_dir} is not empty and was not written by 'data synth'; choose another --out")
        for split in SPLITS:
            shutil.rmtree(out_dir / split, ignore_errors=True)
        (out_dir / SYNTH_MANIFEST).unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _pairs_per_split(count: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    total = count // 2
    validation = max(1, round(total * val_fraction))
    test = max(1, round(total * test_fraction))
    return {"train": max(1, total - validation - test), "validation": validation, "test": test}


def _write_split(folder: Path, photos: list[Photo], n_pairs: int, image_size: int,
                 quality: tuple[int, int], seed: list[int], progress: bool) -> None:
    for name in (*LABELS, MASK_FOLDER):
        (folder / name).mkdir(parents=True, exist_ok=True)
    areas = np.array([math.sqrt(p.image.width * p.image.height) for p in photos])
    chosen = np.random.default_rng([*seed, 1]).choice(len(photos), size=n_pairs, p=areas / areas.sum())
    pixels: dict[int, np.ndarray] = {}
    for index in tqdm(range(n_pairs), desc=f"synth {folder.name}", unit="pair", disable=not progress):
        photo_index = int(chosen[index])
        if photo_index not in pixels:
            pixels[photo_index] = np.asarray(photos[photo_index].image, dtype=np.uint8)
        rng = np.random.default_rng([*seed, 2, index])
        work_size = int(round(image_size * rng.uniform(1.0, 1.5)))
        pair = blend_pair(pixels[photo_index], rng, work_size)
        jpeg_quality = int(rng.integers(quality[0], quality[1] + 1))
        stem = f"{index:06d}"
        (folder / LABELS[0] / f"{stem}.jpg").write_bytes(finish(pair.real, image_size, jpeg_quality))
        (folder / LABELS[1] / f"{stem}.jpg").write_bytes(finish(pair.fake, image_size, jpeg_quality))
        mask = cv2.resize(pair.mask, (image_size, image_size), interpolation=cv2.INTER_AREA)
        Image.fromarray(np.round(mask * 255).astype(np.uint8)).save(folder / MASK_FOLDER / f"{stem}.png")
