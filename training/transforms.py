"""Image pipelines for training: train-time augmentation and the eval transform, plus a torch Dataset.

Both pipelines start from :func:`deepfake_edge.preprocessing.load_image` and end in a UINT8 (3, H, W)
tensor; mean/std normalisation happens on the batch with :func:`deepfake_edge.preprocessing.normalize`,
exactly as at inference. The eval transform *is* :class:`Preprocessor` built from the model card, so
validation and test numbers measure what the served model will see.

Augmentation is Pillow/numpy only (torchvision's transforms would need its C extension for some ops)
and draws every random choice from a generator seeded by (seed, epoch, item): a run is reproducible
whatever the number of DataLoader workers.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import BadImageError, Preprocessor, load_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation. Blur and JPEG re-compression make detectors survive low-quality inputs."""

    crop_scale: tuple[float, float] = (0.6, 1.0)  # area fraction; kept high so crops rarely cut out the blend
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    # Photos arrive turned by EXIF orientation (or uploaded sideways): a quarter turn or transpose of both
    # twins, so that orientation alone never reads as an edit.
    turn_p: float = 0.3
    jitter_p: float = 0.5
    jitter_strength: float = 0.2  # brightness/contrast/saturation factors in [1 - s, 1 + s]
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)


_TURNS = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
          Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE)


class TrainAugment:
    """Random resized crop to ``input_size`` -> flip -> quarter turn or transpose -> colour jitter ->
    Gaussian blur -> JPEG."""

    def __init__(self, input_size: int, interpolation: str = "bilinear", config: AugmentConfig = AugmentConfig()):
        self.input_size = input_size
        self.resample = Image.Resampling[interpolation.upper()]
        self.config = config

    def _crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        area = width * height
        log_ratio = (math.log(self.config.crop_ratio[0]), math.log(self.config.crop_ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.config.crop_scale)
            ratio = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target * ratio))
            h = round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                left = int(rng.integers(0, width - w + 1))
                top = int(rng.integers(0, height - h + 1))
                return left, top, left + w, top + h
        side = min(width, height)  # fallback: centre square
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side

    def __call__(self, image: Image.Image, rng: np.random.Generator,
                 mask: Image.Image | None = None) -> tuple[Image.Image, Image.Image | None]:
        """Augment ``image``; a blend ``mask`` of the same size gets the same crop and flip (and nothing else)."""
        c = self.config
        size, box = (self.input_size, self.input_size), self._crop_box(*image.size, rng)
        image = image.resize(size, self.resample, box=box)
        mask = None if mask is None else mask.resize(size, Image.Resampling.BILINEAR, box=box)
        if rng.random() < c.hflip_p:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            mask = None if mask is None else mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if rng.random() < c.turn_p:
            turn = _TURNS[int(rng.integers(len(_TURNS)))]
            image = image.transpose(turn)
            mask = None if mask is None else mask.transpose(turn)
        if rng.random() < c.jitter_p:
            enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
            for i in rng.permutation(len(enhancers)):
                image = enhancers[i](image).enhance(rng.uniform(1 - c.jitter_strength, 1 + c.jitter_strength))
        if rng.random() < c.blur_p:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*c.blur_sigma)))
        if rng.random() < c.jpeg_p:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=int(rng.integers(c.jpeg_quality[0], c.jpeg_quality[1] + 1)))
            image = Image.open(buffer)
            image.load()
        return image, mask


def eval_preprocessor(card: ModelCard) -> Preprocessor:
    """The evaluation transform: exactly what the client and the exported model use."""
    return Preprocessor.from_card(card)


class DetectorDataset(torch.utils.data.Dataset):
    """``Sample(path, label)`` items -> ``(uint8 (3, H, W) tensor, float label)``, or ``None`` for a bad file.

    With ``augment`` set, images go through it with a per-(seed, epoch, key) generator, ``key`` being
    ``rng_keys[index]`` (items sharing a key, a real/fake pair, get identical augmentation) or the index;
    otherwise through ``preprocessor``. Unreadable files yield ``None`` (dropped and counted by :func:`collate`)
    so one bad image never stops a run. With ``mask_paths`` (training only: one blend-mask file per sample,
    ``None`` for an all-zero mask) an item also carries its augmented mask, a uint8 (1, H, W) tensor; with
    ``flags`` (one per sample) it carries its flag last, a bool tensor.
    """

    def __init__(
        self,
        samples: Sequence,
        preprocessor: Preprocessor,
        augment: TrainAugment | None = None,
        seed: int = 0,
        rng_keys: Sequence[int] | None = None,
        mask_paths: Sequence[Path | None] | None = None,
        flags: Sequence[bool] | None = None,
    ) -> None:
        if mask_paths is not None and augment is None:
            raise ValueError("blend masks are a training target: they need the training augmentation")
        self.samples = list(samples)
        self.mask_paths = mask_paths
        self.flags = flags
        self.preprocessor = preprocessor
        self.augment = augment
        self.seed = seed
        self.rng_keys = rng_keys
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple | None:
        sample = self.samples[index]
        mask = None
        try:
            if self.augment is None:
                pixels = self.preprocessor(sample.path)
            else:
                key = index if self.rng_keys is None else self.rng_keys[index]
                rng = np.random.default_rng((self.seed, self.epoch, key))
                image = load_image(sample.path)
                image, mask = self.augment(image, rng, self._load_mask(index, image.size))
                pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
        except (BadImageError, OSError) as error:
            log.warning("skipping unreadable image %s: %s", sample.path, error)
            return None
        item = (torch.from_numpy(np.ascontiguousarray(pixels)), float(sample.label))
        if self.mask_paths is not None:
            if mask is None:  # a real image: nothing is blended anywhere
                item += (torch.zeros((1, *pixels.shape[1:]), dtype=torch.uint8),)
            else:
                item += (torch.from_numpy(np.asarray(mask, dtype=np.uint8)[None].copy()),)
        if self.flags is not None:
            item += (torch.tensor(bool(self.flags[index])),)
        return item

    def _load_mask(self, index: int, size: tuple[int, int]) -> Image.Image | None:
        path = None if self.mask_paths is None else self.mask_paths[index]
        if path is None:
            return None
        with Image.open(path) as mask:
            mask = mask.convert("L")
        return mask if mask.size == size else mask.resize(size, Image.Resampling.BILINEAR)


def collate(items: list) -> tuple:
    """Stack the readable items: ``(uint8 images, float labels, number of dropped items)``, then what else the
    dataset yields, in its order: the uint8 masks, the bool flags."""
    good = [item for item in items if item is not None]
    dropped = len(items) - len(good)
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0), dropped
    images = torch.stack([item[0] for item in good])
    labels = torch.tensor([item[1] for item in good], dtype=torch.float32)
    extras = [torch.stack([item[k] for item in good]) for k in range(2, len(good[0]))]
    return images, labels, dropped, *extras
