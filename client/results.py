"""What the client returns: a :class:`Detection` per classified image, a :class:`Failure` per input that
could not be classified. ``detect_many`` returns exactly one of the two per input, in input order."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from deepfake_edge.preprocessing import ImageSource

if TYPE_CHECKING:
    from deepfake_edge.provenance import Provenance


@dataclass(frozen=True)
class RegionScore:
    """One scored region of an image: ``kind`` is "face", "tile" or "global" (a region the model scored) or
    "copy_move" (one of the two areas of a copy-move finding, with the finding's probability); ``box`` is
    ``(x0, y0, x1, y1)`` in the original (upright) image's pixels."""

    kind: str
    box: tuple[int, int, int, int]
    fake_probability: float


@dataclass(frozen=True)
class Verdict:
    """What every answer holds: ``label`` and ``confidence`` from the served card (see :class:`Detection`),
    the deciding ``fake_probability`` and ``logit``, the model, and the analysis ``mode``."""

    source: ImageSource
    label: str
    confidence: float
    fake_probability: float
    logit: float
    model: str
    model_version: str
    mode: str

    ok = True


@dataclass(frozen=True)
class Detection(Verdict):
    """The server's verdict on one image.

    ``mode`` is "whole" (every face, native-resolution tiles over the whole frame and the global view,
    deepfake_edge/regions.py) or "fast" (the global view alone). ``fake_probability`` and ``logit`` are
    the deciding region's; ``label`` and ``confidence`` come from the served model card's labels and the
    threshold of that mode (``confidence``, in [0.5, 1], is the fake probability re-centred so the
    threshold reads 50 %; see ``ModelCard.confidence_for``). ``regions`` lists every scored region,
    ``notes`` what was capped (a shrunk image, too many faces). ``heatmap`` (float32 [h, w] in [0, 1]) is
    present only when requested and covers ``heatmap_box`` of the original image: the whole image in
    whole mode, the centre crop in fast mode.

    ``provenance`` is what the file itself says about where it came from: its Content Credentials (C2PA)
    and EXIF/XMP metadata (deepfake_edge/provenance.py), read from the same source. It is evidence beside
    the verdict, never part of the score; None for a decoded image (no file bytes) or when the client was
    made with ``provenance=False``; ``status="error"`` when it could not be read (the verdict stands).
    """

    mode: str = "fast"
    regions: tuple[RegionScore, ...] = ()
    notes: tuple[str, ...] = ()
    heatmap: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    heatmap_box: Optional[tuple[int, int, int, int]] = None
    provenance: Optional["Provenance"] = None

    kind = "image"  # what was analysed (a VideoDetection says "video")


@dataclass(frozen=True)
class Failure:
    """An input that got no verdict, and why. ``error`` is a ``BadImageError`` (the input's fault) or a
    ``DeepfakeClientError`` subclass (the server's or the network's)."""

    source: ImageSource
    error: Exception

    ok = False

    @property
    def reason(self) -> str:
        return str(self.error)

    @property
    def kind(self) -> str:
        return type(self.error).__name__


Result = Union[Detection, Failure]


def format_confidence(confidence: float) -> str:
    """``confidence`` as a percentage rounded down to 0.1 %: 0.99978 reads "99.9%", never "100.0%" (no
    model is that sure, and a verdict that claims it overclaims)."""
    return f"{math.floor(min(confidence, 0.999) * 1000) / 10:.1f}%"


def format_verdict(label: str, confidence: float) -> str:
    """What a person reads: ``"Fake – 97.3%"``."""
    return f"{label} – {format_confidence(confidence)}"


def region_record(region: RegionScore) -> dict:
    """A region as JSON: ``{"kind", "box": [x0, y0, x1, y1], "fake_probability"}``."""
    return {"kind": region.kind, "box": list(region.box), "fake_probability": round(region.fake_probability, 6)}


def provenance_record(provenance: "Optional[Provenance]") -> Optional[dict]:
    """A verdict's provenance as JSON (``Provenance.provenance_record()``), None when it was not read."""
    return None if provenance is None else provenance.provenance_record()
