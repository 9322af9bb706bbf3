"""Show where the detector looked: the served CAM heatmap blended over the original image.

The model sees only the centre crop (resize shorter side, crop ``input_size``), so its heatmap covers
that crop. :func:`overlay_heatmap` maps it back onto the crop's region of the *original* image (using the
same geometry as preprocessing, via ``Preprocessor.crop_box``) and dims the rest, which the model never saw.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageEnhance

from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import ImageSource, Preprocessor, load_image

OUTSIDE_BRIGHTNESS = 0.5  # how much of the original shows outside the crop the model saw


@lru_cache(maxsize=8)
def colour_lut(cmap: str = "jet") -> np.ndarray:
    """A (256, 3) UINT8 lookup table from matplotlib's colour map ``cmap`` (low = blue, high = red for jet)."""
    from matplotlib import colormaps

    return (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def colourize(heatmap: np.ndarray, size: tuple[int, int], cmap: str = "jet") -> Image.Image:
    """``heatmap`` (2-D, values in [0, 1]) resized bilinearly to ``size`` (width, height), as an RGB image."""
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {heat.shape}")
    heat = np.nan_to_num(heat, nan=0.0, posinf=1.0, neginf=0.0)
    resized = np.asarray(Image.fromarray(heat, mode="F").resize(size, Image.Resampling.BILINEAR))
    indices = np.clip(resized * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(colour_lut(cmap)[indices], mode="RGB")


def overlay_heatmap(
    image: ImageSource, heatmap: np.ndarray, card: ModelCard, alpha: float = 0.45, cmap: str = "jet"
) -> Image.Image:
    """The original ``image`` (RGB, its own size) with ``heatmap`` blended at opacity ``alpha`` over the
    region the model saw; outside that region the image is dimmed. ``card`` gives the crop geometry."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    original = load_image(image) if not isinstance(image, Image.Image) or image.mode != "RGB" else image
    left, top, right, bottom = (round(v) for v in Preprocessor.from_card(card).crop_box(original.size))
    box = (left, top, max(right, left + 1), max(bottom, top + 1))
    region = original.crop(box)
    blended = Image.blend(region, colourize(heatmap, region.size, cmap), alpha)
    result = ImageEnhance.Brightness(original).enhance(OUTSIDE_BRIGHTNESS)
    result.paste(blended, box[:2])
    return result
