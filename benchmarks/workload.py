"""The images every benchmarked system receives: real photographs that ship inside installed packages.

Each photo is cut into a few square crops (deterministic), resized to the card's ``resize_size`` and
JPEG-encoded once. A server that preprocesses (the naive Flask one) and our client (which preprocesses
before sending) therefore start from the same bytes, and because the crops are already at
``resize_size`` the shared :class:`Preprocessor` only decodes and centre-crops them. The engine
benchmark and ``perf_analyzer`` get the same images already preprocessed (UINT8, 3 x H x W).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import Preprocessor

_SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "camera")
# (left, top, side) as fractions of the shorter side: the full centre square and three smaller crops.
_CROPS = ((None, None, 1.0), (0.0, 0.0, 0.7), (0.3, 0.3, 0.7), (0.15, 0.1, 0.8))


@dataclass(frozen=True)
class Workload:
    """``encoded[i]`` (JPEG bytes) preprocesses to ``tensors[i]`` (UINT8 3 x H x W) for every i."""

    names: tuple[str, ...]
    encoded: tuple[bytes, ...]
    tensors: np.ndarray

    def __len__(self) -> int:
        return len(self.encoded)

    def batch(self, size: int, offset: int = 0) -> np.ndarray:
        """``size`` preprocessed images starting at ``offset``, cycling through the set."""
        index = (np.arange(size) + offset) % len(self)
        return np.ascontiguousarray(self.tensors[index])


def packaged_photos() -> dict[str, Image.Image]:
    """Real photographs shipped by scikit-image and matplotlib (no download needed)."""
    import matplotlib.cbook
    import skimage.data

    photos = {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in _SKIMAGE_PHOTOS}
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photos["grace_hopper"] = Image.open(handle).convert("RGB")
    return photos


def _square_crop(image: Image.Image, left: float | None, top: float | None, side: float) -> Image.Image:
    width, height = image.size
    pixels = int(min(width, height) * side)
    x = (width - pixels) // 2 if left is None else int(left * min(width, height))
    y = (height - pixels) // 2 if top is None else int(top * min(width, height))
    return image.crop((x, y, x + pixels, y + pixels))


def build_workload(card: ModelCard, jpeg_quality: int = 95) -> Workload:
    """32 real-photo crops as JPEG bytes at ``card.resize_size`` plus their preprocessed tensors."""
    preprocess = Preprocessor.from_card(card)
    names, encoded = [], []
    for name, photo in packaged_photos().items():
        for number, (left, top, side) in enumerate(_CROPS):
            crop = _square_crop(photo, left, top, side).resize((card.resize_size, card.resize_size), Image.BILINEAR)
            buffer = io.BytesIO()
            crop.save(buffer, format="JPEG", quality=jpeg_quality)
            names.append(f"{name}_{number}")
            encoded.append(buffer.getvalue())
    tensors = np.stack([preprocess(data) for data in encoded])
    return Workload(tuple(names), tuple(encoded), tensors)
