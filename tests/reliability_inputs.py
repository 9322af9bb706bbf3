"""Hostile image inputs for the reliability tests: small real photographs in every format Pillow writes,
byte-level mutations of them (Hypothesis strategies), and decompression bombs in several formats."""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

from hypothesis import strategies as st
from PIL import Image

# Values a size field takes in hand-made attacks: zero, one, just over 16/31/32 bits, and plain huge.
INTERESTING_SIZES = (0, 1, 255, 256, 30_000, 65_535, 65_536, 2**31 - 1, 2**31, 2**32 - 1)


@lru_cache(maxsize=1)
def seed_images() -> dict[str, bytes]:
    """A 96 x 64 crop of a real photograph encoded as PNG, JPEG (baseline and progressive), GIF, BMP,
    TIFF, WebP, PPM, ICO and TGA."""
    import skimage.data

    photo = Image.fromarray(skimage.data.chelsea()[100:164, 150:246])
    encodings = {
        "png": ("PNG", {}), "jpeg": ("JPEG", {"quality": 85}), "jpeg_progressive": ("JPEG", {"progressive": True}),
        "gif": ("GIF", {}), "bmp": ("BMP", {}), "tiff": ("TIFF", {}), "webp": ("WEBP", {"quality": 80}),
        "ppm": ("PPM", {}), "ico": ("ICO", {}), "tga": ("TGA", {}),
    }
    seeds = {}
    for name, (image_format, options) in encodings.items():
        buffer = io.BytesIO()
        photo.save(buffer, format=image_format, **options)
        seeds[name] = buffer.getvalue()
    return seeds


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every PNG chunk CRC so that a mutation gets past the CRC check into the decoder."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, position = bytearray(data[:8]), 8
    while position + 8 <= len(data):
        length = struct.unpack(">I", data[position : position + 4])[0]
        end = position + 8 + length
        if end + 4 > len(data):
            out += data[position:]
            break
        out += data[position:end] + struct.pack(">I", zlib.crc32(data[position + 4 : end]))
        position = end + 4
    return bytes(out)


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A seed image with 1-4 mutations: bit flips, truncation, inserted or deleted runs, and size-like
    integers written over the header; PNG chunk CRCs are then fixed (or not)."""
    seeds = seed_images()
    data = bytearray(seeds[draw(st.sampled_from(sorted(seeds)))])
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(("flip", "truncate", "insert", "delete", "size")))
        if operation == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif operation == "truncate":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 64))]
        else:
            header_position = min(position, 60)
            value = draw(st.sampled_from(INTERESTING_SIZES))
            packed = struct.pack(draw(st.sampled_from((">I", "<I"))), value)
            data[header_position : header_position + 4] = packed
    result = bytes(data)
    return fix_png_crcs(result) if draw(st.booleans()) else result


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (3 * min(width, 4096) + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def bombs() -> dict[str, bytes]:
    """Small files declaring far more pixels than any limit, one per format whose header says the size."""
    seeds = seed_images()
    gif = bytearray(seeds["gif"])
    gif[6:10] = struct.pack("<HH", 65_535, 65_535)  # logical screen
    descriptor = gif.index(b"\x2c")  # first image descriptor: left, top, width, height
    gif[descriptor + 5 : descriptor + 9] = struct.pack("<HH", 65_535, 65_535)
    bmp = bytearray(seeds["bmp"])
    bmp[18:26] = struct.pack("<ii", 50_000, 50_000)
    jpeg = bytearray(seeds["jpeg"])
    sof = jpeg.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65_500, 65_500)
    return {
        "png_900M": png_declaring(30_000, 30_000),
        "png_64M": png_declaring(8_000, 8_000),
        "gif_4G": bytes(gif),
        "bmp_2.5G": bytes(bmp),
        "jpeg_4G": bytes(jpeg),
        "tiff_4G": _tiff_declaring(65_535, 65_535),
        "ppm_900M": b"P6\n30000 30000\n255\n" + bytes(4096),
    }


def _tiff_declaring(width: int, height: int) -> bytes:
    """A little-endian TIFF whose ImageWidth/ImageLength tags claim ``width`` x ``height``."""
    data = bytearray(seed_images()["tiff"])
    assert data[:2] == b"II"
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        offset = ifd + 2 + 12 * entry
        tag, kind = struct.unpack("<HH", data[offset : offset + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            value = width if tag == 256 else height
            data[offset + 8 : offset + 12] = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
    return bytes(data)
