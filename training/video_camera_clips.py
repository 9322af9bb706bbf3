"""Camera clips of the test videos (training/video_synth.py): segments of real camera footage with one edit
made on every frame, consistently.

Footage: opencv-doc's ``vtest.avi`` (768x576, 10 fps, 79.5 s of pedestrians on a campus, fixed camera) and
``tree.avi`` (320x240, a hand in front of a tree, handheld; its 68 frames are spread over 29.6 s, so it is
held at :data:`CAMERA_FPS`). Edits (:data:`CAMERA_FAMILIES`): ``splice`` (a region of another photo,
colour-matched, moving along a straight or curved path), ``graphic`` (a logo, caption, sticker or watermark
with alpha, static or drifting), ``copy_move`` (a region of each frame copied at a fixed offset in the same
frame, so the copy moves with the scene) and ``inpaint`` (object removal: a fixed region inpainted in every
frame, Telea or Navier-Stokes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from deepfake_edge.training.edit_geometry import paste, soft_region
from deepfake_edge.training.edit_graphics import graphic_layer, layer_pixels
from deepfake_edge.training.edits import hole_mask, match_colour
from deepfake_edge.training.photos import Photo
from deepfake_edge.training.video_io import footage_frames
from deepfake_edge.training.video_photo_clips import photo_base

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
CAMERA_FOOTAGE = ("vtest.avi", "tree.avi")
CAMERA_FPS = 10  # vtest.avi's own rate; tree.avi's sparse frames are held at it
CAMERA_FAMILIES = ("splice", "graphic", "copy_move", "inpaint")

FrameEdit = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Footage:
    """A camera clip source: ``duration_s`` from its header; ``size`` (width, height)."""

    name: str
    path: Path
    duration_s: float
    size: tuple[int, int]


def camera_footage(folder: Path | str | None = OPENCV_DATA) -> list[Footage]:
    """The camera footage found in ``folder`` (opencv-doc's examples): empty when it is not installed."""
    import av

    found = []
    for name in CAMERA_FOOTAGE if folder is not None else ():
        path = Path(folder) / name
        if not path.is_file():
            continue
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.duration is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = container.duration / 1e6
            found.append(Footage(name, path, duration, (stream.width, stream.height)))
    return found


def footage_half(duration_s: float) -> float:
    """Where a camera file's validation half ends and its test half begins: the middle, on the clips' frame
    grid (validation clips end by it, test clips start at or after it, so no frame is in both)."""
    return math.floor(duration_s / 2 * CAMERA_FPS) / CAMERA_FPS


def camera_pair(footage: Footage, start_s: float, n_frames: int, fps: int, family: str, donor: Photo | None,
                rng: np.random.Generator) -> tuple[Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]], dict]:
    """A camera clip of ``n_frames`` from ``start_s``: the (unedited, edited, mask) frames, decoded and
    edited as they are iterated, and its record (family, source, segment, donor, edit, size) before frames,
    fps and edit boxes. ``donor`` is the photo a splice takes its region from."""
    width, height = footage.size
    frames = footage_frames(footage.path, start_s, n_frames, fps)
    first = next(frames)
    donor_pixels = photo_base(donor)[0] if donor is not None else None
    edit, detail = camera_edit(family, first, donor_pixels, n_frames, rng)
    record = {"family": family, "footage": "camera", "source": footage.name,
              "segment_s": [round(start_s, 3), round(start_s + n_frames / fps, 3)],
              "donor": donor.name if donor is not None else None, "edit": detail,
              "width": width, "height": height, "camera": None}

    def pairs():
        for t, frame in enumerate(_chain(first, frames)):
            fake, mask = edit(frame, t)
            yield frame, fake, mask

    return pairs(), record


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def camera_edit(family: str, first: np.ndarray, donor: np.ndarray | None, n_frames: int,
                rng: np.random.Generator) -> tuple[FrameEdit, dict]:
    """An edit applied to every frame of a camera clip: ``edit(frame, t) -> (edited, mask)``, where the
    mask (float32, frame size) is the weight of the new content in frame ``t``; all its choices are drawn
    from ``rng`` here, from the first frame."""
    height, width = first.shape[:2]
    if family == "splice":
        if donor is None:
            raise ValueError("splice needs a donor photo")
        h, w = _region(rng, height, width, (0.015, 0.05))
        alpha, detail = soft_region(h, w, rng, shapes=("rounded", "ellipse", "polygon", "blob"))
        scale = float(rng.uniform(0.6, 1.4))
        src_w, src_h = min(donor.shape[1], max(4, round(w * scale))), min(donor.shape[0], max(4, round(h * scale)))
        sx, sy = int(rng.integers(0, donor.shape[1] - src_w + 1)), int(rng.integers(0, donor.shape[0] - src_h + 1))
        patch = cv2.resize(np.ascontiguousarray(donor[sy:sy + src_h, sx:sx + src_w]), (w, h),
                           interpolation=cv2.INTER_AREA if src_w > w else cv2.INTER_CUBIC)
        positions, path = _path(rng, height, width, h, w, n_frames, 0.25 * width)
        if rng.random() < 0.7:  # colour-matched to where it starts
            x0, y0 = positions[0]
            strength = float(rng.uniform(0.5, 1.0))
            patch = match_colour(patch, alpha, first[y0:y0 + h, x0:x0 + w], np.ones((h, w), np.float32), strength)
            detail["colour_match"] = round(strength, 4)
        detail.update({"size": [w, h], "donor_box": [sx, sy, src_w, src_h], "path": path, "motion": "moving"})

        def splice(frame: np.ndarray, t: int):
            x0, y0 = positions[min(t, len(positions) - 1)]
            return paste(frame, patch, alpha, int(x0), int(y0))

        return splice, detail
    if family == "graphic":
        layer, detail = graphic_layer(rng, height, width)
        patch, alpha = layer_pixels(layer, height, width, 0.9)
        h, w = alpha.shape
        drifting = bool(rng.random() < 0.5)
        if drifting:
            positions, path = _path(rng, height, width, h, w, n_frames, 0.1 * width)
            start = positions[0]
            end = start + np.clip(positions[-1] - start, -0.2 * width, 0.2 * width)
            positions = np.round(start + np.linspace(0, 1, n_frames)[:, None] * (end - start)).astype(int)
            path = {"from": [int(v) for v in start], "to": [int(v) for v in end], "curved": False}
        else:
            x0 = int(rng.integers(0, max(1, width - w + 1)))
            y0 = int(rng.integers(0, max(1, height - h + 1)))
            positions = np.tile([x0, y0], (n_frames, 1))
            path = {"from": [x0, y0], "to": [x0, y0], "curved": False}
        detail.update({"size": [w, h], "motion": "drifting" if drifting else "static", "path": path, "edge": "alpha"})

        def graphic(frame: np.ndarray, t: int):
            x0, y0 = positions[min(t, len(positions) - 1)]
            return paste(frame, patch, alpha, int(x0), int(y0))

        return graphic, detail
    if family == "copy_move":
        h, w = _region(rng, height, width, (0.015, 0.05))
        alpha, detail = soft_region(h, w, rng)
        best = None
        for _ in range(20):
            sx, sy = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            dx, dy = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            distance = math.hypot(dx - sx, dy - sy)
            if best is None or distance > best[0]:
                best = (distance, sx, sy, dx, dy)
            if distance >= 1.2 * max(h, w):
                break
        _, sx, sy, dx, dy = best
        detail.update({"source_box": [sx, sy, w, h], "box": [dx, dy, w, h], "offset": [dx - sx, dy - sy],
                       "motion": "fixed offset"})

        def copy_move(frame: np.ndarray, t: int):
            return paste(frame, np.ascontiguousarray(frame[sy:sy + h, sx:sx + w]), alpha, dx, dy)

        return copy_move, detail
    if family == "inpaint":
        kind = str(rng.choice(("blob", "ellipse")))
        h, w = _region(rng, height, width, (0.004, 0.015))
        hole_box = hole_mask(h, w, kind, rng)
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        hole = np.zeros((height, width), np.uint8)
        hole[y0:y0 + h, x0:x0 + w] = hole_box
        radius = float(rng.uniform(3, 7))
        method = str(rng.choice(("telea", "ns")))
        flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        margin = max(12, int(0.3 * max(h, w)))
        ca, cb = (max(0, x0 - margin), max(0, y0 - margin)), (min(width, x0 + w + margin), min(height, y0 + h + margin))
        crop_hole = hole[ca[1]:cb[1], ca[0]:cb[0]]
        detail = {"shape": kind, "method": method, "radius": round(radius, 4), "box": [x0, y0, w, h],
                  "edge": "hard", "motion": "fixed region"}

        def inpaint(frame: np.ndarray, t: int):
            crop = np.ascontiguousarray(frame[ca[1]:cb[1], ca[0]:cb[0]])
            filled = cv2.inpaint(crop, crop_hole, radius, flag)
            return paste(frame, filled, crop_hole.astype(np.float32), ca[0], ca[1])

        return inpaint, detail
    raise ValueError(f"unknown camera-footage edit {family!r}; expected one of {CAMERA_FAMILIES}")


