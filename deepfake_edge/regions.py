"""Whole-image analysis: which regions of a photo the detector scores, and how they become one verdict.

An edit can sit anywhere in a full-size photo, and shrinking the photo to one 224-px view erases its
seams. So a photo is scored as a batch of regions, each the model's input size:

* ``face``: every detected face (deepfake_edge/faces.py), cropped at 1.3x its box as in FaceForensics++
  and DeepfakeBench, at most :data:`MAX_FACES` of them (the largest);
* ``tile``: overlapping tiles at native resolution covering the whole frame, borders included; photos
  whose longer side exceeds :data:`MAX_ANALYSED_SIDE` are first shrunk to it (and the result says so);
* ``global``: the single resized centre view of ``--mode fast`` (the preprocessing's own crop).

The image's fake probability is the highest region probability; the threshold it is compared with
(``ModelCard.image_threshold``) is calibrated on whole validation photos, so the many chances that
"max over regions" takes are paid for in that threshold, not hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deepfake_edge.faces import DETECT_MAX_SIDE, FaceBox, detect_faces
from deepfake_edge.preprocessing import INTERPOLATIONS, Preprocessor

MODES = ("whole", "fast")
DEFAULT_MODE = "whole"
# The kinds a Detection's regions have: the three the model scores, and the two areas of a copy-move finding
# (deepfake_edge/copy_move.py), which no model row scores.
REGION_KINDS = ("face", "tile", "global", "copy_move")
FACE_CROP_SCALE = 1.3
MAX_FACES = 16
# A face crop smaller than this is upscaled more than 4.6x to the model's 224 px: a blur the model reads as
# blending. Pedestrians' 14-16 px faces in OpenCV's unedited vtest.avi scored up to 0.9997 as face crops
# (docs/video.md); such faces are left to the tiles, which cover them at native resolution.
MIN_FACE_CROP_SIDE = 48
MAX_ANALYSED_SIDE = 1280
TILE_MIN_OVERLAP = 32  # px between neighbouring tiles, so an edit on a tile seam is whole in one of them
HEATMAP_MAX_SIDE = 512  # the stitched whole-image heatmap's longer side
# Share of unedited validation photos that the calibrated image threshold may call Fake (training/whole_image.py).
DEFAULT_MAX_FALSE_ALARM = 0.05

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the original image's pixels


@dataclass(frozen=True)
class Region:
    """One part of an image the model scores: ``kind`` is "face", "tile" or "global", ``box`` in original pixels."""

    kind: str
    box: Box


@dataclass(frozen=True)
class RegionPlan:
    """The regions of one image and what was capped. ``analysed_size`` is the (width, height) tiles were
    cut from (the image's own size unless it exceeded :data:`MAX_ANALYSED_SIDE`)."""

    image_size: tuple[int, int]
    analysed_size: tuple[int, int]
    regions: tuple[Region, ...]
    notes: tuple[str, ...] = ()

    @property
    def scale(self) -> tuple[float, float]:
        """Analysed pixels per original pixel along x and y (1.0 unless the image was shrunk)."""
        return self.analysed_size[0] / self.image_size[0], self.analysed_size[1] / self.image_size[1]


def tile_starts(length: int, tile: int, min_overlap: int = TILE_MIN_OVERLAP) -> list[int]:
    """Offsets of tiles of side ``tile`` covering ``[0, length)`` end to end, evenly spaced, neighbours
    overlapping by at least ``min_overlap`` (at most half a tile); empty when ``length < tile``."""
    if length < tile:
        return []
    stride = tile - min(min_overlap, tile // 2)
    count = 1 if length == tile else math.ceil((length - tile) / stride) + 1
    if count == 1:
        return [0]
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def face_crop_box(face: FaceBox, image_size: tuple[int, int], scale: float = FACE_CROP_SCALE) -> Box:
    """The square ``scale`` times the face box's longer side around its centre, moved (not cut) to fit
    inside the image where it can; cut to the image only when the image is smaller than the square."""
    x, y, w, h = face
    width, height = image_size
    side = min(round(max(w, h) * scale), width, height)
    left = min(max(0, round(x + w / 2 - side / 2)), width - side)
    top = min(max(0, round(y + h / 2 - side / 2)), height - side)
    return (left, top, left + side, top + side)


def plan_regions(image_size: tuple[int, int], preprocessor: Preprocessor, faces: list[FaceBox],
                 max_side: int = MAX_ANALYSED_SIDE, max_faces: int = MAX_FACES) -> RegionPlan:
    """The regions to score for an image of ``image_size`` (width, height) with ``faces`` found in it."""
    width, height = image_size
    notes = []
    scale = min(1.0, max_side / max(width, height))
    analysed = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1.0:
        notes.append(f"image {width}x{height} analysed at {analysed[0]}x{analysed[1]} "
                     f"(longer side capped at {max_side} px)")
    if len(faces) > max_faces:
        notes.append(f"{len(faces)} faces found; the {max_faces} largest analysed")
        faces = sorted(faces, key=lambda f: f[2] * f[3], reverse=True)[:max_faces]
    crops = [face_crop_box(face, image_size) for face in faces]
    small = sum(x1 - x0 < MIN_FACE_CROP_SIDE for x0, _, x1, _ in crops)
    if small:
        notes.append(f"{small} face(s) under {MIN_FACE_CROP_SIDE} px left to the tiles")
    regions = [Region("face", crop) for crop in crops if crop[2] - crop[0] >= MIN_FACE_CROP_SIDE]
    size = preprocessor.input_size
    xs, ys = tile_starts(analysed[0], size), tile_starts(analysed[1], size)
    if not xs or not ys:
        notes.append(f"image smaller than a {size}-px tile: scored from its faces and the global view")
    sx, sy = analysed[0] / width, analysed[1] / height
    for top in ys:
        for left in xs:
            regions.append(Region("tile", (round(left / sx), round(top / sy), min(width, round((left + size) / sx)),
                                           min(height, round((top + size) / sy)))))
    left, top, right, bottom = preprocessor.crop_box(image_size)
    regions.append(Region("global", (round(left), round(top), round(right), round(bottom))))
    return RegionPlan(image_size, analysed, tuple(regions), tuple(notes))


def analyse(image: Image.Image, preprocessor: Preprocessor, max_side: int = MAX_ANALYSED_SIDE,
            max_faces: int = MAX_FACES) -> tuple[RegionPlan, np.ndarray]:
    """Plan the regions of an upright RGB ``image`` (faces detected here) and cut them: returns the plan
    and the UINT8 (N, 3, S, S) batch, one row per region in plan order."""
    # Faces are searched on a copy no larger than the detector's own working size, made by Pillow before any
    # array exists: an array of the full image is 3 bytes a pixel (108 MB for 6000x6000) per request.
    scale = min(1.0, DETECT_MAX_SIDE / max(image.size))
    small = image if scale == 1.0 else image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR,
        reducing_gap=2.0)
    faces = [tuple(round(v / scale) for v in box) for box in detect_faces(np.asarray(small))]
    plan = plan_regions(image.size, preprocessor, faces, max_side=max_side, max_faces=max_faces)
    return plan, cut_regions(image, plan, preprocessor)


def cut_regions(image: Image.Image, plan: RegionPlan, preprocessor: Preprocessor) -> np.ndarray:
    """The UINT8 (N, 3, S, S) model inputs of ``plan``'s regions of ``image`` (RGB, ``plan.image_size``)."""
    size = preprocessor.input_size
    resample = INTERPOLATIONS[preprocessor.interpolation]
    # Tiles are cut from one copy at the analysed size, so each is exact native (or capped) pixels.
    sx, sy = plan.scale
    analysed = image if plan.analysed_size == image.size else image.resize(plan.analysed_size, resample,
                                                                            reducing_gap=3.0)
    crops = []
    for region in plan.regions:
        if region.kind == "tile":
            left, top = round(region.box[0] * sx), round(region.box[1] * sy)
            crop = analysed.crop((left, top, left + size, top + size))
        elif region.kind == "face":
            crop = image.crop(region.box).resize((size, size), resample)
        else:
            crop = preprocessor.resize_and_crop(image)
        crops.append(np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(crops))


def strongest(probabilities: np.ndarray) -> int:
    """Index of the region that decides the image: the one with the highest fake probability."""
    return int(np.argmax(probabilities))


def stitch_heatmap(plan: RegionPlan, probabilities: np.ndarray, heatmaps: np.ndarray,
                   max_side: int = HEATMAP_MAX_SIDE) -> np.ndarray:
    """One float32 heatmap in [0, 1] covering the whole image (longer side at most ``max_side``).

    Each region's CAM (peak 1 within the region) is weighted by that region's fake probability and
    pasted at its box; overlapping regions keep the highest value. Where the model saw nothing
    suspicious the map stays low, and the region that decided the verdict is the brightest.
    """
    width, height = plan.image_size
    scale = min(1.0, max_side / max(width, height))
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = np.zeros((out_h, out_w), dtype=np.float32)
    for region, probability, heat in zip(plan.regions, probabilities, heatmaps):
        x0, y0, x1, y1 = (round(v * scale) for v in region.box)
        x1, y1 = min(max(x1, x0 + 1), out_w), min(max(y1, y0 + 1), out_h)
        if x0 >= out_w or y0 >= out_h:
            continue
        resized = np.asarray(Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F")
                             .resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
        np.maximum(canvas[y0:y1, x0:x1], resized * float(probability), out=canvas[y0:y1, x0:x1])
    return np.clip(canvas, 0.0, 1.0)
