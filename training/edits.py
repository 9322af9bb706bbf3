"""Full-size photo edits of the kinds people make first: one photo (and a donor photo) in, an edit out.

Families (``EDIT_FAMILIES``):

* ``splice``: a region of the donor photo pasted anywhere in the photo, borders included; rectangles,
  rounded boxes, ellipses, random polygons and elastic blobs; hard (anti-aliased) or feathered edges;
  colour-matched to the destination in Lab, Poisson-blended (``cv2.seamlessClone``) or left as it is.
* ``copy_move``: a region of the photo itself copied elsewhere, sometimes rescaled and rotated.
* ``inpaint``: object removal: a blob, ellipse or brush stroke filled by ``cv2.inpaint`` (Telea or
  Navier-Stokes) or by a smooth multi-scale fill with matched grain, on a crop around the hole and at
  reduced resolution for big holes.
* ``graphic``: logos, captions, stickers and semi-transparent watermarks drawn with Pillow and
  alpha-composited, anywhere including the corners.
* ``face_swap``: a donor face under a soft elliptical mask, colour-matched in Lab and aligned on a face
  of the photo by box centre and size; without a face in the photo, a face pasted somewhere plausible.

Every function is pure numpy/OpenCV/Pillow and draws all its randomness from the ``rng`` it is given.
The returned mask is the per-pixel weight of the pasted/changed content: the edited image equals the
original exactly wherever the mask is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Box = tuple[int, int, int, int]  # x, y, width, height

EDIT_FAMILIES = ("splice", "copy_move", "inpaint", "graphic", "face_swap")
SHAPES = ("rectangle", "rounded", "ellipse", "polygon", "blob")
GRAPHIC_KINDS = ("caption", "logo", "sticker", "watermark")
_MIN_ALPHA = 1.0 / 255.0  # weights below one 8-bit level are cut: "inside the mask" has a crisp meaning
_POISSON_MAX_PIXELS = 350_000  # seamlessClone solves on the whole patch: bigger ones are colour-matched
_INPAINT_MAX_HOLE = 12_000  # holes with more pixels are inpainted at reduced resolution


@dataclass(frozen=True)
class Edit:
    """An edited photo: ``image`` uint8 (H, W, 3); ``mask`` float32 (H, W) in [0, 1], the weight of the
    new content (0 = the original pixel, unchanged); ``family`` one of EDIT_FAMILIES; ``detail`` a
    json-serialisable description of how it was made."""

    image: np.ndarray
    mask: np.ndarray
    family: str
    detail: dict = field(default_factory=dict)


def make_edit(family: str, photo: np.ndarray, donor: np.ndarray | None, rng: np.random.Generator,
              faces: list[Box] | tuple[Box, ...] = (), donor_faces: list[Box] | tuple[Box, ...] = ()) -> Edit:
    """Edit ``photo`` (uint8 HxWx3 RGB at its upload size) with one edit of ``family``.

    ``donor`` is a second photo (uint8 RGB; splice and face_swap need it), ``faces`` and ``donor_faces``
    are (x, y, w, h) face boxes in each. Raises ValueError when the family cannot be made (face_swap with
    no face anywhere, or no donor): the caller picks another family.
    """
    if family not in EDIT_FAMILIES:
        raise ValueError(f"unknown edit family {family!r}; expected one of {EDIT_FAMILIES}")
    photo = np.ascontiguousarray(photo, dtype=np.uint8)
    if photo.ndim != 3 or photo.shape[2] != 3 or min(photo.shape[:2]) < 16:
        raise ValueError(f"photo must be uint8 (H, W, 3) with sides of at least 16 px, got {photo.shape}")
    if family in ("splice", "face_swap") and donor is None:
        raise ValueError(f"{family} needs a donor photo")
    if family == "splice":
        image, mask, detail = _splice(photo, np.ascontiguousarray(donor, dtype=np.uint8), rng)
    elif family == "copy_move":
        image, mask, detail = _copy_move(photo, rng)
    elif family == "inpaint":
        image, mask, detail = _inpaint(photo, rng)
    elif family == "graphic":
        image, mask, detail = _graphic(photo, rng)
    else:
        image, mask, detail = _face_swap(photo, np.ascontiguousarray(donor, dtype=np.uint8), rng,
                                         list(faces), list(donor_faces))
    if not mask.any():
        raise ValueError(f"{family} edit changed no pixel")  # e.g. a paste identical to what it covered
    return Edit(image, mask.astype(np.float32), family, _jsonable(detail))


# --------------------------------------------------------------------------------------------- helpers


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    return value


def paste(base: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x0: int, y0: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Alpha-composite ``patch`` (h, w, 3) with weights ``alpha`` (h, w) onto ``base`` at (x0, y0), which
    may hang over the borders (the outside part is dropped). Returns (image, mask): the mask is the
    weight actually used, so the image equals ``base`` exactly where it is 0."""
    height, width = base.shape[:2]
    h, w = alpha.shape
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(width, x0 + w), min(height, y0 + h)
    mask = np.zeros((height, width), np.float32)
    out = base.copy()
    if xa >= xb or ya >= yb:
        return out, mask
    a = alpha[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float32)
    a = np.where(a < _MIN_ALPHA, 0.0, np.minimum(a, 1.0)).astype(np.float32)
    p = patch[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float32)
    region = out[ya:yb, xa:xb].astype(np.float32)
    out[ya:yb, xa:xb] = np.clip(np.round(region + a[..., None] * (p - region)), 0, 255).astype(np.uint8)
    mask[ya:yb, xa:xb] = a
    return out, mask