def _region(rng: np.random.Generator, height: int, width: int, area: tuple[float, float]) -> tuple[int, int]:
    """(h, w) of a region covering a log-uniform fraction ``area`` of the frame, at most half its sides."""
    fraction = math.exp(rng.uniform(math.log(area[0]), math.log(area[1])))
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
    w = int(round(min(0.5 * width, math.sqrt(fraction * height * width * aspect))))
    h = int(round(min(0.5 * height, fraction * height * width / max(w, 1))))
    return max(12, h), max(12, w)


def _path(rng: np.random.Generator, height: int, width: int, h: int, w: int, n_frames: int,
          min_travel: float) -> tuple[np.ndarray, dict]:
    """Top-left positions (n_frames, 2) of a (h, w) region moving inside the frame from one point to
    another, straight or along a quadratic curve, at constant speed in time."""
    span_x, span_y = max(0, width - w), max(0, height - h)
    best = None
    for _ in range(12):
        a = rng.uniform((0, 0), (span_x, span_y))
        b = rng.uniform((0, 0), (span_x, span_y))
        if best is None or np.hypot(*(b - a)) > np.hypot(*(best[1] - best[0])):
            best = (a, b)
        if np.hypot(*(b - a)) >= min_travel:
            break
    a, b = best
    curved = bool(rng.random() < 0.5)
    control = rng.uniform((0, 0), (span_x, span_y)) if curved else (a + b) / 2
    t = np.linspace(0.0, 1.0, n_frames)[:, None]
    points = (1 - t) ** 2 * a + 2 * (1 - t) * t * control + t ** 2 * b
    return np.round(points).astype(int), {"from": [int(v) for v in np.round(a)], "to": [int(v) for v in np.round(b)],
                                          "curved": curved}
