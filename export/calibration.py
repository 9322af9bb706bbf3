"""Images for INT8 calibration and for parity/accuracy checks, through the shared preprocessing.

Sources, in order of preference: an explicit folder; a dataset root in the layouts
``deepfake_edge.training.datasets`` reads (train split for calibration, test split with labels for
evaluation); the synthetic dataset ``data/synth`` (generated on demand by ``deepfake_edge.training.synth``);
real photographs that ship inside installed packages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import BadImageError, Preprocessor

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
DEFAULT_DATA_ROOT = Path("data/synth")


@dataclass(frozen=True)
class ImageSet:
    """Preprocessed UINT8 images (N, 3, H, W), their labels (1 = Fake) when known, and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str


def image_files(folder: Path) -> list[Path]:
    """Every image file below ``folder`` (recursive), sorted so runs are reproducible."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _take(paths: list[Path], labels: list[int] | None, limit: int, seed: int) -> tuple[list[Path], list[int] | None]:
    if len(paths) <= limit:
        return paths, labels
    order = np.sort(np.random.default_rng(seed).choice(len(paths), size=limit, replace=False))
    return [paths[i] for i in order], ([labels[i] for i in order] if labels is not None else None)


def _load(paths: list[Path], labels: list[int] | None, card: ModelCard, source: str, what: str) -> ImageSet:
    preprocess = Preprocessor.from_card(card)
    images, kept = [], []
    for index, path in enumerate(tqdm(paths, desc=f"{what} images", unit="img", leave=False)):
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


def ensure_default_dataset(root: Path = DEFAULT_DATA_ROOT) -> Path | None:
    """``data/synth`` if present, else generate it with the training package's synthesiser if available."""
    if root.is_dir():
        return root
    try:
        from deepfake_edge.training import synth
    except ImportError:
        return None
    synth.generate(root)
    return root


def packaged_photo_files() -> list[Path]:
    """Real photographs shipped inside installed packages (scikit-image, matplotlib)."""
    import matplotlib
    import skimage

    skimage_data = Path(skimage.__file__).parent / "data"
    files = [p for p in image_files(skimage_data) if p.stat().st_size > 10_000]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return files + ([hopper] if hopper.is_file() else [])


def load_image_set(card: ModelCard, folder: Path | None, split: str, limit: int, seed: int = 0) -> ImageSet:
    """Up to ``limit`` preprocessed images for ``split`` ("train" for calibration, "test" for evaluation).

    ``folder`` may be a dataset root (its ``split`` is used, with labels) or any folder of images.
    Without it: the default dataset's split, else packaged photographs (unlabelled).
    """
    what = "calibration" if split == "train" else "evaluation"
    root = folder if folder is not None else ensure_default_dataset()
    if root is not None:
        found = _dataset_split(root, split)
        if found is not None:
            paths, labels = _take(*found, limit, seed)
            return _load(paths, labels, card, f"{root} ({split} split)", what)
        paths, _ = _take(image_files(root), None, limit, seed)
        if paths:
            return _load(paths, None, card, str(root), what)
        raise ValueError(f"no images found in {root}")
    paths, _ = _take(packaged_photo_files(), None, limit, seed)
    return _load(paths, None, card, "photos packaged with scikit-image/matplotlib", what)
