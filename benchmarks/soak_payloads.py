"""What the soak sends: real photographs in the formats users upload, and the malformed inputs an attacker
(or an unlucky user) sends instead.

Everything is built once, deterministically, before the run, so requests cost only the sending.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

# scikit-image's bundled photographs: the ones that ship in its wheel (others are fetched at run time).
_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "camera", "coins", "retina")


@dataclass(frozen=True)
class Payloads:
    """Encoded files for the image channels and raw tensors for the straight-to-Triton channel."""

    valid: tuple[tuple[str, bytes], ...]
    truncated: tuple[bytes, ...]
    not_image: bytes
    bomb: bytes
    oversized: bytes


def _photo(name: str) -> Image.Image:
    import skimage.data

    pixels = getattr(skimage.data, name)()
    return Image.fromarray(pixels)


def _encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def valid_images() -> tuple[tuple[str, bytes], ...]:
    """Real photographs as JPEG, PNG, WebP, grayscale and CMYK JPEG, in sizes from thumbnails to 4 MP."""
    files = []
    for index, name in enumerate(_PHOTOS):
        image = _photo(name)
        if index % 4 == 0:
            files.append((f"{name}.jpg", _encode(image.convert("RGB"), "JPEG", quality=90)))
        elif index % 4 == 1:
            files.append((f"{name}.png", _encode(image, "PNG")))
        elif index % 4 == 2:
            files.append((f"{name}_cmyk.jpg", _encode(image.convert("CMYK"), "JPEG", quality=85)))
        else:
            files.append((f"{name}.webp", _encode(image, "WEBP", quality=80)))
    big = _photo("astronaut").resize((2048, 2048), Image.Resampling.BILINEAR)
    files.append(("astronaut_4mp.jpg", _encode(big, "JPEG", quality=92)))
    files.append(("chelsea_small.jpg", _encode(_photo("chelsea").resize((96, 64)), "JPEG", quality=75)))
    return tuple(files)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A few hundred bytes of PNG declaring ``width`` x ``height`` pixels (900 M by default)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def build_payloads(max_upload_bytes: int) -> Payloads:
    """All payloads; ``oversized`` is one byte over the web app's upload limit."""
    valid = valid_images()
    jpegs = [data for name, data in valid if name.endswith(".jpg")]
    truncated = tuple(data[: len(data) * fraction // 4] for data in jpegs for fraction in (1, 2, 3))
    # A JPEG header followed by noise: looks like an image to anything that sniffs only the magic bytes.
    noise = np.random.default_rng(0).integers(0, 256, max_upload_bytes + 1, dtype=np.uint8).tobytes()
    oversized = jpegs[0][:2048] + noise[2048:]
    not_image = b"%PDF-1.4\n% not a photograph, a document with an image extension\n" * 8
    return Payloads(valid=valid, truncated=truncated, not_image=not_image, bomb=png_bomb(), oversized=oversized)


def wrong_tensors(input_size: int, max_batch_size: int) -> dict[str, np.ndarray]:
    """Tensors the model's config forbids, for requests sent straight to Triton with tritonclient."""
    side = input_size
    return {
        "wrong_dtype": np.zeros((1, 3, side, side), dtype=np.float32),
        "wrong_shape": np.zeros((1, 3, side // 2 + 1, side), dtype=np.uint8),
        "batch_too_big": np.zeros((max_batch_size + 1, 3, side, side), dtype=np.uint8),
    }
