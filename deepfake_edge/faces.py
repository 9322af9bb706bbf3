"""Face boxes in a photo, for face-centred analysis (regions.py) and face edits in training data.

The detector is YuNet, the small CNN of libfacedetection, as the ``yuface`` wheel ships it: the weights are
compiled into its library, so nothing is downloaded at run time. It was chosen over OpenCV's Haar and LBP
cascades and dlib's HOG detector by measured recall, false positives and CPU time (docs/faces.md,
``python -m deepfake_edge.benchmarks.face_detectors``). Boxes are ``(x, y, width, height)`` in the
photo's own pixels, clipped to the photo, most confident first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import cv2
import numpy as np

FaceBox = tuple[int, int, int, int]  # x, y, width, height
DETECT_MAX_SIDE = 512  # faces are searched on a copy no larger than this: ~30 ms of one core per photo
MIN_SCORE = 0.5  # YuNet's confidence, 0..1 (yuface's own default)

_native_detect: Callable[[np.ndarray], np.ndarray] | None = None
_load_lock = threading.Lock()


def _detector() -> Callable[[np.ndarray], np.ndarray]:
    """yuface's native ``detect(BGR uint8) -> int16 rows [score%, x, y, w, h, 10 landmarks, unused]``,
    loaded and warmed once per process.

    Its bundled libgomp reads OMP_NUM_THREADS once, when it loads: loaded with the default (one thread
    per core) a call costs several times the CPU of one thread on a busy machine (docs/faces.md), so the
    library is loaded with one thread and the variable is put back as it was (torch reads it too). The
    first call initialises the weights; it runs here, under the lock. The native call holds the GIL, so
    calls from several threads of a web server run one at a time (each ~30 ms) and cannot race.
    """
    global _native_detect
    if _native_detect is None:
        with _load_lock:
            if _native_detect is None:
                saved = os.environ.get("OMP_NUM_THREADS")
                os.environ["OMP_NUM_THREADS"] = "1"
                try:
                    from yuface import yuface as native
                finally:
                    if saved is None:
                        del os.environ["OMP_NUM_THREADS"]
                    else:
                        os.environ["OMP_NUM_THREADS"] = saved
                native.detect(np.zeros((64, 64, 3), np.uint8))
                _native_detect = native.detect
    return _native_detect


def detect_faces(photo: np.ndarray) -> list[FaceBox]:
    """Faces in a uint8 (H, W, 3) RGB photo, as ``(x, y, width, height)`` in photo pixels, clipped to the
    photo, most confident first. Upright faces, frontal to about three-quarter view; a photo turned 90
    degrees must be turned back first (uploads are, by their EXIF orientation)."""
    photo = np.asarray(photo)
    if photo.ndim == 2:
        photo = np.repeat(photo[:, :, None], 3, axis=2)
    photo = photo[:, :, :3]
    height, width = photo.shape[:2]
    if min(height, width) < 16:
        return []
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    small = photo
    if scale < 1.0:
        small = cv2.resize(photo, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    rows = _detector()(np.ascontiguousarray(small[:, :, ::-1], dtype=np.uint8))
    boxes = []
    for row in sorted(rows.astype(np.int64).tolist(), key=lambda r: -r[0]):
        if row[0] < MIN_SCORE * 100:
            continue
        x, y, w, h = row[1:5]
        x0, y0 = max(0, round(x / scale)), max(0, round(y / scale))
        x1, y1 = min(width, round((x + w) / scale)), min(height, round((y + h) / scale))
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes
