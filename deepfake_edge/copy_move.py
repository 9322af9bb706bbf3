"""Copy-move: part of a photo pasted elsewhere in the same photo, found by matching the photo with itself.

The detector scores one 224-px region at a time, so it cannot see that two regions are the same; a copied
patch with clean edges looks like any other patch. This is the classic keypoint method of copy-move
forensics (Amerini et al., "A SIFT-based forensic method for copy-move attack detection", 2011):

1. SIFT keypoints and descriptors of the greyscale photo, its longer side at most :data:`MAX_SIDE`, down to
   a contrast of :data:`CONTRAST_THRESHOLD`;
2. each keypoint matched with the photo's own keypoints by the generalised 2-nearest-neighbour test (a
   neighbour is kept while it is much closer than the next one, :data:`RATIO`), so a patch copied
   several times matches every copy; pairs closer than :data:`MIN_DISTANCE` px are dropped (a texture
   matches its neighbour);
3. one similarity transform (shift, rotation, uniform scale) fitted to the pairs by RANSAC: its inliers
   are pairs that agree on one move;
4. a second transform fitted to the pairs that share no keypoint with the first move's, its inliers the
   *rival*: text (words repeated on a sign, a page) repeats under many moves, while a patch and its copies
   (one or several) are one group of keypoints. The finding's ``support`` is the first move's inliers
   less the rival's: unedited photos match themselves most where text repeats (scene text and documents
   led both the demo set's training and test splits), and the rival discounts text that repeats under
   several moves.

:func:`find_copy_move` returns the support, the inliers and the two matched areas, or None when the support
is under :data:`MIN_SUPPORT`; :func:`start_copy_move` starts the same check and returns at once, so a caller
can go on while it runs (the client sends the image's rows to Triton meanwhile). Either way the check runs on
the process's check threads, one per core.
How much support makes a photo suspicious is not decided here: the model card carries a logistic
calibration of the support fitted on the training photos' copy-move pairs (``ModelCard.copy_move_calibration``),
and ``copy_move_score`` turns it into the fake probability that competes with the regions'
(deepfake_edge/regions.py). The moved copy cannot be told from its source, so both areas are reported.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

# SIFT runs on a copy no larger than this, and keeps keypoints down to a lower contrast than OpenCV's 0.04:
# on the demo set's 420 training copy-move pairs and 2,100 unedited training photos this found more
# copy-moves (51.9 % against 49.8 % at 640 px and 0.04) with fewer findings in unedited photos (1.5 %
# against 2.5 %), in 108 ms of one core against 150 (docs/detection.md).
MAX_SIDE = 512
CONTRAST_THRESHOLD = 0.03
MAX_KEYPOINTS = 3000
RATIO = 0.5  # generalised 2NN: neighbour i is a match while d_i / d_(i+1) < RATIO
NEIGHBOURS = 4  # the keypoint itself and up to three copies
MIN_DISTANCE = 30  # px at the working size between a keypoint and its match
RANSAC_THRESHOLD = 3.0  # px of reprojection error at the working size
MIN_SUPPORT = 4  # a smaller lead over the rival move is no finding at all (a similarity is fitted from 2 pairs)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the original image's pixels

# More checks at once than cores gain no throughput and each holds its own scale space, so a burst of
# uploads to one process (the web app's threads) queues here instead of multiplying the memory.
_CHECKS = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="copy-move")


@dataclass(frozen=True)
class CopyMove:
    """Pairs of keypoints that one similarity transform moves onto each other: ``inliers`` pairs, the
    ``areas`` they cover (two boxes in original pixels), the move's ``scale`` and ``angle`` (degrees), and
    the ``rival`` move's inliers among the other pairs."""

    inliers: int
    areas: tuple[Box, Box]
    scale: float
    angle: float
    rival: int = 0

    @property
    def support(self) -> int:
        """The inliers this move has beyond its rival: what the calibration scores."""
        return self.inliers - self.rival


def find_copy_move(image: Image.Image) -> CopyMove | None:
    """The strongest copy-move in an RGB ``image``, or None when its support is under :data:`MIN_SUPPORT`.
    At most one check per CPU core runs at a time in a process; further callers wait their turn."""
    return start_copy_move(image).result()


def start_copy_move(image: Image.Image) -> "Future[CopyMove | None]":
    """:func:`find_copy_move` of ``image``, started on the check threads. Only the small greyscale copy the
    check works on (made here, a few ms) waits in their queue: the caller may close the image at once."""
    factor = max(1.0, max(image.size) / MAX_SIDE)
    grey = image.convert("L")
    if factor > 1.0:
        grey = grey.resize((max(1, round(image.width / factor)), max(1, round(image.height / factor))),
                           Image.Resampling.BOX)
    return _CHECKS.submit(_check, np.asarray(grey, dtype=np.uint8), factor, image.size)


