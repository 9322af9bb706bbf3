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
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import BadImageError, Preprocessor, load_image

log = logging.getLogger(__name__)

ImageTransform = Callable[[Image.Image, np.random.Generator], Image.Image]


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation. Blur and JPEG re-compression make detectors survive low-quality inputs."""

    crop_scale: tuple[float, float] = (0.6, 1.0)  # area fraction; kept high so crops rarely cut out the blend
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter_p: float = 0.5
    jitter_strength: float = 0.2  # brightness/contrast/saturation factors in [1 - s, 1 + s]
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)


class TrainAugment:
    """Random resized crop to ``input_size`` -> flip -> colour jitter -> Gaussian blur -> JPEG."""

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

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        c = self.config
        image = image.resize((self.input_size, self.input_size), self.resample, box=self._crop_box(*image.size, rng))
        if rng.random() < c.hflip_p:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
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
        return image


def eval_preprocessor(card: ModelCard) -> Preprocessor:
    """The evaluation transform: exactly what the client and the exported model use."""
    return Preprocessor.from_card(card)


class DetectorDataset(torch.utils.data.Dataset):
    """``Sample(path, label)`` items -> ``(uint8 (3, H, W) tensor, float label)``, or ``None`` for a bad file.

    With ``augment`` set, images go through it with a per-(seed, epoch, key) generator, ``key`` being
    ``rng_keys[index]`` (items sharing a key, a real/fake pair, get identical augmentation) or the index;
    otherwise through ``preprocessor``. Unreadable files yield ``None`` (dropped and counted by :func:`collate`)
    so one bad image never stops a run.
    """

    def __init__(
        self,
        samples: Sequence,
        preprocessor: Preprocessor,
        augment: TrainAugment | None = None,
        seed: int = 0,
        rng_keys: Sequence[int] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.preprocessor = preprocessor
        self.augment = augment
        self.seed = seed
        self.rng_keys = rng_keys
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, float] | None:
        sample = self.samples[index]
        try:
            if self.augment is None:
                pixels = self.preprocessor(sample.path)
            else:
                key = index if self.rng_keys is None else self.rng_keys[index]
                rng = np.random.default_rng((self.seed, self.epoch, key))
                image = self.augment(load_image(sample.path), rng)
                pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
        except (BadImageError, OSError) as error:
            log.warning("skipping unreadable image %s: %s", sample.path, error)
            return None
        return torch.from_numpy(np.ascontiguousarray(pixels)), float(sample.label)


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the readable items; returns ``(uint8 images, float labels, number of dropped items)``."""
    good = [item for item in items if item is not None]
    dropped = len(items) - len(good)
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0), dropped
    images = torch.stack([image for image, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.float32)
    return images, labels, dropped
