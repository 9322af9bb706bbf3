"""Images for INT8 calibration and for parity/accuracy checks, through the shared preprocessing.

A source is a dataset root in the layouts ``deepfake_edge.training.datasets`` reads (train split for
calibration, test split with labels for evaluation) or any folder of images (unlabelled). The default
is the synthetic dataset ``data/synth``; when it is missing, export synthesizes a small throwaway one
with ``deepfake_edge.training.synth`` (self-blended images of packaged photographs) at the models' resize size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import BadImageError, Preprocessor
from deepfake_edge.serving_contract import IMAGE_EXTENSIONS
DEFAULT_DATA_ROOT = Path("data/synth")


@dataclass(frozen=True)
class ImageSet:
    """Preprocessed UINT8 images (N, 3, H, W), their labels (1 = Fake) when known, and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str


def image_files(folder: Path) -> list[Path]:
    """Every image file below ``folder`` (recursive), sorted so runs are reproducible."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _take(paths: list[Path], labels: list[int] | None, limit: int, seed: int) -> tuple[list[Path], list[int] | None]:
    if len(paths) <= limit:
        return paths, labels
    order = np.sort(np.random.default_rng(seed).choice(len(paths), size=limit, replace=False))
    return [paths[i] for i in order], ([labels[i] for i in order] if labels is not None else None)


def _load(paths: list[Path], labels: list[int] | None, card: ModelCard, source: str, what: str) -> ImageSet:
    preprocess = Preprocessor.from_card(card)
    images, kept = [], []
    for index, path in enumerate(tqdm(paths, desc=f"{what} images", unit="img", leave=False, disable=None)):
        try:
            images.append(preprocess(path))
            kept.append(index)
        except BadImageError:
            continue  # a bad file shrinks the set; it must not abort an export
    if not images:
        raise ValueError(f"no readable images in {source}")
    kept_labels = np.array([labels[i] for i in kept], dtype=np.int64) if labels is not None else None
    return ImageSet(np.stack(images), kept_labels, source)


def _dataset_split(root: Path, split: str) -> tuple[list[Path], list[int]] | None:
    from deepfake_edge.training.datasets import load_splits

    try:
        samples = load_splits(root, verify=False).split(split)
    except ValueError:
        return None  # not a dataset layout: the caller treats the folder as plain images
    return [s.path for s in samples], [s.label for s in samples]


def synthesize_small_dataset(out_dir: Path, calibration_images: int, eval_images: int, image_size: int) -> Path:
    """A throwaway self-blended dataset (``deepfake-edge data synth``) just big enough for one export,
    made at ``image_size`` px (the models' own resize size, so none of them sees upscaled images)."""
    from deepfake_edge.training import synth

    # 40 % of the pairs go to train, 30 % each to validation and test: an export takes as many validation
    # (FP32-fallback search) as test images and fewer for calibration, and every image made costs time
    # (~60 ms each on two busy cores; synthesize()'s own 70/15/15 split made twice as many for the same sets).
    count = 2 * int(np.ceil(max(calibration_images / 2 / 0.4, eval_images / 2 / 0.3)))
    synth.synthesize(out_dir, count=max(count, 6), image_size=image_size, progress=False,
                     val_fraction=0.3, test_fraction=0.3)
    return out_dir


def load_image_set(card: ModelCard, root: Path, split: str, limit: int, seed: int = 0) -> ImageSet:
    """Up to ``limit`` preprocessed images for ``split`` ("train" for calibration, "test" for evaluation).

    ``root`` may be a dataset root (its ``split`` is used, with labels) or any folder of images (unlabelled).
    """
    what = "calibration" if split == "train" else "evaluation"
    found = _dataset_split(root, split)
    if found is not None:
        paths, labels = _take(*found, limit, seed)
        return _load(paths, labels, card, f"{root} ({split} split)", what)
    paths, _ = _take(image_files(root), None, limit, seed)
    if not paths:
        raise ValueError(f"no images found in {root}")
    return _load(paths, None, card, str(root), what)
