"""Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): one real crop in, a real/fake pair out.

The fake is the crop blended with a colour-, sharpness- and geometry-perturbed copy of itself inside
a soft, randomly deformed mask: the blending boundary and the statistics mismatch that face swaps
leave, without any face-swap model. Ranges follow SBI's own transforms. On photos with a detected
face, crops are usually centred on it (1.3-2x the face box) and the mask covers the face, as in SBI.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from deepfake_edge.faces import FaceBox as Box

# Blend ratios: a full swap half the time, partial blends otherwise (SBI also uses 0.25, too faint to
# learn from in a CPU-minutes budget).
BLEND_RATIOS = (0.6, 0.8, 1.0, 1.0)
FACE_CROP_PROBABILITY = 0.7


@dataclass(frozen=True)
class BlendPair:
    """One real/fake pair before final processing: uint8 (H, W, 3) images and a float32 (H, W) mask
    holding the per-pixel weight of the perturbed copy (0 = untouched)."""

    real: np.ndarray
    fake: np.ndarray
    mask: np.ndarray


def blend_pair(photo: np.ndarray, rng: np.random.Generator, work_size: int,
               faces: list[Box] | tuple[Box, ...] = ()) -> BlendPair:
    """Cut a random square crop of ``photo`` (uint8 HxWx3), resize it to ``work_size`` and self-blend it.

    With ``faces`` the crop is usually centred on one of them and the mask covers it. ``fake`` equals
    ``real`` wherever ``mask`` is 0, and ``mask`` is 0 on the image border.
    """
    height, width = photo.shape[:2]
    short = min(height, width)
    face_region = None
    if faces and rng.random() < FACE_CROP_PROBABILITY:
        x, y, w, h = faces[int(rng.integers(len(faces)))]
        side = int(round(min(short, max(w, h) * rng.uniform(1.3, 2.0))))
        centre_x = x + w / 2 + rng.uniform(-0.1, 0.1) * w
        centre_y = y + h / 2 + rng.uniform(-0.1, 0.1) * h
        left = int(np.clip(round(centre_x - side / 2), 0, width - side))
        top = int(np.clip(round(centre_y - side / 2), 0, height - side))
        to_work = work_size / side
        face_region = ((x + w / 2 - left) * to_work, (y + h / 2 - top) * to_work, max(w, h) * to_work)
    else:
        low = min(short, max(0.2 * short, 48.0))
        side = int(round(rng.uniform(low, max(low, 0.9 * short))))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
    crop = photo[top:top + side, left:left + side]
    interpolation = cv2.INTER_AREA if side > work_size else cv2.INTER_CUBIC
    real = cv2.resize(np.ascontiguousarray(crop), (work_size, work_size), interpolation=interpolation)
    if rng.random() < 0.5:
        real = np.ascontiguousarray(real[:, ::-1])
        if face_region is not None:
            face_region = (work_size - face_region[0], *face_region[1:])
    mask = random_blend_mask(work_size, rng, face_region) * rng.choice(BLEND_RATIOS)
    source = perturb(real, rng)
    blended = mask[..., None] * source.astype(np.float32) + (1.0 - mask[..., None]) * real.astype(np.float32)
    fake = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return BlendPair(real, fake, mask.astype(np.float32))


def random_blend_mask(size: int, rng: np.random.Generator,
                      face: tuple[float, float, float] | None = None) -> np.ndarray:
    """A soft float32 (size, size) mask in [0, 1] with maximum 1: an ellipse, a random convex hull or a
    rounded box, elastically deformed, possibly eroded or dilated, then Gaussian-blurred.

    ``face`` = (centre x, centre y, side) places it over a face; otherwise it lands anywhere. It is zero
    within one pixel of the border, so the whole blending boundary is in the picture.
    """
    blur_sigma = size * rng.uniform(0.01, 0.05)
    warp = size * 0.04
    margin = int(math.ceil(3 * blur_sigma + warp + size * 0.03)) + 2
    if face is None:
        region = min(rng.uniform(0.3, 0.7) * size, size - 2 * margin)
        cx, cy = rng.uniform(margin + region / 2, size - margin - region / 2, size=2)
    else:
        region = min(face[2] * rng.uniform(0.7, 1.0), size - 2 * margin)
        cx, cy = (float(np.clip(c, margin + region / 2, size - margin - region / 2)) for c in face[:2])
    hard = np.zeros((size, size), np.uint8)
    shape = rng.integers(3)
    if shape == 0:
        axes = (int(region / 2), int(region / 2 * rng.uniform(0.6, 1.0)))
        cv2.ellipse(hard, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    elif shape == 1:
        points = rng.uniform(-region / 2, region / 2, size=(int(rng.integers(5, 16)), 2)) + (cx, cy)
        cv2.fillConvexPoly(hard, cv2.convexHull(points.astype(np.int32)), 255)
    else:
        half_w, half_h = region / 2, region / 2 * rng.uniform(0.7, 1.0)
        radius = int(min(half_w, half_h) * rng.uniform(0.2, 0.6))
        corner_a = (int(cx - half_w + radius), int(cy - half_h + radius))
        corner_b = (int(cx + half_w - radius), int(cy + half_h - radius))
        cv2.rectangle(hard, corner_a, corner_b, 255, -1)
        cv2.rectangle(hard, corner_a, corner_b, 255, 2 * radius)  # thick outline = rounded corners
    mask = _elastic(hard.astype(np.float32) / 255.0, warp, rng)
    if rng.random() < 0.5:
        k = 2 * int(rng.integers(1, max(2, int(size * 0.02) + 1))) + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = cv2.erode(mask, kernel) if rng.random() < 0.5 else cv2.dilate(mask, kernel)
    mask = cv2.GaussianBlur(mask, (0, 0), blur_sigma, borderType=cv2.BORDER_CONSTANT)
    mask[mask < 1e-3] = 0.0  # cut the Gaussian tails: "inside the mask" has a crisp meaning
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 0.0
    return np.clip(mask / max(float(mask.max()), 1e-6), 0.0, 1.0).astype(np.float32)


def _elastic(mask: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Displace pixels by a smooth random field of at most ``amplitude`` pixels."""
    size = mask.shape[0]
    field = rng.uniform(-1, 1, size=(2, size, size)).astype(np.float32)
    field = np.stack([cv2.GaussianBlur(f, (0, 0), size * 0.08) for f in field])
    field *= amplitude / max(float(np.abs(field).max()), 1e-6)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    return cv2.remap(mask, grid_x + field[0], grid_y + field[1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def perturb(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The blended-in copy: colour shift, then blur (downscale) or sharpen, then a small scale/shift.

    Ranges are somewhat stronger than SBI's (every copy gets a colour shift of 8-25 levels per channel
    and a real blur or sharpen) so a detector trained for minutes on two CPU cores still learns the
    blend; near-invisible fakes would only be label noise at that budget. Grey photos stay grey, so
    colour alone is never the tell.
    """
    out = image.astype(np.float32)
    contrast = rng.uniform(0.8, 1.2)
    brightness = rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.12) * 255
    out = (out - out.mean()) * contrast + out.mean() + brightness
    out += rng.choice([-1.0, 1.0], size=3) * rng.uniform(8, 25, size=3)
    if _is_grey(image):
        out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
    out = np.clip(out, 0, 255)
    size = image.shape[0]
    if rng.random() < 0.5:
        small_side = max(1, size // int(rng.choice((2, 3, 4))))
        small = cv2.resize(out, (small_side, small_side), interpolation=cv2.INTER_LINEAR)
        out = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    else:
        out = out + rng.uniform(1.0, 2.0) * (out - cv2.GaussianBlur(out, (0, 0), 1.0))  # unsharp mask
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), 0.0, rng.uniform(0.95, 1 / 0.95))
    matrix[:, 2] += (rng.uniform(-0.03, 0.03) * size, rng.uniform(-0.015, 0.015) * size)
    out = cv2.warpAffine(out, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _is_grey(image: np.ndarray) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def finish(image: np.ndarray, image_size: int, quality: int) -> bytes:
    """The final processing both classes share: area-resize to ``image_size``, then JPEG at ``quality``."""
    if image.shape[0] != image_size:
        image = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def finish_mask(mask: np.ndarray, image_size: int) -> Image.Image:
    """The mask at output resolution as an 8-bit image (255 = fully the perturbed copy)."""
    if mask.shape[0] != image_size:
        mask = cv2.resize(mask, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return Image.fromarray(np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8))