def _region_size(rng: np.random.Generator, height: int, width: int, area: tuple[float, float],
                 aspect: tuple[float, float] = (0.5, 2.0)) -> tuple[int, int]:
    """(h, w) of a region covering a log-uniform fraction ``area`` of the image, clipped to fit."""
    fraction = math.exp(rng.uniform(math.log(area[0]), math.log(area[1])))
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))  # w / h
    pixels = fraction * height * width
    w = int(round(min(width * 0.95, math.sqrt(pixels * ratio))))
    h = int(round(min(height * 0.95, pixels / max(w, 1))))
    return max(8, h), max(8, w)


def _place(rng: np.random.Generator, height: int, width: int, h: int, w: int,
           overhang: float = 0.3, border_chance: float = 0.3) -> tuple[int, int]:
    """Top-left of a (h, w) region: anywhere, hanging over a border by up to ``overhang`` of its size,
    and flush with a border or corner ``border_chance`` of the time."""
    x0 = int(rng.integers(int(-overhang * w), max(int(-overhang * w), width - int((1 - overhang) * w)) + 1))
    y0 = int(rng.integers(int(-overhang * h), max(int(-overhang * h), height - int((1 - overhang) * h)) + 1))
    if rng.random() < border_chance:
        side = int(rng.integers(6))  # left, right, top, bottom, or a corner (both)
        if side in (0, 4):
            x0 = 0 if rng.random() < 0.6 else -int(rng.uniform(0, overhang) * w)
        if side in (1, 5):
            x0 = width - w if rng.random() < 0.6 else width - w + int(rng.uniform(0, overhang) * w)
        if side in (2, 4):
            y0 = 0 if rng.random() < 0.6 else -int(rng.uniform(0, overhang) * h)
        if side in (3, 5):
            y0 = height - h if rng.random() < 0.6 else height - h + int(rng.uniform(0, overhang) * h)
    return x0, y0


def _shape_mask(h: int, w: int, shape: str, rng: np.random.Generator, inset: int = 0) -> np.ndarray:
    """A float32 (h, w) mask of ``shape`` filling the box less ``inset`` px, anti-aliased edges."""
    canvas = np.zeros((h, w), np.uint8)
    inner_w, inner_h = max(2.0, w - 2 * inset - 1), max(2.0, h - 2 * inset - 1)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    shift = 4  # sub-pixel precision for cv2 drawing
    scale = 1 << shift
    if shape == "rectangle":
        canvas[inset:h - inset, inset:w - inset] = 255
    elif shape == "rounded":
        radius = max(1, int(min(inner_w, inner_h) * rng.uniform(0.05, 0.3)))
        a = (inset + radius, inset + radius)
        b = (w - 1 - inset - radius, h - 1 - inset - radius)
        cv2.rectangle(canvas, a, b, 255, -1)
        for corner in (a, b, (a[0], b[1]), (b[0], a[1])):
            cv2.circle(canvas, corner, radius, 255, -1, cv2.LINE_AA)
        cv2.rectangle(canvas, (a[0], inset), (b[0], h - 1 - inset), 255, -1)
        cv2.rectangle(canvas, (inset, a[1]), (w - 1 - inset, b[1]), 255, -1)
    elif shape == "ellipse":
        cv2.ellipse(canvas, (int(cx * scale), int(cy * scale)), (int(inner_w / 2 * scale), int(inner_h / 2 * scale)),
                    0, 0, 360, 255, -1, cv2.LINE_AA, shift)
    else:
        n = int(rng.integers(5, 11)) if shape == "polygon" else 48
        angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if shape == "polygon" else np.linspace(0, 2 * np.pi, n,
                                                                                               endpoint=False)
        if shape == "polygon":
            radii = rng.uniform(0.55, 1.0, n)
        else:  # elastic blob: a few low-frequency harmonics on a circle
            radii = np.ones(n)
            for k in range(2, 6):
                radii += rng.uniform(0, 0.35 / k * 2) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
        radii = radii / radii.max()
        xs = cx + np.cos(angles) * radii * inner_w / 2
        ys = cy + np.sin(angles) * radii * inner_h / 2
        points = np.round(np.stack([xs, ys], axis=1) * scale).astype(np.int32)
        cv2.fillPoly(canvas, [points], 255, cv2.LINE_AA, shift)
    return canvas.astype(np.float32) / 255.0


