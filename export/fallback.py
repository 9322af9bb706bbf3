"""FP32 fallback for static INT8: keep the backbone units that quantization hurts most in FP32.

How much post-training INT8 costs depends on the checkpoint: EfficientNet's SiLU and squeeze-excite
blocks are quantization-hostile, and no single recipe kept the 112 px demo model within the bound
(docs/export.md). So the export measures instead of assuming a fixed exclusion list:

1. each unit (:func:`~deepfake_edge.export.quantize.backbone_units`) is quantized alone and ranked by
   the mean |Δ probability| it causes on the validation split;
2. the fewest top-ranked units are kept FP32 for which the whole INT8 graph meets the bound *with a
   margin* on the validation split (a bisection over the ranking, ~log2(units) quantizations).

The test split is not looked at here; the export checks the chosen graph on it afterwards.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from deepfake_edge.export.evaluate import compare, onnx_outputs
from deepfake_edge.export.quantize import (QuantizationRecipe, backbone_units, prepare, quantize_prepared,
                                           quantize_units, unit_nodes)

# Half the error the export's bound allows (99 % agreement, 0.005 ROC-AUC), so that a choice made on
# the validation split still holds on the test split.
SEARCH_MIN_AGREEMENT = 0.995
SEARCH_MAX_AUC_DROP = 0.0025


@dataclass(frozen=True)
class FallbackChoice:
    """The units kept FP32, each unit's sensitivity, and every evaluated candidate (for the summary)."""

    fp32_units: tuple[str, ...]
    sensitivity: dict[str, float]  # unit -> mean |Δ probability| on validation when quantized alone
    trials: list[dict]  # {"fp32_units": count, "decision_agreement", "roc_auc_delta"} per candidate

    def describe(self) -> dict:
        return {"fp32_units": list(self.fp32_units),
                "sensitivity": {unit: round(value, 5) for unit, value in self.sensitivity.items()},
                "trials": self.trials}


def _meets_search_margin(report: dict) -> bool:
    """Whether a validation ``compare`` report keeps within half the export's bound."""
    auc_delta = report["roc_auc_delta"]
    return (report["decision_agreement"] >= SEARCH_MIN_AGREEMENT
            and (auc_delta is None or auc_delta >= -SEARCH_MAX_AUC_DROP))


def choose_fp32_units(prepared: Path, calibration_images: np.ndarray, validation_images: np.ndarray,
                      validation_labels: np.ndarray | None, reference: np.ndarray, threshold: float,
                      recipe: QuantizationRecipe, workdir: Path) -> FallbackChoice:
    """Pick the units of the :func:`~deepfake_edge.export.quantize.prepare`-d graph to keep FP32.

    ``reference`` holds the FP32 graph's probabilities on ``validation_images``. Calibration runs once;
    later quantizations reuse its ranges (``workdir/ranges.json``).
    """
    units = backbone_units(onnx.load(str(prepared)))
    cache = workdir / "ranges.json"

    def quantized(fp32_nodes: tuple[str, ...]) -> dict:
        path = quantize_prepared(prepared, workdir / "candidate.onnx", calibration_images, recipe, cache, fp32_nodes)
        probabilities = onnx_outputs(path, validation_images)["fake_probability"].reshape(-1)
        return compare(reference, probabilities, threshold, validation_labels)

    trials: list[dict] = []

    def passes(order: list[str], count: int) -> bool:
        report = quantized(unit_nodes(units, order[:count]))
        trials.append({"fp32_units": count, "decision_agreement": report["decision_agreement"],
                       "roc_auc_delta": report["roc_auc_delta"]})
        return _meets_search_margin(report)

    # The all-INT8 candidate goes first: it also fills the range cache for every tensor.
    if passes([], 0):
        return FallbackChoice((), {}, trials)
    sensitivity = {unit: quantized(unit_nodes(units, [u for u in units if u != unit]))["mean_abs_delta_probability"]
                   for unit in units}
    order = sorted(units, key=lambda unit: -sensitivity[unit])
    # Bisection for the shortest passing prefix; keeping every unit FP32 is the FP32 graph and passes.
    failing, passing = 0, len(order)
    while passing - failing > 1:
        middle = (failing + passing) // 2
        if passes(order, middle):
            passing = middle
        else:
            failing = middle
    return FallbackChoice(tuple(order[:passing]), sensitivity, trials)


def quantize_with_fallback(fp32_path: Path, out_path: Path, calibration_images: np.ndarray,
                           validation_images: np.ndarray | None, validation_labels: np.ndarray | None,
                           threshold: float, recipe: QuantizationRecipe) -> FallbackChoice:
    """Quantize ``fp32_path`` into ``out_path``, searching the FP32 units first if ``recipe.fp32_fallback``.

    The validation images are needed only for the search. The ModelCard metadata is carried over.
    """
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        prepared = prepare(fp32_path, workdir / "prepared.onnx")
        choice = FallbackChoice((), {}, [])
        if recipe.fp32_fallback:
            if validation_images is None:
                raise ValueError("the FP32 fallback search needs validation images")
            reference = onnx_outputs(fp32_path, validation_images)["fake_probability"].reshape(-1)
            choice = choose_fp32_units(prepared, calibration_images, validation_images, validation_labels, reference,
                                       threshold, recipe, workdir)
        quantize_units(fp32_path, prepared, out_path, calibration_images, recipe, choice.fp32_units,
                       workdir / "ranges.json")
    return choice
