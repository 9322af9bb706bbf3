"""What the client returns: a :class:`Detection` per classified image, a :class:`Failure` per input that
could not be classified. ``detect_many`` returns exactly one of the two per input, in input order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from deepfake_edge.preprocessing import ImageSource


@dataclass(frozen=True)
class Detection:
    """The server's verdict on one image.

    ``label`` and ``confidence`` come from the served model card's labels and threshold
    (``confidence``, in [0.5, 1], is the fake probability re-centred so the threshold reads 50 %; see
    ``ModelCard.confidence_for``). ``heatmap`` (float32 [h, w] in [0, 1], covering the
    centre crop the model saw) is present only when requested.
    """

    source: ImageSource
    label: str
    confidence: float
    fake_probability: float
    logit: float
    model: str
    model_version: str
    heatmap: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    ok = True


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


def describe_source(source: Any) -> str:
    """A short printable name for a source (paths as given; in-memory inputs by type and size)."""
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if hasattr(source, "size") and hasattr(source, "mode"):
        return f"<PIL image {source.size[0]}x{source.size[1]} {source.mode}>"
    return str(getattr(source, "name", source))
