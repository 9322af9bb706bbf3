"""``overlay_heatmap``: a CAM drawn over the original image, in the right place (a crop box or all of it)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepfake_edge.heatmap import OUTSIDE_BRIGHTNESS, colour_lut, overlay_heatmap
from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import Preprocessor

CARD = ModelCard(arch="small_cnn", input_size=64, resize_size=80)


def grey(size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, (128, 128, 128))


def crop_box(size: tuple[int, int]) -> tuple[float, float, float, float]:
    return Preprocessor.from_card(CARD).crop_box(size)


@pytest.mark.parametrize("size", [(400, 200), (200, 400), (64, 64)])
def test_overlay_has_the_original_size_and_dims_only_outside_the_crop(size):
    overlay = np.asarray(overlay_heatmap(grey(size), np.zeros((4, 4)), crop_box(size), alpha=0.0))
    left, top, right, bottom = (round(v) for v in Preprocessor.from_card(CARD).crop_box(size))
    assert overlay.shape == (size[1], size[0], 3)
    assert (overlay[top:bottom, left:right] == 128).all(), "alpha 0 leaves the crop region untouched"
    outside = np.ones(overlay.shape[:2], dtype=bool)
    outside[top:bottom, left:right] = False
    if outside.any():
        assert np.allclose(overlay[outside], 128 * OUTSIDE_BRIGHTNESS, atol=1)


def test_hot_corner_of_the_heatmap_lands_on_the_crop_corner():
    heatmap = np.zeros((4, 4), dtype=np.float32)
    heatmap[0, 0] = 1.0  # the crop's top-left cell is where the model looked
    size = (400, 200)
    overlay = np.asarray(overlay_heatmap(grey(size), heatmap, crop_box(size), alpha=1.0), dtype=np.int16)
    left, top, right, bottom = (round(v) for v in Preprocessor.from_card(CARD).crop_box(size))
    hot, cold = colour_lut()[255].astype(np.int16), colour_lut()[0].astype(np.int16)
    assert np.abs(overlay[top + 2, left + 2] - hot).max() <= 2
    assert np.abs(overlay[bottom - 3, right - 3] - cold).max() <= 2


def test_any_mode_and_paths_are_accepted(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (90, 60), 40).save(path)
    assert overlay_heatmap(path, np.ones((3, 3))).size == (90, 60)
    assert overlay_heatmap(Image.new("RGBA", (90, 60)), np.ones((3, 3))).mode == "RGB"
    with pytest.raises(ValueError):
        overlay_heatmap(path, np.ones(9))


def test_a_whole_image_heatmap_covers_everything_and_follows_a_resized_copy():
    heatmap = np.zeros((4, 4), dtype=np.float32)
    heatmap[3, 3] = 1.0  # the bottom-right cell of the whole image
    overlay = np.asarray(overlay_heatmap(grey((400, 200)), heatmap, alpha=1.0), dtype=np.int16)
    hot = colour_lut()[255].astype(np.int16)
    assert np.abs(overlay[198, 398] - hot).max() <= 2
    assert not (overlay == np.round(128 * OUTSIDE_BRIGHTNESS)).all(axis=2).any(), "nothing is dimmed"
    # A box measured on the 800x400 original lands on the same place of a 400x200 copy.
    halved = np.asarray(overlay_heatmap(grey((400, 200)), np.ones((2, 2)), (400, 200, 800, 400), alpha=1.0,
                                        box_of_size=(800, 400)), dtype=np.int16)
    assert np.abs(halved[150, 300] - hot).max() <= 2 and np.allclose(halved[50, 50], 128 * OUTSIDE_BRIGHTNESS, atol=1)
