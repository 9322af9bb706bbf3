"""Where an edit goes and how it is laid on: region sizes, placement (borders included), shape masks and
alpha compositing. Shared by the photo edits (edits.py), the graphics (edit_graphics.py) and the video
edits (video_camera_clips.py); every function draws its randomness from the ``rng`` it is given."""

from __future__ import annotations

import math

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height

SHAPES = ("rectangle", "rounded", "ellipse", "polygon", "blob")
MIN_ALPHA = 1.0 / 255.0  # weights below one 8-bit level are cut: "inside the mask" has a crisp meaning


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
    a = np.where(a < MIN_ALPHA, 0.0, np.minimum(a, 1.0)).astype(np.float32)
    p = patch[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float32)
    region = out[ya:yb, xa:xb].astype(np.float32)
    out[ya:yb, xa:xb] = np.clip(np.round(region + a[..., None] * (p - region)), 0, 255).astype(np.uint8)
    mask[ya:yb, xa:xb] = a
    return out, mask


def region_size(rng: np.random.Generator, height: int, width: int, area: tuple[float, float],
                 aspect: tuple[float, float] = (0.5, 2.0)) -> tuple[int, int]:
    """(h, w) of a region covering a log-uniform fraction ``area`` of the image, clipped to fit."""
    fraction = math.exp(rng.uniform(math.log(area[0]), math.log(area[1])))
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))  # w / h
    pixels = fraction * height * width
    w = int(round(min(width * 0.95, math.sqrt(pixels * ratio))))
    h = int(round(min(height * 0.95, pixels / max(w, 1))))
    return max(8, h), max(8, w)


def place(rng: np.random.Generator, height: int, width: int, h: int, w: int,
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


def shape_mask(h: int, w: int, shape: str, rng: np.random.Generator, inset: int = 0) -> np.ndarray:
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
    mask = shape_mask(h, w, shape, rng, inset)
    if feathered:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        mask = np.clip(mask / max(float(mask.max()), 1e-6), 0, 1)
    mask[mask < MIN_ALPHA] = 0.0
    return mask.astype(np.float32), {"shape": shape, "edge": "feathered" if feathered else "hard",
                                     "feather_sigma": sigma}
