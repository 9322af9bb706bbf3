"""Read real/fake image datasets laid out the way people download them.

Two layouts are recognised (folder names are case-insensitive):

* ``kaggle``: ``ROOT/{train,validation,test}/{Real,Fake}/`` (``val``/``valid`` also mean validation).
  A missing validation or test folder is carved out of train (stratified, seeded).
* ``flat``: ``ROOT/{Real,Fake}/``, split stratified and seeded into train/validation/test.

Images may sit in nested folders below a class folder. Anything else next to the class folders
(for instance the ``masks/`` folder written by ``deepfake-edge data synth``) is never read.
Unreadable files are skipped with a warning and listed in :attr:`DatasetSplits.skipped`; a missing
or empty class folder is a :class:`ValueError` naming the folder.
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from deepfake_edge.model_card import LABELS
from deepfake_edge.preprocessing import DEFAULT_MAX_PIXELS, BadImageError, load_image
from deepfake_edge.serving_contract import IMAGE_EXTENSIONS

SPLITS = ("train", "validation", "test")

SYNTH_MANIFEST = "synth.json"  # written by deepfake_edge.training.synth; describe() quotes it
FULL_MANIFEST = "full.json"  # written by deepfake_edge.training.edit_synth (data edits); describe() quotes it too
# <split>/{Real,Fake}/eNNNNNN_K.jpg: region crops of data edits' full-size pairs, beside the self-blends
EDIT_CROP_PREFIX = "e"
# <split>/Real/nNNNNNN_K.jpg: regions of unedited full-size photos a checkpoint scored highest (data negatives)
HARD_NEGATIVE_PREFIX = "n"
# The full-size photos' crops carry the prefix, the source pair's number and the region's rank: e000123_1.jpg
_FULL_SIZE_CROP = re.compile(rf"[{EDIT_CROP_PREFIX}{HARD_NEGATIVE_PREFIX}]\d{{6}}_\d+")
MASK_FOLDER = "masks"  # <split>/masks/<stem>.png: the blend mask of <split>/Fake/<stem>.jpg, written by data synth

_VERIFY_THREADS = min(8, os.cpu_count() or 1)
_SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                  "valid": "validation", "test": "test", "testing": "test"}
_CLASS_FOLDERS = {name.lower(): index for index, name in enumerate(LABELS)}  # {"real": 0, "fake": 1}


@dataclass(frozen=True)
class Sample:
    """One image file and its label: 0 = Real, 1 = Fake (the index into ``ModelCard.labels``)."""

    path: Path
    label: int


@dataclass
class DatasetSplits:
    """A dataset split three ways, plus the files that were skipped and why."""

    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    root: Path = Path(".")
    layout: str = "kaggle"

    def split(self, name: str) -> list[Sample]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """``{split: {"Real": n, "Fake": n}}`` for train, validation and test."""
        return {name: _count(self.split(name)) for name in SPLITS}

    def describe(self) -> str:
        """One paragraph for people (and ``ModelCard.training_data``): source, layout, counts."""
        counts = self.class_counts()
        per_split = "; ".join(
            f"{name} {c[LABELS[0]]} {LABELS[0]} / {c[LABELS[1]]} {LABELS[1]}" for name, c in counts.items()
        )
        text = f"Images from {self.root} ({_LAYOUT_WORDS.get(self.layout, self.layout)}): {per_split}."
        for name in (FULL_MANIFEST, SYNTH_MANIFEST):  # data edits' crops sit beside data synth's
            manifest = _read_manifest(self.root / name)
            if manifest is not None:
                text = f"{manifest['description']} {text}"
        if self.skipped:
            text += f" {len(self.skipped)} unreadable file(s) skipped."
        return text


_LAYOUT_WORDS = {
    "kaggle": "split folders train/validation/test with Real/Fake class folders",
    "kaggle+carved": "split folders with Real/Fake class folders; missing splits carved from train, "
                     "stratified and seeded",
    "flat": "Real/Fake class folders split stratified and seeded into train/validation/test",
}


def load_splits(
    root: str | Path,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    verify: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DatasetSplits:
    """Find the layout under ``root``, verify the images and return the three splits.

    ``val_fraction``/``test_fraction`` apply to the flat layout and to splits missing from a kaggle
    layout. ``verify`` decodes every image (JPEGs at 1/8 scale through Pillow's DCT scaling, which still
    reads the whole compressed stream, so truncated files are caught at a fraction of the cost of a
    full decode); unreadable files are skipped with a warning. With ``verify=False`` only file
    extensions are checked. Sample order is sorted, then shuffled within a split only by the caller.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset folder not found: {root}")
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction and test_fraction must be in [0, 1) and sum below 1, "
                         f"got {val_fraction} and {test_fraction}")
    skipped: list[tuple[Path, str]] = []
    split_dirs = _named_subdirs(root, _SPLIT_ALIASES)
    if split_dirs:
        if "train" not in split_dirs:
            raise ValueError(f"{root} has {sorted(d.name for d in split_dirs.values())} but no train folder")
        found = {name: _read_class_folders(folder, skipped, verify, max_pixels)
                 for name, folder in split_dirs.items()}
        train = found["train"]
        rng = np.random.default_rng(seed)
        carve_test, carve_val = "test" not in found, "validation" not in found
        if carve_test:  # fractions are of the train folder
            found["test"], train = _stratified_take(train, test_fraction, rng)
        if carve_val:
            share = val_fraction / (1 - test_fraction) if carve_test else val_fraction
            found["validation"], train = _stratified_take(train, share, rng)
        layout = "kaggle+carved" if carve_test or carve_val else "kaggle"
        splits = DatasetSplits(train, found["validation"], found["test"], skipped, root, layout)
    elif _named_subdirs(root, _CLASS_FOLDERS):
        samples = _read_class_folders(root, skipped, verify, max_pixels)
        rng = np.random.default_rng(seed)
        test, rest = _stratified_take(samples, test_fraction, rng)
        validation, train = _stratified_take(rest, val_fraction / (1 - test_fraction), rng)
        splits = DatasetSplits(train, validation, test, skipped, root, "flat")
    else:
        raise ValueError(
            f"{root} holds neither split folders (train/validation/test, each with Real/ and Fake/) nor "
            f"class folders (Real/ and Fake/); found: {sorted(p.name for p in root.iterdir()) or 'nothing'}"
        )
    return splits


