"""Image files for the client tests: real photographs in the modes users have, and the bad inputs a new
user throws at a detector. Shared by tests/test_client_*.py."""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

# name -> reason the CLI must print (a regular expression)
BAD_FILES = {
    "empty.jpg": "empty file",
    "truncated.jpg": "(?i)truncated",
    "notes.jpg": "not an image",
    "bomb.png": "too large",
}


def photo(name: str = "astronaut") -> Image.Image:
    """A real photograph bundled with scikit-image."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


COPIED_FROM = (300, 250, 420, 370)  # x0, y0, x1, y1 of the patch copied_astronaut copies
COPIED_TO = (40, 330)  # where its copy lands (top-left corner)


def copied_astronaut(angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """scikit-image's astronaut with the patch at COPIED_FROM pasted at COPIED_TO, turned by ``angle`` degrees
    and scaled by ``scale`` about its centre: a copy-move."""
    import cv2
    import skimage.data

    photo = skimage.data.astronaut()
    x0, y0, x1, y1 = COPIED_FROM
    patch = photo[y0:y1, x0:x1]
    side = patch.shape[0]
    move = cv2.getRotationMatrix2D((side / 2, side / 2), angle, scale)
    warped = cv2.warpAffine(patch, move, (side, side))
    inside = cv2.warpAffine(np.ones((side, side), np.uint8), move, (side, side)) > 0
    out = photo.copy()
    region = out[COPIED_TO[1]:COPIED_TO[1] + side, COPIED_TO[0]:COPIED_TO[0] + side]
    region[inside] = warped[inside]
    return out


def write_good_images(folder: Path) -> list[str]:
    """Real photographs saved as an 8-bit JPEG, a PNG, a CMYK JPEG, a 16-bit grayscale PNG and an
    animated GIF (the client library classifies it on its first frame; ``detect`` and the web page, which
    decide by content, analyse it as a video). Returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    photo("astronaut").save(folder / "astronaut.jpg", quality=90)
    photo("chelsea").save(folder / "chelsea.png")
    photo("coffee").convert("CMYK").save(folder / "coffee_cmyk.jpg", quality=90)
    camera = np.asarray(photo("camera"), dtype=np.uint16) * 257
    Image.fromarray(camera).save(folder / "camera_16bit.png")
    assert Image.open(folder / "camera_16bit.png").mode == "I;16"
    frames = [photo("rocket").convert("P"), photo("coffee").resize((427, 300)).convert("P")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return sorted(["astronaut.jpg", "chelsea.png", "coffee_cmyk.jpg", "camera_16bit.png", "animated.gif"])


def write_bad_images(folder: Path) -> list[str]:
    """A zero-byte file, a truncated JPEG, a text file named .jpg, a 30,000 x 30,000 PNG bomb."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    photo("astronaut").save(folder / "whole.jpg", quality=90)
    whole = (folder / "whole.jpg").read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (folder / "notes.jpg").write_text("meeting notes, not a photograph\n")
    (folder / "bomb.png").write_bytes(png_bomb(30_000, 30_000))
    return sorted(BAD_FILES)


@lru_cache(maxsize=2)
def png_bomb(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG of ``width`` x ``height`` (900 M pixels at 30,000 squared: ~110 KB on disk),
    written row by row so that making it never holds the pixels in memory, unlike Pillow's encoder."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0 + packed bits
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
