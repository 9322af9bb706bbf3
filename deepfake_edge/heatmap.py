"""Show where the detector looked: the served CAM heatmap blended over the original image.

A heatmap covers a box of the original image: the whole image for whole-image analysis (stitched from
its regions, deepfake_edge/regions.py), the centre crop for the fast single view (``Preprocessor.crop_box``).
:func:`overlay_heatmap` maps it onto that box and dims the rest, which the model never saw.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageEnhance

from deepfake_edge.preprocessing import ImageSource, load_image

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
    image: ImageSource, heatmap: np.ndarray, box: tuple[float, float, float, float] | None = None,
    alpha: float = 0.45, cmap: str = "jet", box_of_size: tuple[int, int] | None = None,
) -> Image.Image:
    """The original ``image`` (RGB, its own size) with ``heatmap`` blended at opacity ``alpha`` over
    ``box`` (left, top, right, bottom; default the whole image); outside it the image is dimmed.
    ``box_of_size`` is the (width, height) the box is measured in when ``image`` is a resized copy."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    original = load_image(image) if not isinstance(image, Image.Image) or image.mode != "RGB" else image
    box = box or (0, 0, *original.size)
    sx, sy = (1.0, 1.0) if box_of_size is None else (original.width / box_of_size[0], original.height / box_of_size[1])
    left, top, right, bottom = round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)
    box = (left, top, max(right, left + 1), max(bottom, top + 1))
    region = original.crop(box)
    blended = Image.blend(region, colourize(heatmap, region.size, cmap), alpha)
    result = ImageEnhance.Brightness(original).enhance(OUTSIDE_BRIGHTNESS)
    result.paste(blended, box[:2])
    return result
