"""The one definition of preprocessing: decode -> RGB -> resize -> centre crop -> UINT8 tensor.

Training evaluation, export calibration, the client and the web app all call :func:`load_image` and
:class:`Preprocessor`; a parity test keeps it that way. Normalisation (mean/std) is *not* done here:
it happens inside the exported graph (and in :func:`normalize` for PyTorch), so requests carry UINT8.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

    from deepfake_edge.model_card import ModelCard

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image]

# Declared-pixel ceiling checked before any pixel is decoded (a 30,000 x 30,000 PNG is a few KB on disk).
DEFAULT_MAX_PIXELS = 40_000_000
# Longest over shortest side, also checked on the header. Phone panoramas reach about 10:1 (a 4000 x 400
# one must work); a 68-byte PNG of 1 x 40,000,000 passed the pixel limit and grew the web app by ~1 GB
# before its resize was refused.
MAX_ASPECT_RATIO = 20
# Formats whose header states the size that gets decoded, each with its decode peak measured below.
# Not ICNS: it decodes an embedded PNG of any size behind a 512 x 512 header.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO", "TGA")
_TURNING_ORIENTATIONS = range(2, 9)  # EXIF orientations that ImageOps.exif_transpose acts on
_COMPOSITE_BAND_PIXELS = 1 << 18  # pixels composited on white at once: 1 MB per RGBA temporary
# Peak bytes per pixel of load_image by decoded mode, measured with VmHWM on 4000 x 4000 images: the decoded
# image (Pillow keeps RGB, RGBA, LA, CMYK, I and F in 4 bytes a pixel), the RGB result and the temporaries
# between them (RGBA 8, 16-bit 11, I 16.5, F 24.5). Other modes get the largest figure.
_PEAK_BYTES_PER_PIXEL = {"RGB": 4, "1": 5, "L": 5, "P": 5, "RGBA": 8, "LA": 8, "PA": 8, "CMYK": 8, "YCbCr": 8,
                         "I;16": 12, "I;16B": 12, "I;16L": 12, "I": 18, "F": 26}
_UNKNOWN_MODE_BYTES_PER_PIXEL = 26
# Pillow's WebP decoder hands over whole RGBA frames (measured: RGB 16, RGBA 17.3 bytes a pixel in all).
_WEBP_EXTRA_BYTES_PER_PIXEL = 12
# libjpeg keeps every DCT coefficient (2 bytes a sample) of a progressive JPEG until its last scan.
_PROGRESSIVE_JPEG_BYTES_PER_SAMPLE = 2
# Whatever the size: decoder line buffers, zlib windows, composite bands (measured: under 5 MB).
_DECODE_SLACK_BYTES = 8 << 20

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class BadImageError(ValueError):
    """The input is not a decodable image within limits; the message says why, for a person."""


def open_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``source`` and check its header; no pixel is decoded (:func:`load_image` does that).

    Raises :class:`BadImageError` for empty or unrecognised input, a format outside
    :data:`SUPPORTED_FORMATS`, and a size that is empty, over ``max_pixels`` or more elongated than
    :data:`MAX_ASPECT_RATIO`. An ``Image`` given in is checked and returned as it is.
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, bytes):
            if not source:
                raise BadImageError("empty file (0 bytes)")
            source = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)) and Path(source).stat().st_size == 0:
            raise BadImageError("empty file (0 bytes)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(source, formats=SUPPORTED_FORMATS)
        except UnidentifiedImageError:
            raise BadImageError("not an image (unrecognised format)") from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise BadImageError(f"image too large: {error}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            # Some Pillow plugins report a broken header with ValueError (e.g. a 2-byte "P6" PPM).
            raise BadImageError(f"cannot read image: {error}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadImageError(
            f"image too large: {width}x{height} = {width * height:,} pixels (limit {max_pixels:,})"
        )
    if width == 0 or height == 0:
        raise BadImageError("image has no pixels")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadImageError(f"image too elongated: {width}x{height} pixels, more than {MAX_ASPECT_RATIO}:1")
    return image


def decoded_bytes_estimate(image: Image.Image) -> int:
    """The most memory :func:`load_image` takes at once to turn ``image`` into RGB, from its header alone.

    ``image`` is what :func:`open_image` returns (nothing decoded yet). The figure is pixels times the
    peak bytes per pixel measured for its mode and format (the same ones as their upper bound), so a
    caller can reserve the memory before decoding.
    """
    per_pixel = _PEAK_BYTES_PER_PIXEL.get(image.mode, _UNKNOWN_MODE_BYTES_PER_PIXEL)
    if image.format == "WEBP":
        per_pixel += _WEBP_EXTRA_BYTES_PER_PIXEL
    elif image.format == "JPEG" and image.info.get("progressive"):
        per_pixel += _PROGRESSIVE_JPEG_BYTES_PER_SAMPLE * len(image.getbands())
    return image.width * image.height * per_pixel + _DECODE_SLACK_BYTES


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``source`` (or an image :func:`open_image` opened) into RGB, applying EXIF orientation.

    Any Pillow mode is accepted (L, LA, P, RGBA, CMYK, I, I;16, F); transparency is composited on
    white, 16-bit images are scaled to 8 bits, animated images use their first frame. Raises
    :class:`BadImageError` for input :func:`open_image` refuses and for truncated or corrupt pixel data.
    An upright RGB ``Image`` given in is returned as it is, not copied.
    """
    image = open_image(source, max_pixels=max_pixels)
    try:
        image.seek(0)  # animated formats: classify the first frame
        image.load()
        if image.getexif().get(ExifTags.Base.Orientation, 1) in _TURNING_ORIENTATIONS:
            # Only then: exif_transpose would copy an upright image whole (4 bytes a pixel for RGB).
            image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Pillow reports truncated or corrupt pixel data through any of these.
        raise BadImageError(f"corrupt or truncated image: {error}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image)
        peak = 65535 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255
        if pixels.dtype.kind in "iu":
            # round(v / peak * 255) in integers: the same bytes as in float64, at a fraction of the memory
            # and time (a 90 KB 16-bit PNG of 6300 x 6300 took ~1 GB through float64 temporaries). In place,
            # so that one uint32 array is alive at a time.
            scaled = np.clip(pixels, 0, peak).astype(np.uint32)
            scaled *= 510
            scaled += peak
            scaled //= 2 * peak
            pixels = scaled.astype(np.uint8)
        else:
            pixels = np.clip(pixels.astype(np.float64) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _composite_on_white(image)
    return image.convert("RGB")


def _composite_on_white(image: Image.Image) -> Image.Image:
    """``image`` with transparency, alpha-composited on white, as RGB.

    A band of rows at a time: compositing the whole image at once held four full-size RGBA copies
    (20 bytes a pixel with the decoded RGBA). Compositing is per pixel, so the bytes are the same.
    """
    rgb = Image.new("RGB", image.size)
    rows = max(1, _COMPOSITE_BAND_PIXELS // image.width)
    for top in range(0, image.height, rows):
        band = image.crop((0, top, image.width, min(top + rows, image.height))).convert("RGBA")
        background = Image.new("RGBA", band.size, (255, 255, 255, 255))
        rgb.paste(Image.alpha_composite(background, band).convert("RGB"), (0, top))
    return rgb


@dataclass(frozen=True)
class Preprocessor:
    """Resize the shorter side to ``resize_size``, centre-crop ``input_size``, return UINT8 (3, H, W)."""

    input_size: int
    resize_size: int
    interpolation: str = "bilinear"

    @classmethod
    def from_card(cls, card: "ModelCard") -> "Preprocessor":
        return cls(card.input_size, card.resize_size, card.interpolation)

    def _geometry(self, width: int, height: int) -> tuple[tuple[int, int], int, int]:
        """Resized size and the crop's top-left corner in it."""
        scale = self.resize_size / min(width, height)
        new_size = (max(self.input_size, round(width * scale)), max(self.input_size, round(height * scale)))
        return new_size, (new_size[0] - self.input_size) // 2, (new_size[1] - self.input_size) // 2

    def resize_and_crop(self, image: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Raises :class:`BadImageError` if the resized image would exceed ``max_pixels``."""
        new_size, left, top = self._geometry(*image.size)
        if new_size[0] * new_size[1] > max_pixels:
            # A 20,000 x 1 PNG is 144 bytes, yet resizing its short side to resize_size would take gigabytes.
            raise BadImageError(f"image too elongated: {image.width}x{image.height} would be resized to "
                                f"{new_size[0]}x{new_size[1]} pixels (limit {max_pixels:,})")
        image = image.resize(new_size, INTERPOLATIONS[self.interpolation])
        return image.crop((left, top, left + self.input_size, top + self.input_size))

    def crop_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The part of an image of ``size`` (width, height) that :meth:`resize_and_crop` keeps, as
        (left, top, right, bottom) in that image's pixels: where a heatmap of the crop belongs."""
        (new_width, new_height), left, top = self._geometry(*size)
        sx, sy = size[0] / new_width, size[1] / new_height
        return (left * sx, top * sy, (left + self.input_size) * sx, (top + self.input_size) * sy)

    def __call__(self, source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        image = self.resize_and_crop(load_image(source, max_pixels=max_pixels), max_pixels=max_pixels)
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))

    def batch(self, sources: list[ImageSource]) -> np.ndarray:
        """Stack several images into a UINT8 (N, 3, H, W) batch (raises on the first bad one)."""
        return np.stack([self(source) for source in sources])


def normalize(batch: "torch.Tensor", mean: tuple[float, ...], std: tuple[float, ...]) -> "torch.Tensor":
    """UINT8 (N, 3, H, W) -> float32 normalised, exactly as the exported graph does it."""
    import torch

    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    return (batch.to(torch.float32) / 255.0 - mean_t) / std_t
