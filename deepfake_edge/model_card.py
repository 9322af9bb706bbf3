"""The configuration that travels with a model file.

A :class:`ModelCard` is stored inside every checkpoint (safetensors metadata), next to every exported
ONNX file and in every Triton ``config.pbtxt`` (parameter ``model_card``). Training, export, the
client and the web app read input size, resize/crop rule, mean/std, labels and the decision threshold
from here; no other module re-types them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABELS = ("Real", "Fake")  # index 1 is the positive class: the model's single logit scores "Fake"


def __getattr__(name: str) -> Any:
    """``INPUT_NAME``/``OUTPUT_NAMES`` moved to :mod:`deepfake_edge.serving_contract`; still importable from here."""
    if name in ("INPUT_NAME", "OUTPUT_NAMES"):
        from deepfake_edge import serving_contract

        return getattr(serving_contract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to use a detector's weights.

    ``input_size`` is the square side the network sees; images are resized so their shorter side is
    ``resize_size`` and then centre-cropped to ``input_size``. ``threshold`` applies to the fake
    probability of one view and is calibrated on the validation split. ``image_threshold`` applies to a
    whole image's score in whole-image analysis (the highest of its regions' probabilities, regions.py) and
    is calibrated on whole validation photos; ``None`` until ``deepfake-edge calibrate`` has set it.
    ``video_rule`` names how a video's frame scores make its score (a key of
    ``deepfake_edge.tracks.VIDEO_RULES``) and ``video_threshold`` applies to that score in whole-image
    analysis; both ``None`` until calibrated on videos (then: rule "top3_mean" and the mode's threshold).
    ``video_threshold`` is set on short clips; ``video_length_thresholds``, (sampled frames, threshold) pairs
    in increasing frames, raise it for longer videos (:meth:`video_threshold_for`).
    ``copy_move_calibration`` is the (a, b) that turns a photo's copy-move support into a fake probability
    (deepfake_edge/copy_move.py), fitted on the training photos' copy-move pairs; ``None``: whole-image
    analysis runs no copy-move check.
    """

    arch: str
    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    labels: tuple[str, str] = LABELS
    threshold: float = 0.5
    image_threshold: float | None = None
    video_rule: str | None = None
    video_threshold: float | None = None
    video_length_thresholds: tuple[tuple[int, float], ...] | None = None
    copy_move_calibration: tuple[float, float] | None = None
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def label_for(self, fake_probability: float) -> str:
        """The class name for a fake probability under this card's threshold."""
        return self.labels[1] if fake_probability >= self.threshold else self.labels[0]

    def confidence_for(self, fake_probability: float) -> float:
        """How sure the model is of the predicted class (what a person reads as "Fake – 97.3%"), in [0.5, 1].

        The fake probability re-centred on the threshold, ``sigmoid(±(logit(p) - logit(threshold)))``:
        an image at the threshold reads 50 %, never "Real – 21.5%" under a threshold of 0.79. With a
        threshold of 0.5 it is the predicted class's probability.
        """
        fake_odds = fake_probability * (1.0 - self.threshold)
        real_odds = (1.0 - fake_probability) * self.threshold
        chosen = fake_odds if fake_probability >= self.threshold else real_odds
        return chosen / (fake_odds + real_odds) if fake_odds + real_odds > 0 else 1.0

    def for_mode(self, mode: str) -> "ModelCard":
        """This card with the threshold that applies in analysis ``mode`` ("whole" or "fast")."""
        if mode == "whole" and self.image_threshold is not None:
            return self.replace(threshold=self.image_threshold)
        return self

    def video_threshold_for(self, frames: int | None = None) -> float | None:
        """``video_threshold`` for a video of ``frames`` sampled frames (None: as long as the calibration clips);
        None when the card is not calibrated on videos. See :func:`length_threshold`."""
        if self.video_threshold is None:
            return None
        return length_threshold(self.video_threshold, self.video_length_thresholds, frames)

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model card fields: {sorted(unknown)}")
        values = dict(data)
        for name in ("mean", "std", "labels", "copy_move_calibration"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        if values.get("video_length_thresholds") is not None:
            values["video_length_thresholds"] = tuple((int(n), float(t)) for n, t in values["video_length_thresholds"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        return cls.from_dict(json.loads(text))


def length_threshold(threshold: float, table: Sequence[tuple[int, float]] | None, frames: int | None) -> float:
    """The video threshold for ``frames`` sampled frames: ``threshold`` (set on short clips) raised by ``table``.

    Every frame of an unedited video is one more chance to score high, so a threshold that holds false alarms
    on short clips lets more of them through on long videos. ``table`` holds (frames, threshold) pairs in
    increasing frames; between two entries the threshold is interpolated on log frames, beyond the last it is
    the last's. The result is never below ``threshold``; with no table or no ``frames`` it is ``threshold``.
    """
    if not table or frames is None or frames <= table[0][0]:
        return threshold
    for (n0, t0), (n1, t1) in zip(table, table[1:]):
        if frames <= n1:
            share = (math.log(frames) - math.log(n0)) / (math.log(n1) - math.log(n0))
            return max(threshold, t0 + share * (t1 - t0))
    return max(threshold, table[-1][1])
