"""Photo clips of the test videos (training/video_synth.py): a photograph edited once, then the same camera
move (a pan with a slow zoom in or out, eased) rendered over the edited and the unedited photo, so the edit
moves with the scene; the path keeps the whole edit in view when it fits.

The frame is 1280x720 when the photo is large enough, else the largest 16:9 size of :data:`FRAME_LADDER`
that upscales it at most :data:`MAX_UPSCALE`, and never under :data:`MIN_FRAME`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import cv2
import numpy as np

from deepfake_edge.training.blending import BLEND_RATIOS, perturb, random_blend_mask
from deepfake_edge.training.edit_geometry import Box
from deepfake_edge.training.edits import make_edit
from deepfake_edge.training.photos import Photo

DEFAULT_MAX_FRAME = (1280, 720)
FRAME_LADDER = ((1280, 720), (960, 540), (854, 480), (640, 360), (426, 240), (320, 180), (256, 144))
MAX_UPSCALE = 1.5
MIN_FRAME = (640, 360)  # photo clips are never made smaller (a 512 px photo is upscaled a little more for it)
PHOTO_WORK_SIDE = 1600  # bigger photos are area-shrunk to this long side before editing
# The family tried instead of one that could not be made, as in edit_synth.
_FALLBACK = {"face_swap": "splice", "splice": "copy_move", "copy_move": "inpaint", "inpaint": "graphic",
             "graphic": "copy_move", "self_blend": "face_swap"}

_photo_cache: OrderedDict[str, tuple[np.ndarray, tuple[Box, ...]]] = OrderedDict()
_PHOTO_CACHE_SIZE = 24


def photo_base(photo: Photo) -> tuple[np.ndarray, tuple[Box, ...]]:
    """``photo`` as RGB (long side at most :data:`PHOTO_WORK_SIDE`, read-only) and its face boxes (x, y, w, h):
    the whole picture for a face crop, YuNet's for a people photo, none otherwise. Cached by name."""
    if photo.name in _photo_cache:
        _photo_cache.move_to_end(photo.name)
        return _photo_cache[photo.name]
    from deepfake_edge.faces import detect_faces

    pixels = np.asarray(photo.load().convert("RGB"), dtype=np.uint8)
    height, width = pixels.shape[:2]
    if max(height, width) > PHOTO_WORK_SIDE:
        factor = PHOTO_WORK_SIDE / max(height, width)
        pixels = cv2.resize(pixels, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA)
    pixels = np.ascontiguousarray(pixels)
    pixels.setflags(write=False)
    if photo.category == "faces":
        faces: tuple[Box, ...] = ((0, 0, pixels.shape[1], pixels.shape[0]),)
    elif photo.find_faces:
        faces = tuple(tuple(int(v) for v in box) for box in detect_faces(pixels))  # type: ignore[misc]
    else:
        faces = ()
    _photo_cache[photo.name] = (pixels, faces)
    while len(_photo_cache) > _PHOTO_CACHE_SIZE:
        _photo_cache.popitem(last=False)
    return pixels, faces


def photo_pair(photo: Photo, family: str, donor: Photo | None, face_donors: tuple[Photo, ...], n_frames: int,
               max_frame: tuple[int, int], rng: np.random.Generator
               ) -> tuple[Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]], dict]:
    """A photo clip of ``n_frames``: the (unedited, edited, mask) frames, rendered as they are iterated, and
    its record (family made, source, donor, edit, size, camera path) before frames, fps and edit boxes."""
    real, fake, mask, made, detail, used = photo_edit(family, photo, donor, face_donors, rng)
    frame, windows = camera_path(real.shape, mask, n_frames, max_frame, rng)
    record = {"family": made, "footage": "photo", "source": photo.name, "segment_s": None, "donor": used,
              "edit": detail, "width": frame[0], "height": frame[1],
              "camera": {"photo_size": [int(real.shape[1]), int(real.shape[0])],
                         "start": [round(float(v), 2) for v in windows[0]],
                         "end": [round(float(v), 2) for v in windows[-1]],
                         "zoom": round(float(windows[-1][2] / windows[0][2]), 4)}}

    def pairs():
        for window in windows:
            yield (render_window(real, window, frame), render_window(fake, window, frame),
                   render_window(mask, window, frame))

    return pairs(), record


def photo_edit(family: str, photo: Photo, donor: Photo | None, face_donors: tuple[Photo, ...],
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, dict, str | None]:
    """Edit ``photo`` once: (unedited, edited, mask, family made, detail, donor name). A family that cannot
    be made (face_swap with no face anywhere) falls back as in edit_synth, after two tries."""
    pixels, faces = photo_base(photo)
    pixels = np.array(pixels)
    attempts = []
    for attempt in range(6):
        try:
            used = None
            if family == "self_blend":
                image, mask, detail = self_blend(pixels, faces, rng)
            elif family == "face_swap":
                edit = None
                for candidate in face_donors:
                    donor_pixels, donor_faces = photo_base(candidate)
                    try:
                        edit = make_edit(family, pixels, np.array(donor_pixels), rng, list(faces), list(donor_faces))
                        used = candidate.name
                        break
                    except ValueError:
                        continue
                if edit is None:
                    edit = make_edit(family, pixels, pixels, rng, list(faces), [])  # two faces in the photo
                    used = photo.name
                image, mask, detail = edit.image, edit.mask, edit.detail
            else:
                donor_pixels = np.array(photo_base(donor)[0]) if family == "splice" and donor is not None else None
                used = donor.name if donor_pixels is not None else None
                edit = make_edit(family, pixels, donor_pixels, rng, list(faces), [])
                image, mask, detail = edit.image, edit.mask, edit.detail
            if not (mask > 0).any():
                raise ValueError(f"{family} edit changed no pixel")
            if attempts:
                detail = {**detail, "fallbacks": attempts}
            return pixels, image, mask, family, detail, used
        except ValueError as error:
            attempts.append(f"{family}: {error}")
            if attempt % 2 == 1:
                family = _FALLBACK[family]
    raise RuntimeError(f"no edit could be made on {photo.name}: {attempts}")


