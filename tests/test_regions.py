"""Whole-image analysis (deepfake_edge/regions.py): which regions are cut, that they cover the frame, the caps,
and the stitched heatmap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data

from deepfake_edge.preprocessing import Preprocessor
from deepfake_edge.regions import (
    MAX_ANALYSED_SIDE,
    MAX_FACES,
    analyse,
    cut_regions,
    face_crop_box,
    plan_regions,
    stitch_heatmap,
    tile_starts,
)

PRE = Preprocessor(224, 256)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 4000), tile=st.integers(16, 400))
def test_tiles_cover_every_pixel_end_to_end_with_overlap(length, tile):
    starts = tile_starts(length, tile)
    if length < tile:
        assert starts == []
        return
    assert starts[0] == 0 and starts[-1] == length - tile, "the first and last tiles touch the borders"
    gaps = np.diff(starts)
    assert (gaps <= tile - min(32, tile // 2)).all(), "neighbours overlap by >= 32 px (or half a tile)"
    assert len(starts) == len(set(starts))


def test_a_1024x768_photo_gets_native_tiles_a_face_and_the_global_view():
    plan = plan_regions((1024, 768), PRE, faces=[(400, 100, 120, 150)])
    kinds = [region.kind for region in plan.regions]
    assert kinds[0] == "face" and kinds[-1] == "global" and plan.notes == ()
    tiles = [region.box for region in plan.regions if region.kind == "tile"]
    assert all(x1 - x0 == 224 and y1 - y0 == 224 for x0, y0, x1, y1 in tiles), "tiles at native resolution"
    covered = np.zeros((768, 1024), dtype=bool)
    for x0, y0, x1, y1 in tiles:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    x0, y0, x1, y1 = plan.regions[0].box
    assert x1 - x0 == y1 - y0 == round(150 * 1.3), "faces are cut at 1.3x their longer side"
    assert x0 <= 400 and y0 <= 100 and x1 >= 520 and y1 >= 250


def test_an_enormous_photo_is_analysed_at_the_capped_size_and_says_so():
    plan = plan_regions((6000, 4000), PRE, faces=[])
    assert max(plan.analysed_size) == MAX_ANALYSED_SIDE
    assert any("analysed at" in note for note in plan.notes)
    tiles = [region.box for region in plan.regions if region.kind == "tile"]
    assert max(box[2] for box in tiles) == 6000 and max(box[3] for box in tiles) == 4000, "boxes in original pixels"


def test_fifty_faces_are_capped_to_the_largest_and_the_result_says_so():
    faces = [(10 * i, 10, 20 + i, 20 + i) for i in range(50)]
    plan = plan_regions((1200, 900), PRE, faces=faces)
    analysed = [region for region in plan.regions if region.kind == "face"]
    assert len(analysed) == MAX_FACES
    assert any(f"50 faces found; the {MAX_FACES} largest analysed" in note for note in plan.notes)
    sides = sorted(x1 - x0 for x0, _, x1, _ in (region.box for region in analysed))
    assert sides[0] >= round((20 + 50 - MAX_FACES) * 1.3) - 1, "the largest faces are the ones kept"


def test_an_image_smaller_than_a_tile_is_scored_from_its_global_view():
    image = Image.new("RGB", (150, 100), (120, 80, 40))
    plan, rows = analyse(image, PRE)
    assert [region.kind for region in plan.regions] == ["global"]
    assert rows.shape == (1, 3, 224, 224) and any("smaller than" in note for note in plan.notes)


def test_a_face_box_near_the_border_is_moved_inside_not_cut():
    assert face_crop_box((0, 0, 100, 100), (500, 400)) == (0, 0, 130, 130)
    assert face_crop_box((450, 350, 50, 50), (500, 400)) == (435, 335, 500, 400)
    assert face_crop_box((0, 0, 400, 400), (300, 200)) == (100, 0, 300, 200), "cut only when the image is smaller"


def test_rows_are_the_exact_pixels_of_each_region():
    photo = Image.fromarray(data.astronaut())  # 512x512 with one face
    plan, rows = analyse(photo, PRE)
    assert [region.kind for region in plan.regions].count("face") == 1
    pixels = np.asarray(photo)
    for region, row in zip(plan.regions, rows):
        if region.kind == "tile":
            x0, y0, x1, y1 = region.box
            np.testing.assert_array_equal(row.transpose(1, 2, 0), pixels[y0:y1, x0:x1])
    np.testing.assert_array_equal(rows[-1], PRE(photo), "the global view is the fast mode's input")
    assert cut_regions(photo, plan, PRE).shape == rows.shape


def test_the_stitched_heatmap_is_hottest_in_the_deciding_region_and_covers_the_image():
    plan = plan_regions((1000, 500), PRE, faces=[])
    heatmaps = np.ones((len(plan.regions), 7, 7), dtype=np.float32)
    probabilities = np.full(len(plan.regions), 0.1, dtype=np.float32)
    decider = next(i for i, region in enumerate(plan.regions) if region.kind == "tile" and region.box[0] > 600)
    probabilities[decider] = 0.9
    heat = stitch_heatmap(plan, probabilities, heatmaps)
    assert heat.shape == (256, 512) and heat.min() == pytest.approx(0.1) and heat.max() == pytest.approx(0.9)
    x0, y0, x1, y1 = (round(v * 512 / 1000) for v in plan.regions[decider].box)
    assert heat[(y0 + y1) // 2, (x0 + x1) // 2] == pytest.approx(0.9)


def test_faces_too_small_for_a_face_crop_are_left_to_the_tiles():
    from deepfake_edge.regions import MIN_FACE_CROP_SIDE

    tiny = (100, 100, 16, 16)  # a pedestrian's face: a 21-px crop, upscaled ~10x to 224 px
    plan = plan_regions((1024, 768), PRE, faces=[tiny, (400, 100, 120, 150)])
    faces = [region for region in plan.regions if region.kind == "face"]
    assert len(faces) == 1 and faces[0].box[2] - faces[0].box[0] >= MIN_FACE_CROP_SIDE
    assert any(f"1 face(s) under {MIN_FACE_CROP_SIDE} px left to the tiles" in note for note in plan.notes)
    tiles = [region.box for region in plan.regions if region.kind == "tile"]
    assert any(x0 <= 100 and y0 <= 100 and x1 >= 116 and y1 >= 116 for x0, y0, x1, y1 in tiles)
