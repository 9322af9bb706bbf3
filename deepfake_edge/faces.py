"""Face boxes in a photo, for face-centred analysis (regions.py) and face edits in training data.

The detector's weights ship inside an installed package (nothing is downloaded at run time).
Boxes are ``(x, y, width, height)`` in the photo's own pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

FaceBox = tuple[int, int, int, int]  # x, y, width, height
_FACE_CASCADE = "haarcascade_frontalface_default.xml"
_DETECT_MAX_SIDE = 512  # faces are searched on a copy no larger than this (Haar is slow on big photos)


def detect_faces(photo: np.ndarray) -> list[FaceBox]:
    """Frontal faces in a uint8 (H, W, 3) RGB photo (OpenCV's bundled Haar cascade), in photo pixels."""
    height, width = photo.shape[:2]
    scale = min(1.0, _DETECT_MAX_SIDE / max(height, width))
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    if min(grey.shape) < 48:
        return []
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + _FACE_CASCADE)
    found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=8,
                                     minSize=(max(24, min(grey.shape) // 10),) * 2)
    return [tuple(int(round(v / scale)) for v in box) for box in found]
