"""The shared preprocessing: decoding rules, modes, limits and the resize/crop geometry."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import BadImageError, Preprocessor, load_image, normalize
from client_samples import png_bomb


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "1"])
def test_every_mode_becomes_rgb(mode):
    image = (Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode) if mode != "I;16"
             else Image.new("I;16", (40, 30), 40000))
    fmt = "TIFF" if mode in ("CMYK", "I") else "PNG"
    decoded = load_image(_encode(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (40, 30)


def test_sixteen_bit_grey_scales_to_eight_bits():
    decoded = load_image(_encode(Image.new("I;16", (8, 8), 65535), "PNG"))
    assert np.asarray(decoded).min() == 255
    decoded = load_image(_encode(Image.new("I;16", (8, 8), 32896), "PNG"))
    assert np.asarray(decoded)[0, 0, 0] == 128


def test_transparency_is_composited_on_white():
    decoded = load_image(_encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"))
    assert np.asarray(decoded).min() == 255


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = load_image(_encode(image, "JPEG", exif=exif))
    assert decoded.size == (20, 60)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "empty"),
        (b"this is text, not a picture", "not an image"),
        (_encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:200], "(?i)truncated"),
    ],
)
def test_bad_bytes_raise_bad_image_error(payload, reason):
    with pytest.raises(BadImageError, match=reason):
        load_image(payload)


def test_declared_pixel_bomb_is_refused_before_decoding():
    bomb = png_bomb(30_000, 30_000)
    assert len(bomb) < 200_000
    with pytest.raises(BadImageError, match="too large"):
        load_image(bomb)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    payload = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(payload))[0, 0].tolist() == [255, 0, 0]


def test_preprocessor_geometry_follows_the_card():
    card = ModelCard(arch="small_cnn", input_size=32, resize_size=36)
    tensor = Preprocessor.from_card(card)(Image.new("RGB", (90, 45), (7, 8, 9)))
    assert tensor.shape == (3, 32, 32) and tensor.dtype == np.uint8
    assert tensor[:, 0, 0].tolist() == [7, 8, 9]


def test_centre_crop_keeps_the_centre():
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, 20:60] = 255  # bright centre band, dark sides that the crop must cut away
    tensor = Preprocessor(input_size=40, resize_size=40)(Image.fromarray(pixels))
    assert tensor.min() == 255


@pytest.mark.parametrize("size", [(150, 90), (90, 150), (64, 64), (1000, 37)])
def test_crop_box_locates_the_crop_in_the_original(size):
    # Noise makes any misplaced box differ by far more than the resampling round-off of 1.
    preprocessor = Preprocessor(input_size=32, resize_size=40)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    cropped = np.asarray(preprocessor.resize_and_crop(image), dtype=np.int16)
    from_box = image.resize((32, 32), Image.Resampling.BILINEAR, box=preprocessor.crop_box(image.size))
    assert np.abs(cropped - np.asarray(from_box, dtype=np.int16)).max() <= 1


def test_normalize_computes_on_the_batch_device():
    # The "meta" device stands in for CUDA here: constants made on the CPU would not mix with the batch.
    import torch

    batch = torch.empty((2, 3, 8, 8), dtype=torch.uint8, device="meta")
    out = normalize(batch, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert out.device.type == "meta" and out.dtype == torch.float32 and out.shape == batch.shape
    pixels = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(pixels, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), torch.full((1, 3, 2, 2), 2.0))
