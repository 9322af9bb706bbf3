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

import cv2
import numpy as np
from PIL import Image

from deepfake_edge.training.edit_geometry import MIN_ALPHA, Box, paste, place, region_size, shape_mask, soft_region
from deepfake_edge.training.edit_graphics import graphic_layer, layer_pixels

EDIT_FAMILIES = ("splice", "copy_move", "inpaint", "graphic", "face_swap")
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
    h, w = region_size(rng, height, width, (0.03, 0.30))
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
    x0, y0 = place(rng, height, width, h, w)
    image, mask, blend = _blend_in(photo, patch, alpha, x0, y0, rng, poisson_chance=0.25, match_chance=0.6)
    detail.update(blend)
    detail.update({"box": [x0, y0, w, h], "area": float(mask.sum()) / (height * width),
                   "donor_box": [sx, sy, src_w, src_h], "scale": 1.0 / ratio})
    return image, mask, detail


def _copy_move(photo: np.ndarray, rng: np.random.Generator):
    height, width = photo.shape[:2]
    h, w = region_size(rng, height, width, (0.02, 0.15))
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
        x0, y0 = place(rng, height, width, h, w, overhang=0.25, border_chance=0.2)
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
    return (shape_mask(h, w, "blob" if kind == "blob" else "ellipse", rng) >= 0.5).astype(np.uint8)


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
    h, w = region_size(rng, height, width, (0.01, 0.12) if kind == "stroke" else (0.005, 0.06))
    hole_box = hole_mask(h, w, kind, rng)
    if rng.random() < 0.5:  # removal tools usually take a little more than the object
        k = 2 * int(rng.integers(1, 4)) + 1
        hole_box = cv2.dilate(hole_box, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    x0, y0 = place(rng, height, width, h, w, overhang=0.2, border_chance=0.25)
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
    x0, y0 = place(rng, height, width, lh, lw, overhang=0.15, border_chance=0.45)
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
    alpha[alpha < MIN_ALPHA] = 0
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