def _check(grey: np.ndarray, factor: float, size: tuple[int, int]) -> CopyMove | None:
    """The check of the greyscale working copy ``grey`` of an image of ``size``, ``factor`` original pixels
    per working pixel."""
    sift = cv2.SIFT_create(nfeatures=MAX_KEYPOINTS, contrastThreshold=CONTRAST_THRESHOLD)
    keypoints, descriptors = sift.detectAndCompute(grey, None)
    if descriptors is None or len(keypoints) < NEIGHBOURS:
        return None
    points = np.float32([k.pt for k in keypoints])
    pairs = _self_matches(descriptors, points)
    best = _strongest_move(points[pairs[:, 0]], points[pairs[:, 1]])
    if best is None or best[0] < MIN_SUPPORT:
        return None
    count, move, kept = best
    # The rival moves keypoints the first move does not touch: the copies of one patch share its keypoints
    # (a patch cloned twice keeps its support), while text and texture repeat elsewhere too.
    used = np.unique(pairs[kept])
    apart = ~np.isin(pairs, used).any(axis=1)
    rival = _strongest_move(points[pairs[apart, 0]], points[pairs[apart, 1]])
    found = CopyMove(count, (_box(points[pairs[kept, 0]], factor, size),
                             _box(points[pairs[kept, 1]], factor, size)),
                     round(math.hypot(move[0, 0], move[1, 0]), 4),
                     round(math.degrees(math.atan2(move[1, 0], move[0, 0])), 2), rival[0] if rival else 0)
    return found if found.support >= MIN_SUPPORT else None


def _strongest_move(source: np.ndarray, target: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(inliers, 2x3 similarity, inlier mask) of the move RANSAC finds for ``source`` -> ``target`` points,
    tried from either end (the one explaining more pairs wins), or None for fewer than 2 pairs."""
    if len(source) < 2:
        return None
    best = None
    for a, b in ((source, target), (target, source)):
        move, inliers = cv2.estimateAffinePartial2D(a, b, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_THRESHOLD)
        if move is not None and inliers is not None and (best is None or int(inliers.sum()) > best[0]):
            best = (int(inliers.sum()), move, inliers.ravel().astype(bool))
    return best


def copy_move_score(support: int, calibration: Sequence[float]) -> tuple[float, float]:
    """(fake probability, logit) of a copy-move finding with ``support``: the logit is
    ``a + b * log(1 + support)`` for ``calibration`` = (a, b), fitted by :func:`fit_calibration`."""
    a, b = calibration
    logit = a + b * math.log1p(support)
    return 0.5 * (1.0 + math.tanh(logit / 2.0)), logit  # the logistic function, without overflow


def fit_calibration(supports: Sequence[int], labels: Sequence[int], steps: int = 50) -> tuple[float, float]:
    """Logistic regression of ``labels`` (1 = copy-moved) on ``log(1 + support)`` (0 for a photo without a
    finding), by Newton's method with a small ridge so that perfectly separated data gives finite weights."""
    x = np.log1p(np.asarray(supports, dtype=np.float64))
    y = np.asarray(labels, dtype=np.float64)
    if len(x) == 0 or y.min() == y.max():
        raise ValueError("fitting the copy-move calibration needs photos of both labels")
    design = np.stack([np.ones_like(x), x], axis=1)
    weights = np.zeros(2)
    ridge = 1e-3 * len(x)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-design @ weights))
        gradient = design.T @ (p - y) + ridge * weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        weights -= np.linalg.solve(hessian, gradient)
    return float(weights[0]), float(weights[1])


def _self_matches(descriptors: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(K, 2) keypoint index pairs (i < j) that pass the generalised 2NN test and lie apart."""
    matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(descriptors, descriptors, k=NEIGHBOURS)
    pairs = set()
    for row in matches:
        neighbours = row[1:]  # row[0] is the keypoint itself
        for near, far in zip(neighbours, neighbours[1:]):
            if near.distance >= RATIO * far.distance:
                break
            i, j = sorted((near.queryIdx, near.trainIdx))
            if i != j and float(np.hypot(*(points[i] - points[j]))) > MIN_DISTANCE:
                pairs.add((i, j))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def _box(points: np.ndarray, factor: float, size: tuple[int, int]) -> Box:
    width, height = size
    x0, y0 = np.floor(points.min(axis=0) * factor).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) * factor).astype(int) + 1
    return max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1))