def self_blend(pixels: np.ndarray, faces: tuple[Box, ...] | list[Box], rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, dict]:
    """training/blending.py's self-blend made in place on a photo: a square around a face (or, without
    one, anywhere) blended with a perturbed copy of itself inside a soft deformed mask covering the face.
    Returns (image, mask, detail); the image equals ``pixels`` wherever the mask is 0."""
    height, width = pixels.shape[:2]
    short = min(height, width)
    if faces:
        ordered = sorted(faces, key=lambda f: f[2] * f[3], reverse=True)
        x, y, w, h = ordered[0] if rng.random() < 0.6 else ordered[int(rng.integers(len(ordered)))]
        side = int(round(min(short, max(48, max(w, h) * rng.uniform(1.4, 1.9)))))
        left = int(np.clip(round(x + w / 2 - side / 2), 0, width - side))
        top = int(np.clip(round(y + h / 2 - side / 2), 0, height - side))
        face = (x + w / 2 - left, y + h / 2 - top, float(max(w, h)))
    else:
        side = int(round(short * rng.uniform(0.2, 0.35)))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        face = None
    crop = np.ascontiguousarray(pixels[top:top + side, left:left + side])
    ratio = float(rng.choice(BLEND_RATIOS))
    weight = random_blend_mask(side, rng, face) * ratio
    source = perturb(crop, rng)
    blended = weight[..., None] * source.astype(np.float32) + (1.0 - weight[..., None]) * crop.astype(np.float32)
    image = pixels.copy()
    image[top:top + side, left:left + side] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.float32)
    mask[top:top + side, left:left + side] = weight
    return image, mask, {"crop": [left, top, side], "ratio": ratio, "on_face": face is not None,
                         "face_box": [int(v) for v in (x, y, w, h)] if face is not None else None}


def camera_path(shape: tuple[int, ...], mask: np.ndarray, n_frames: int, max_frame: tuple[int, int],
                rng: np.random.Generator) -> tuple[tuple[int, int], np.ndarray]:
    """A pan with a slow zoom over a photo of ``shape``: the frame size (width, height) and, per frame, the
    window (centre x, centre y, width) in photo pixels. The window stays inside the photo and, when it
    fits, contains the whole edit (``mask`` > 0) in every frame: both are linear constraints on
    (centre, width), so holding them at the two ends holds them all along the eased straight path."""
    height, width = shape[:2]
    fit = min(width, height * 16 / 9)
    w_a = fit * rng.uniform(0.86, 0.97)
    w_b = w_a * rng.uniform(0.8, 0.9)
    zoom_in = bool(rng.random() < 0.5)
    if not zoom_in:
        w_a, w_b = w_b, w_a
    ladder = [size for size in FRAME_LADDER if size[0] <= max_frame[0]]
    smallest = min((size for size in ladder if size[0] >= MIN_FRAME[0]), key=lambda size: size[0], default=ladder[0])
    frame = next((size for size in ladder if size[0] / min(w_a, w_b) <= MAX_UPSCALE), smallest)
    if frame[0] < smallest[0]:
        frame = smallest
    aspect = frame[1] / frame[0]
    x, y, bw, bh = cv2.boundingRect((mask > 0).astype(np.uint8))

    def centre_range(window: float, extent: float, low: float, high: float) -> tuple[float, float]:
        a, b = max(window / 2, high - window / 2), min(extent - window / 2, low + window / 2)
        if a > b:  # the edit does not fit in the window: keep its centre in view
            c = float(np.clip((low + high) / 2, window / 2, extent - window / 2))
            return c, c
        return a, b

    ends = []
    direction = 1 if rng.random() < 0.5 else -1
    for end, window in enumerate((w_a, w_b)):
        xa, xb = centre_range(window, width, x, x + bw)
        ya, yb = centre_range(window * aspect, height, y, y + bh)
        along = rng.uniform(0.0, 0.35)
        if (end == 0) == (direction > 0):
            cx = xa + along * (xb - xa)
        else:
            cx = xb - along * (xb - xa)
        ends.append((cx, rng.uniform(ya, yb), window))
    start, stop = np.array(ends[0]), np.array(ends[1])
    t = np.linspace(0.0, 1.0, n_frames)
    eased = (3 * t ** 2 - 2 * t ** 3)[:, None]
    return frame, start + eased * (stop - start)


def render_window(image: np.ndarray, window: np.ndarray, frame: tuple[int, int], interpolation: int = cv2.INTER_LINEAR
                  ) -> np.ndarray:
    """The view of ``window`` (centre x, centre y, width) of ``image`` at ``frame`` (width, height)."""
    cx, cy, w = (float(v) for v in window)
    k = frame[0] / w
    matrix = np.array([[k, 0.0, frame[0] / 2 - k * cx], [0.0, k, frame[1] / 2 - k * cy]], np.float64)
    return cv2.warpAffine(image, matrix, frame, flags=interpolation, borderMode=cv2.BORDER_REFLECT)