def pos_weight(samples: list[Sample]) -> float:
    """``n_real / n_fake``: the ``pos_weight`` that balances ``BCEWithLogitsLoss`` for this set."""
    counts = Counter(sample.label for sample in samples)
    if counts[0] == 0 or counts[1] == 0:
        raise ValueError(f"need both classes to weight them, got {dict(_count(samples))}")
    return counts[0] / counts[1]


def balanced_sample_weights(samples: list[Sample]) -> list[float]:
    """Per-sample weights (1 / class size) for ``torch.utils.data.WeightedRandomSampler``."""
    counts = Counter(sample.label for sample in samples)
    return [1.0 / counts[sample.label] for sample in samples]


def verify_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise :class:`BadImageError` unless ``path`` decodes; JPEGs are decoded at reduced scale."""
    try:
        image = Image.open(path)
    except Exception:
        load_image(path, max_pixels=max_pixels)  # raises BadImageError with a reason a person can read
        raise
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise BadImageError(f"image too large: {width}x{height} (limit {max_pixels:,} pixels)")
        if image.format == "JPEG":
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        load_image(image, max_pixels=max_pixels)


def _count(samples: list[Sample]) -> dict[str, int]:
    counts = Counter(sample.label for sample in samples)
    return {name: counts[index] for index, name in enumerate(LABELS)}


def _named_subdirs(folder: Path, aliases: dict[str, object]) -> dict[object, Path]:
    """Sub-folders whose lower-cased name is in ``aliases``, keyed by the alias value."""
    found: dict[object, Path] = {}
    for child in sorted(folder.iterdir()):
        key = aliases.get(child.name.lower()) if child.is_dir() else None
        if key is None:
            continue
        if key in found:
            raise ValueError(f"ambiguous folders in {folder}: {found[key].name!r} and {child.name!r} mean the same")
        found[key] = child
    return found


def _read_class_folders(folder: Path, skipped: list[tuple[Path, str]], verify: bool,
                        max_pixels: int) -> list[Sample]:
    class_dirs = _named_subdirs(folder, _CLASS_FOLDERS)
    samples: list[Sample] = []
    for label, name in enumerate(LABELS):
        class_dir = class_dirs.get(label)
        if class_dir is None:
            raise ValueError(f"missing class folder {folder / name} (expected {LABELS[0]}/ and {LABELS[1]}/, "
                             f"any letter case)")
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        readable = []
        check = functools.partial(_unreadable_reason, verify=verify, max_pixels=max_pixels)
        with ThreadPoolExecutor(_VERIFY_THREADS) as pool:  # Pillow decodes with the GIL released
            reasons = list(tqdm(pool.map(check, files), total=len(files), desc=f"verify {class_dir}",
                                unit="img", leave=False, disable=not verify or len(files) < 2000))
        for path, reason in zip(files, reasons):
            if reason is None:
                readable.append(Sample(path, label))
            else:
                warnings.warn(f"skipping {path}: {reason}", stacklevel=3)
                skipped.append((path, reason))
        if not readable:
            raise ValueError(f"class folder {class_dir} has no readable images "
                             f"({len(files)} file(s), none usable)")
        samples.extend(readable)
    return samples


def _unreadable_reason(path: Path, verify: bool, max_pixels: int) -> str | None:
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file extension ({path.suffix or 'none'})"
    if not verify:
        return None
    try:
        verify_image(path, max_pixels)
    except BadImageError as error:
        return str(error)
    return None


def _stratified_take(samples: list[Sample], fraction: float,
                     rng: np.random.Generator) -> tuple[list[Sample], list[Sample]]:
    """Split off ``fraction`` of each class (at least one image when fraction > 0 and the class has 3+)."""
    taken: list[Sample] = []
    kept: list[Sample] = []
    for label in range(len(LABELS)):
        members = [s for s in samples if s.label == label]
        order = rng.permutation(len(members))
        n_take = round(len(members) * fraction)
        if fraction > 0 and n_take == 0 and len(members) >= 3:
            n_take = 1
        taken.extend(members[i] for i in sorted(order[:n_take]))
        kept.extend(members[i] for i in sorted(order[n_take:]))
    return taken, kept


def _read_manifest(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest.get("description"), str) else None


def is_full_size_crop(path: Path) -> bool:
    """Whether ``path`` is a region of a full-size photo (``data edits``' ``eNNNNNN_K``, ``data negatives``'
    ``nNNNNNN_K``) rather than a self-blended crop or its twin (``data synth``'s ``NNNNNN``)."""
    return _FULL_SIZE_CROP.fullmatch(path.stem) is not None


def blend_mask_paths(samples: list[Sample]) -> list[Path | None]:
    """The blend mask ``data synth`` wrote beside every fake (``<split>/masks/<stem>.png``); ``None`` for reals.

    A real image has no blend, so its mask is all zeros and needs no file. Raises :class:`ValueError`
    naming the first fake without a mask: a dataset that did not come from ``data synth`` has none.
    """
    paths: list[Path | None] = []
    for sample in samples:
        if sample.label == 0:
            paths.append(None)
            continue
        mask = sample.path.parent.parent / MASK_FOLDER / f"{sample.path.stem}.png"
        if not mask.is_file():
            raise ValueError(f"no blend mask for {sample.path} (expected {mask}); --mask-loss needs a dataset "
                             "written by 'deepfake-edge data synth'")
        paths.append(mask)
    return paths