def soft_region(h: int, w: int, rng: np.random.Generator, shapes=SHAPES, feather_chance: float = 0.5
                ) -> tuple[np.ndarray, dict]:
    """A region mask for a (h, w) box: a random shape, hard or feathered (the feather stays inside)."""
    shape = str(rng.choice(shapes))
    feathered = bool(rng.random() < feather_chance)
    sigma = float(rng.uniform(1.0, max(1.5, 0.04 * min(h, w)))) if feathered else 0.0
    inset = int(math.ceil(2.5 * sigma))
    if feathered and min(h, w) - 2 * inset < 8:
        sigma, inset = 0.0, 0
        feathered = False
    mask = _shape_mask(h, w, shape, rng, inset)
    if feathered:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        mask = np.clip(mask / max(float(mask.max()), 1e-6), 0, 1)
    mask[mask < _MIN_ALPHA] = 0.0
    return mask.astype(np.float32), {"shape": shape, "edge": "feathered" if feathered else "hard",
                                     "feather_sigma": sigma}


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def match_colour(patch: np.ndarray, patch_weight: np.ndarray, target: np.ndarray, target_weight: np.ndarray,
                 strength: float = 1.0) -> np.ndarray:
    """``patch`` with its Lab mean and standard deviation (weighted) moved towards ``target``'s."""
    source_lab, target_lab = _lab(patch), _lab(target)

    def stats(lab, weight):
        weight = weight.astype(np.float64)[..., None]
        total = max(float(weight.sum()), 1e-6)
        mean = (lab * weight).sum(axis=(0, 1)) / total
        std = np.sqrt(((lab - mean) ** 2 * weight).sum(axis=(0, 1)) / total)
        return mean, std

    source_mean, source_std = stats(source_lab, patch_weight)
    target_mean, target_std = stats(target_lab, target_weight)
    ratio = np.clip(target_std / np.maximum(source_std, (1.0, 0.5, 0.5)), 0.4, 2.5)
    matched = (source_lab - source_mean) * ratio + target_mean
    out = source_lab + strength * (matched - source_lab)
    out[..., 0] = np.clip(out[..., 0], 0, 100)
    rgb = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def _under(base: np.ndarray, x0: int, y0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The (h, w) part of ``base`` at (x0, y0), edge-replicated where it hangs out, and a 0/1 inside map."""
    height, width = base.shape[:2]
    ys = np.clip(np.arange(y0, y0 + h), 0, height - 1)
    xs = np.clip(np.arange(x0, x0 + w), 0, width - 1)
    inside = ((np.arange(y0, y0 + h) >= 0) & (np.arange(y0, y0 + h) < height))[:, None] & \
             ((np.arange(x0, x0 + w) >= 0) & (np.arange(x0, x0 + w) < width))[None, :]
    return base[ys][:, xs], inside.astype(np.float32)


def _blend_in(photo: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x0: int, y0: int,
              rng: np.random.Generator, poisson_chance: float, match_chance: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Paste ``patch`` under ``alpha`` at (x0, y0): Poisson-blended, colour-matched in Lab, or as it is."""
    height, width = photo.shape[:2]
    h, w = alpha.shape
    inside = x0 >= 2 and y0 >= 2 and x0 + w <= width - 2 and y0 + h <= height - 2
    hard = alpha >= 0.5
    if (inside and rng.random() < poisson_chance and h * w <= _POISSON_MAX_PIXELS and hard.sum() > 64):
        mode = cv2.MIXED_CLONE if rng.random() < 0.2 else cv2.NORMAL_CLONE
        mask8 = hard.astype(np.uint8) * 255
        mask8[0, :] = mask8[-1, :] = mask8[:, 0] = mask8[:, -1] = 0
        bx, by, bw, bh = cv2.boundingRect(mask8)
        centre = (x0 + bx + bw // 2, y0 + by + bh // 2)
        try:
            cloned = cv2.seamlessClone(np.ascontiguousarray(patch), photo, mask8, centre, mode)
        except cv2.error:
            cloned = None
        if cloned is not None:
            region = (mask8 > 0).astype(np.float32)
            # The clone's own output is taken inside the hard mask only: outside it the photo is untouched.
            patch_out = cloned[y0:y0 + h, x0:x0 + w]
            image, mask = paste(photo, patch_out, region, x0, y0)
            return image, mask, {"blend": "poisson_mixed" if mode == cv2.MIXED_CLONE else "poisson"}
    if rng.random() < match_chance:
        target, inside_map = _under(photo, x0, y0, h, w)
        strength = float(rng.uniform(0.6, 1.0))
        patch = match_colour(patch, alpha, target, alpha * inside_map + 1e-6, strength)
        image, mask = paste(photo, patch, alpha, x0, y0)
        return image, mask, {"blend": "lab_match", "match_strength": strength}
    image, mask = paste(photo, patch, alpha, x0, y0)
    return image, mask, {"blend": "none"}


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize to (w, h), area-averaging when shrinking."""
    w, h = size
    shrink = w * h < image.shape[0] * image.shape[1]
    return cv2.resize(image, (max(1, w), max(1, h)), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


# ------------------------------------------------------------------------------------------- families


def _splice(photo: np.ndarray, donor: np.ndarray, rng: np.random.Generator):
    height, width = photo.shape[:2]
    h, w = _region_size(rng, height, width, (0.03, 0.30))
    alpha, detail = soft_region(h, w, rng)
    # Content from the donor at a random scale (the donor's own pixels per pasted pixel).
    donor_h, donor_w = donor.shape[:2]
    scale = float(rng.uniform(0.6, 1.6))
    src_w = min(donor_w, max(4, int(round(w * scale))))
    src_h = min(donor_h, max(4, int(round(h * scale))))
    ratio = min(src_w / w, src_h / h)  # keep the aspect ratio when the donor is too small
    src_w, src_h = max(2, int(round(w * ratio))), max(2, int(round(h * ratio)))
    sx = int(rng.integers(0, donor_w - src_w + 1))
    sy = int(rng.integers(0, donor_h - src_h + 1))
    patch = _resize(np.ascontiguousarray(donor[sy:sy + src_h, sx:sx + src_w]), (w, h))
    x0, y0 = _place(rng, height, width, h, w)
    image, mask, blend = _blend_in(photo, patch, alpha, x0, y0, rng, poisson_chance=0.25, match_chance=0.6)
    detail.update(blend)
    detail.update({"box": [x0, y0, w, h], "area": float(mask.sum()) / (height * width),
                   "donor_box": [sx, sy, src_w, src_h], "scale": 1.0 / ratio})
    return image, mask, detail


def _copy_move(photo: np.ndarray, rng: np.random.Generator):
    height, width = photo.shape[:2]
    h, w = _region_size(rng, height, width, (0.02, 0.15))
    h, w = min(h, int(height * 0.6)), min(w, int(width * 0.6))
    alpha_src, detail = soft_region(h, w, rng)
    sx = int(rng.integers(0, width - w + 1))
    sy = int(rng.integers(0, height - h + 1))
    scale = 1.0 if rng.random() < 0.4 else float(rng.uniform(0.7, 1.4))
    angle = 0.0 if rng.random() < 0.5 else float(rng.uniform(-30, 30))
    if scale == 1.0 and angle == 0.0:
        patch = photo[sy:sy + h, sx:sx + w].copy()
        alpha = alpha_src
    else:
        cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        dw = max(8, int(math.ceil(scale * (w * cos + h * sin))) + 2)
        dh = max(8, int(math.ceil(scale * (w * sin + h * cos))) + 2)
        centre = (sx + (w - 1) / 2, sy + (h - 1) / 2)
        matrix = cv2.getRotationMatrix2D(centre, angle, scale)
        matrix[:, 2] += ((dw - 1) / 2 - centre[0], (dh - 1) / 2 - centre[1])
        patch = cv2.warpAffine(photo, matrix, (dw, dh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        crop_matrix = matrix.copy()
        crop_matrix[:, 2] += matrix[:, :2] @ np.array([sx, sy], np.float64)
        alpha = cv2.warpAffine(alpha_src, crop_matrix, (dw, dh), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        h, w = dh, dw
    # The copy lands away from where it came from (a copy onto itself changes nothing).
    best, best_distance = None, -1.0
    for _ in range(12):
        x0, y0 = _place(rng, height, width, h, w, overhang=0.25, border_chance=0.2)
        distance = math.hypot(x0 + w / 2 - (sx + alpha_src.shape[1] / 2), y0 + h / 2 - (sy + alpha_src.shape[0] / 2))
        if distance > best_distance:
            best, best_distance = (x0, y0), distance
        if distance >= 0.6 * max(h, w):
            break
    x0, y0 = best
    image, mask = paste(photo, patch, alpha, x0, y0)
    detail.update({"source_box": [sx, sy, int(alpha_src.shape[1]), int(alpha_src.shape[0])], "box": [x0, y0, w, h],
                   "scale": scale, "angle": angle, "area": float(mask.sum()) / (height * width)})
    return image, mask, detail


def hole_mask(h: int, w: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A hard 0/1 uint8 (h, w) hole: an elastic blob, an ellipse or a brush stroke."""
    if kind == "stroke":
        canvas = np.zeros((h, w), np.uint8)
        thickness = max(3, int(min(h, w) * rng.uniform(0.08, 0.25)))
        margin = thickness // 2 + 1
        n = int(rng.integers(2, 6))
        points = np.stack([rng.uniform(margin, max(margin + 1, w - margin), n),
                           rng.uniform(margin, max(margin + 1, h - margin), n)], axis=1).astype(np.int32)
        cv2.polylines(canvas, [points], False, 1, thickness, cv2.LINE_8)
        return canvas
    return (_shape_mask(h, w, "blob" if kind == "blob" else "ellipse", rng) >= 0.5).astype(np.uint8)


def _push_pull_fill(image: np.ndarray, hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth fill of ``hole`` (normalised convolution at growing scales) plus grain like the surroundings."""
    known = (hole == 0).astype(np.float32)
    values = image.astype(np.float32)
    filled = values.copy()
    todo = hole > 0
    sigma = 2.0
    while todo.any() and sigma < 4 * max(image.shape[:2]):
        weight = cv2.GaussianBlur(known, (0, 0), sigma)
        estimate = cv2.GaussianBlur(values * known[..., None], (0, 0), sigma) / np.maximum(weight, 1e-6)[..., None]
        ready = todo & (weight > 0.05)
        filled[ready] = estimate[ready]
        todo &= ~ready
        sigma *= 2.0
    if todo.any():
        filled[todo] = values[known > 0].mean(axis=0)
    # Grain: the high-pass energy of the known pixels around the hole.
    detail = values - cv2.GaussianBlur(values, (0, 0), 1.5)
    grain = float(detail[known > 0].std()) if (known > 0).any() else 0.0
    noise = rng.normal(0, grain * rng.uniform(0.3, 0.9), size=image.shape[:2]).astype(np.float32)
    filled += cv2.GaussianBlur(noise, (0, 0), 0.7)[..., None]
    return np.clip(np.round(filled), 0, 255).astype(np.uint8)


def _inpaint(photo: np.ndarray, rng: np.random.Generator):
    height, width = photo.shape[:2]
    kind = str(rng.choice(("blob", "ellipse", "stroke")))
    h, w = _region_size(rng, height, width, (0.01, 0.12) if kind == "stroke" else (0.005, 0.06))
    hole_box = hole_mask(h, w, kind, rng)
    if rng.random() < 0.5:  # removal tools usually take a little more than the object
        k = 2 * int(rng.integers(1, 4)) + 1
        hole_box = cv2.dilate(hole_box, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    x0, y0 = _place(rng, height, width, h, w, overhang=0.2, border_chance=0.25)
    hole = np.zeros((height, width), np.uint8)
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(width, x0 + w), min(height, y0 + h)
    hole[ya:yb, xa:xb] = hole_box[ya - y0:yb - y0, xa - x0:xb - x0]
    if not hole.any():
        raise ValueError("inpaint hole fell outside the photo")
    # Work on a crop around the hole, shrunk for big holes.
    margin = max(12, int(0.3 * max(h, w)))
    cxa, cya = max(0, xa - margin), max(0, ya - margin)
    cxb, cyb = min(width, xb + margin), min(height, yb + margin)
    crop = photo[cya:cyb, cxa:cxb]
    crop_hole = hole[cya:cyb, cxa:cxb]
    pixels = int(crop_hole.sum())
    factor = min(1.0, math.sqrt(_INPAINT_MAX_HOLE / max(pixels, 1)))
    method = str(rng.choice(("telea", "ns", "smooth_fill"), p=(0.4, 0.35, 0.25)))
    if factor < 1.0:
        small_size = (max(8, int(round(crop.shape[1] * factor))), max(8, int(round(crop.shape[0] * factor))))
        work = cv2.resize(crop, small_size, interpolation=cv2.INTER_AREA)
        work_hole = (cv2.resize(crop_hole.astype(np.float32), small_size, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
        work_hole = cv2.dilate(work_hole, np.ones((3, 3), np.uint8))
    else:
        work, work_hole = crop, crop_hole
    radius = float(rng.uniform(3, 9))
    if method == "smooth_fill":
        result = _push_pull_fill(work, work_hole, rng)
    else:
        flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        result = cv2.inpaint(np.ascontiguousarray(work), work_hole, radius, flag)
    if factor < 1.0:
        result = cv2.resize(result, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    image, mask = paste(photo, result, crop_hole.astype(np.float32), cxa, cya)
    return image, mask, {"shape": kind, "method": method, "radius": radius, "work_scale": factor,
                         "box": [x0, y0, w, h], "edge": "hard", "area": float(mask.sum()) / (height * width)}


# -------------------------------------------------------------------------------------------- graphic

_WORDS = ("SALE", "NEW", "LIVE", "BREAKING", "EXCLUSIVE", "Summer", "Holiday", "vibes", "Best day ever",
          "Follow me", "OFFICIAL", "Limited offer", "50% OFF", "Photo:", "Studio", "Press", "News",
          "Happy Birthday", "Weekend", "#travel", "#nofilter", "@", "Shop now", "Free", "Proof", "Sample",
          "DRAFT", "CONFIDENTIAL", "Copyright", "All rights reserved", "Lorem ipsum", "Welcome", "Good morning",
          "Team", "2019", "2023", "2024", "Paris", "Berlin", "Tokyo", "WOW", "LOL", "OMG", "Love", "Friends")


@lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """TrueType fonts for drawn text: matplotlib's bundled DejaVu and STIX text faces (sorted)."""
    try:
        import matplotlib
        folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        return tuple(sorted(str(p) for p in folder.glob("*.ttf")
                            if p.name.startswith(("DejaVu", "STIXGeneral")) and "Display" not in p.name))
    except Exception:  # noqa: BLE001 - matplotlib missing or unusual: Pillow's default font below
        return ()


def _font(rng: np.random.Generator, size: int):
    files = font_files()
    size = max(6, int(size))
    if files:
        return ImageFont.truetype(files[int(rng.integers(len(files)))], size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text(rng: np.random.Generator) -> str:
    n = int(rng.integers(1, 4))
    words = [str(_WORDS[int(rng.integers(len(_WORDS)))]) for _ in range(n)]
    if rng.random() < 0.3:
        words.append(f"{int(rng.integers(1, 32)):02d}.{int(rng.integers(1, 13)):02d}.{int(rng.integers(2000, 2026))}")
    text = " ".join(words)
    return text.upper() if rng.random() < 0.3 else text


def _colour(rng: np.random.Generator, alpha: int = 255) -> tuple[int, int, int, int]:
    if rng.random() < 0.35:
        grey = int(rng.choice((0, 20, 235, 255)))
        return grey, grey, grey, alpha
    hsv = np.uint8([[[int(rng.integers(0, 180)), int(rng.integers(120, 256)), int(rng.integers(120, 256))]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b), alpha


def _text_layer(text: str, font, fill, stroke: int, stroke_fill, pad: int) -> Image.Image:
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font, stroke_width=stroke)
    layer = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((pad - left, pad - top), text, font=font, fill=fill, stroke_width=stroke,
                               stroke_fill=stroke_fill)
    return layer


def _caption(rng, height, width) -> tuple[Image.Image, dict]:
    text = _text(rng)
    size = int(min(height, width) * rng.uniform(0.035, 0.11))
    font = _font(rng, size)
    outlined = rng.random() < 0.4
    layer = _text_layer(text, font, _colour(rng), max(1, size // 14) if outlined else 0, _colour(rng), size // 3)
    boxed = rng.random() < 0.4
    if boxed:  # a banner behind the text
        box = Image.new("RGBA", layer.size, _colour(rng, int(rng.integers(140, 256))))
        layer = Image.alpha_composite(box, layer)
    elif rng.random() < 0.4:  # drop shadow
        shadow_alpha = layer.getchannel("A").filter(ImageFilter.GaussianBlur(max(1, size // 12)))
        shadow = Image.new("RGBA", layer.size, (0, 0, 0, 0))
        shadow.putalpha(shadow_alpha.point(lambda v: int(v * 0.7)))
        layer = Image.alpha_composite(shadow, layer)
    return layer, {"kind": "caption", "text": text, "font_size": size, "outlined": outlined, "boxed": boxed}


def _logo(rng, height, width) -> tuple[Image.Image, dict]:
    side = int(min(height, width) * rng.uniform(0.06, 0.2))
    mark = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(mark)
    shape = str(rng.choice(("circle", "square", "triangle", "star", "ring")))
    fill, accent = _colour(rng), _colour(rng)
    if shape == "circle":
        draw.ellipse((1, 1, side - 2, side - 2), fill=fill)
    elif shape == "ring":
        draw.ellipse((1, 1, side - 2, side - 2), outline=fill, width=max(2, side // 8))
    elif shape == "square":
        draw.rounded_rectangle((1, 1, side - 2, side - 2), radius=side // 6, fill=fill)
    elif shape == "triangle":
        draw.polygon([(side / 2, 1), (side - 2, side - 2), (1, side - 2)], fill=fill)
    else:
        points = [(side / 2 + (side / 2 - 1) * (1 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5),
                   side / 2 - (side / 2 - 1) * (1 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5))
                  for i in range(10)]
        draw.polygon(points, fill=fill)
    letters = "".join(chr(int(rng.integers(65, 91))) for _ in range(int(rng.integers(1, 3))))
    letter_font = _font(rng, side * 0.45)
    draw.text((side / 2, side / 2), letters, font=letter_font, fill=accent, anchor="mm")
    name = str(_WORDS[int(rng.integers(len(_WORDS)))])
    if rng.random() < 0.6:
        words = _text_layer(name, _font(rng, side * rng.uniform(0.3, 0.6)), fill, 0, None, side // 10)
        layer = Image.new("RGBA", (side + words.width, max(side, words.height)), (0, 0, 0, 0))
        layer.alpha_composite(mark, (0, (layer.height - side) // 2))
        layer.alpha_composite(words, (side, (layer.height - words.height) // 2))
    else:
        layer, name = mark, ""
    return layer, {"kind": "logo", "mark": shape, "text": f"{letters} {name}".strip(), "size": side}


def _sticker(rng, height, width) -> tuple[Image.Image, dict]:
    side = int(min(height, width) * rng.uniform(0.08, 0.3))
    outline = max(2, side // int(rng.integers(12, 25)))
    layer = Image.new("RGBA", (side + 2 * outline, side + 2 * outline), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    blob = _shape_mask(side, side, str(rng.choice(("ellipse", "blob", "polygon", "rounded"))), rng)
    blob_image = Image.fromarray((blob * 255).astype(np.uint8))
    border = blob_image.filter(ImageFilter.MaxFilter(2 * (outline // 2) + 1))
    edge_colour = (255, 255, 255, 255) if rng.random() < 0.6 else (0, 0, 0, 255)
    layer.paste(Image.new("RGBA", (side, side), edge_colour), (outline, outline), border)
    inner = blob_image.filter(ImageFilter.MinFilter(2 * (outline // 2) + 1))
    layer.paste(Image.new("RGBA", (side, side), _colour(rng)), (outline, outline), inner)
    face = rng.random() < 0.5
    if face:  # emoji-like: two eyes and a smile
        c, r = outline + side / 2, side / 2
        eye = max(2, side // 12)
        for dx in (-0.3, 0.3):
            draw.ellipse((c + dx * r - eye, c - 0.2 * r - eye, c + dx * r + eye, c - 0.2 * r + eye), fill=(0, 0, 0, 255))
        draw.arc((c - 0.45 * r, c - 0.3 * r, c + 0.45 * r, c + 0.45 * r), 20, 160, fill=(0, 0, 0, 255),
                 width=max(2, side // 25))
    elif rng.random() < 0.6:
        text = str(_WORDS[int(rng.integers(len(_WORDS)))])[:6]
        draw.text((layer.width / 2, layer.height / 2), text, font=_font(rng, side / max(3, len(text) * 0.7)),
                  fill=_colour(rng), anchor="mm")
    return layer, {"kind": "sticker", "size": side, "face": face}


def _watermark(rng, height, width) -> tuple[Image.Image, dict]:
    text = str(rng.choice(("© ", "(c) ", "", "Photo by "))) + _text(rng)
    size = int(min(height, width) * rng.uniform(0.04, 0.14))
    opacity = float(rng.uniform(0.15, 0.55))
    grey = int(rng.choice((255, 235, 0, 40)))
    layer = _text_layer(text, _font(rng, size), (grey, grey, grey, int(round(255 * opacity))), 0, None, size // 4)
    tiled = rng.random() < 0.3
    if tiled:  # a repeated diagonal pattern over part of the picture
        rows, cols = int(rng.integers(2, 4)), int(rng.integers(1, 3))
        tile = Image.new("RGBA", (layer.width * cols + layer.width // 2, layer.height * rows * 2), (0, 0, 0, 0))
        for row in range(rows):
            for col in range(cols):
                tile.alpha_composite(layer, (col * layer.width + (row % 2) * layer.width // 2, row * 2 * layer.height))
        layer = tile
    return layer, {"kind": "watermark", "text": text, "font_size": size, "opacity": opacity, "tiled": tiled}


def graphic_layer(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, dict]:
    """A caption, logo, sticker or watermark (one of GRAPHIC_KINDS, named by the detail's ``kind``) drawn for
    a (height, width) picture: an RGBA layer at its drawn size, and its detail."""
    kind = str(rng.choice(GRAPHIC_KINDS))
    return {"caption": _caption, "logo": _logo, "sticker": _sticker, "watermark": _watermark}[kind](rng, height, width)


def layer_pixels(layer: Image.Image, height: int, width: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """``layer`` shrunk, if need be, to at most ``fill`` of a (height, width) picture's sides (a long caption
    on a small picture), as an RGB patch (h, w, 3) and its alpha (h, w) in [0, 1]."""
    fit = min(1.0, fill * width / layer.width, fill * height / layer.height)
    if fit < 1.0:
        layer = layer.resize((max(1, int(layer.width * fit)), max(1, int(layer.height * fit))), Image.LANCZOS)
    rgba = np.asarray(layer, dtype=np.uint8)
    return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3].astype(np.float32) / 255.0


def _graphic(photo: np.ndarray, rng: np.random.Generator):
    height, width = photo.shape[:2]
    layer, detail = graphic_layer(rng, height, width)
    kind = detail["kind"]
    angle = 0.0
    if rng.random() < (0.5 if kind in ("sticker", "watermark") else 0.15):
        angle = float(rng.uniform(-45, 45) if kind == "watermark" else rng.uniform(-20, 20))
        layer = layer.rotate(angle, resample=Image.BICUBIC, expand=True)
    patch, alpha = layer_pixels(layer, height, width, 0.95)
    lh, lw = alpha.shape
    x0, y0 = _place(rng, height, width, lh, lw, overhang=0.15, border_chance=0.45)
    image, mask = paste(photo, patch, alpha, x0, y0)
    detail.update({"angle": angle, "box": [x0, y0, lw, lh], "edge": "alpha",
                   "area": float((mask > 0).sum()) / (height * width)})
    return image, mask, detail


# ------------------------------------------------------------------------------------------ face swap


def _face_swap(photo: np.ndarray, donor: np.ndarray, rng: np.random.Generator, faces: list[Box],
               donor_faces: list[Box]):
    height, width = photo.shape[:2]
    intra = False
    if not donor_faces:
        if len(faces) < 2:
            raise ValueError("face_swap needs a face in the donor (or two in the photo)")
        donor, donor_faces, intra = photo, faces, True
    source_index = int(rng.integers(len(donor_faces)))
    fx, fy, fw, fh = donor_faces[source_index]
    targets = [f for i, f in enumerate(faces) if not (intra and i == source_index)]
    if targets:
        tx, ty, tw, th = targets[int(rng.integers(len(targets)))]
        mode = "swap"
        scale = tw / fw * float(rng.uniform(0.95, 1.05))
        centre_x = tx + tw / 2 + rng.uniform(-0.04, 0.04) * tw
        centre_y = ty + th / 2 + rng.uniform(-0.04, 0.04) * th
    else:  # face paste: a donor face somewhere plausible in a photo without one
        mode = "paste"
        target_w = min(height, width) * float(rng.uniform(0.08, 0.3))
        scale = target_w / fw
        margin = 0.15 * target_w
        centre_x = rng.uniform(-margin, width + margin) if rng.random() < 0.2 else rng.uniform(target_w / 2, width - target_w / 2)
        centre_y = rng.uniform(target_w * 0.6, max(target_w * 0.6 + 1, height - target_w * 0.6))
    # Donor crop around the face (1.4x the box, clipped to the donor), resized by ``scale``.
    donor_h, donor_w = donor.shape[:2]
    expand = 0.2
    dxa, dya = max(0, int(fx - expand * fw)), max(0, int(fy - expand * fh))
    dxb, dyb = min(donor_w, int(math.ceil(fx + fw * (1 + expand)))), min(donor_h, int(math.ceil(fy + fh * (1 + expand))))
    out_w, out_h = max(8, int(round((dxb - dxa) * scale))), max(8, int(round((dyb - dya) * scale)))
    crop = donor[dya:dyb, dxa:dxb]
    grey_target = bool(np.array_equal(photo[..., 0], photo[..., 1]) and np.array_equal(photo[..., 1], photo[..., 2]))
    patch = _resize(np.ascontiguousarray(crop), (out_w, out_h))
    if grey_target:
        patch = np.repeat(cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    # Soft ellipse around the face in patch pixels.
    face_cx, face_cy = (fx + fw / 2 - dxa) * out_w / (dxb - dxa), (fy + fh / 2 - dya) * out_h / (dyb - dya)
    face_w, face_h = fw * out_w / (dxb - dxa), fh * out_h / (dyb - dya)
    axes = (face_w * rng.uniform(0.38, 0.48), face_h * rng.uniform(0.48, 0.6))
    sigma = float(face_w * rng.uniform(0.03, 0.09))
    alpha = np.zeros((out_h, out_w), np.float32)
    shrink = 1.5 * sigma  # the blur spreads the edge out to about the drawn ellipse
    cv2.ellipse(alpha, (int(round(face_cx * 16)), int(round(face_cy * 16))),
                (max(1, int((axes[0] - shrink) * 16)), max(1, int((axes[1] - shrink) * 16))), 0, 0, 360, 1.0, -1,
                cv2.LINE_AA, 4)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.8, sigma), borderType=cv2.BORDER_CONSTANT)
    alpha = np.clip(alpha / max(float(alpha.max()), 1e-6), 0, 1)
    alpha[alpha < _MIN_ALPHA] = 0
    x0 = int(round(centre_x - face_cx))
    y0 = int(round(centre_y - face_cy))
    matched = rng.random() < 0.85
    strength = float(rng.uniform(0.7, 1.0)) if matched else 0.0
    if matched:
        target, inside_map = _under(photo, x0, y0, out_h, out_w)
        patch = match_colour(patch, alpha, target, alpha * inside_map + 1e-6, strength)
    image, mask = paste(photo, patch, alpha, x0, y0)
    return image, mask, {"mode": mode, "intra_photo": intra, "scale": float(scale), "box": [x0, y0, out_w, out_h],
                         "face_box": [int(round(centre_x - face_w / 2)), int(round(centre_y - face_h / 2)),
                                      int(round(face_w)), int(round(face_h))],
                         "shape": "ellipse", "edge": "feathered", "feather_sigma": sigma,
                         "colour_matched": matched, "match_strength": strength,
                         "area": float(mask.sum()) / (height * width)}
