"""Measure INT8 quantization recipes against FP32: the table in docs/export.md comes from here.

    python -m deepfake_edge.export.int8_sweep [CHECKPOINT] [--data data/synth] [--json PATH]

Every configuration is calibrated on the train split and measured on the test split exactly as
``deepfake-edge export`` measures its INT8 model (decision agreement with FP32, ROC-AUC delta), plus
images/s at one batch size on this CPU (threads: the cores this process may use, so run it under
``taskset -c N`` for a single-thread figure). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from deepfake_edge.checkpoint import load_checkpoint
from deepfake_edge.cli import log_to_terminal
from deepfake_edge.export import evaluate
from deepfake_edge.export.calibration import DEFAULT_DATA_ROOT, load_image_set
from deepfake_edge.export.commands import DEMO_CHECKPOINTS
from deepfake_edge.export.fallback import quantize_with_fallback
from deepfake_edge.export.graph import export_onnx
from deepfake_edge.export.pipeline import int8_problems
from deepfake_edge.export.quantize import QuantizationRecipe, prepare, quantize_prepared

log = logging.getLogger(__name__)

DEFAULT = QuantizationRecipe()
ALL_INT8 = dataclasses.replace(DEFAULT, fp32_fallback=False)
STEM = r"^/conv_stem/|^/bn1/"
# (label, recipe, calibration-image multiplier); the last row is the export's default. Entropy
# calibration is left out: onnxruntime's histogram gains bins whenever a batch widens the range, and on
# the demo B0 of commit 39ca722 its threshold search had not finished after 13 minutes.
CONFIGURATIONS: tuple[tuple[str, QuantizationRecipe, int], ...] = (
    ("all INT8: QDQ, per-channel, Percentile 99.999 (previous default)", ALL_INT8, 1),
    ("all INT8, MinMax calibration", dataclasses.replace(ALL_INT8, calibrate_method="MinMax"), 1),
    ("all INT8, Percentile 99.99", dataclasses.replace(ALL_INT8, percentile=99.99), 1),
    ("all INT8, 2x calibration images", ALL_INT8, 2),
    ("all INT8, per-tensor weights", dataclasses.replace(ALL_INT8, per_channel=False), 1),
    ("all INT8, reduce_range (7-bit weights)", dataclasses.replace(ALL_INT8, reduce_range=True), 1),
    ("all INT8, symmetric activations", dataclasses.replace(ALL_INT8, activation_symmetric=True), 1),
    ("all INT8, QOperator format", dataclasses.replace(ALL_INT8, quant_format="QOperator"), 1),
    ("SiLU and squeeze-excite gates FP32 (Sigmoid/Mul not quantized)",
     dataclasses.replace(ALL_INT8, op_types=tuple(t for t in ALL_INT8.op_types if t not in ("Sigmoid", "Mul"))), 1),
    ("squeeze-excite blocks FP32", dataclasses.replace(ALL_INT8, exclude_name_patterns=(r"/se/",)), 1),
    ("stem FP32", dataclasses.replace(ALL_INT8, exclude_name_patterns=(STEM,)), 1),
    ("stem + first block FP32", dataclasses.replace(ALL_INT8, exclude_name_patterns=(STEM, r"blocks\.0\.0/")), 1),
    ("FP32 fallback for the most sensitive units, chosen on validation (default)", DEFAULT, 1),
)


def sweep(checkpoint: Path, data: Path, calibration_images: int, eval_images: int, batch: int) -> dict:
    """Quantize with every configuration; returns FP32 speed and one row per configuration."""
    model, card = load_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory(prefix="deepfake-edge-int8-sweep-") as scratch:
        workdir = Path(scratch)
        fp32_path = export_onnx(model, card, workdir / "fp32.onnx")
        prepared = prepare(fp32_path, workdir / "prepared.onnx")
        test = load_image_set(card, data, "test", eval_images)
        validation = load_image_set(card, data, "validation", eval_images)
        calibration = {n: load_image_set(card, data, "train", n * calibration_images).images
                       for n in sorted({multiple for _, _, multiple in CONFIGURATIONS})}
        reference = evaluate.onnx_outputs(fp32_path, test.images)["fake_probability"].reshape(-1)
        result = {"checkpoint": str(checkpoint), "test_source": test.source, "threads": evaluate.cpu_count(),
                  "batch": batch, "rows": []}
        for label, recipe, multiple in CONFIGURATIONS:
            int8_path, fp32_units = workdir / "int8.onnx", None
            images = calibration[multiple]
            if recipe.fp32_fallback:
                choice = quantize_with_fallback(fp32_path, int8_path, images, validation.images, validation.labels,
                                                card.threshold, recipe)
                fp32_units = list(choice.fp32_units)
            else:
                # Ranges depend on the method and the quantized op types, not on exclusions or formats.
                key = f"{recipe.calibrate_method}-{recipe.percentile}-{'.'.join(recipe.op_types)}-{len(images)}"
                quantize_prepared(prepared, int8_path, images, recipe, workdir / f"{key}.json")
            probabilities = evaluate.onnx_outputs(int8_path, test.images)["fake_probability"].reshape(-1)
            report = evaluate.compare(reference, probabilities, card.threshold, test.labels)
            # FP32 is timed again beside every candidate: the load on a shared machine drifts over a sweep.
            speed = evaluate.measure_speeds({"fp32": fp32_path, "int8": int8_path}, card.input_size, (batch,))
            result["rows"].append({
                "configuration": label, "recipe": recipe.describe(), "calibration_images": len(images),
                "fp32_units": fp32_units, "decision_agreement": report["decision_agreement"],
                "decisions_differing": report["decisions_differing"], "images": report["images"],
                "roc_auc_delta": report["roc_auc_delta"], "within_bound": not int8_problems(report),
                "images_per_s": speed["int8"][str(batch)]["images_per_s"],
                "fp32_images_per_s": speed["fp32"][str(batch)]["images_per_s"],
            })
            log.info("%s: %s", label, json.dumps(result["rows"][-1]["decision_agreement"]))
    return result


def markdown(result: dict) -> str:
    """The sweep as a Markdown table; each row's FP32 speed was measured in the same rounds as its INT8."""
    lines = [f"| configuration | decisions agreeing with FP32 | ROC-AUC Δ | within bound | INT8 / FP32 images/s at "
             f"batch {result['batch']}, {result['threads']} thread(s) | speed-up |",
             "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        units = f" (FP32: {', '.join(row['fp32_units'])})" if row["fp32_units"] else ""
        auc = "n/a" if row["roc_auc_delta"] is None else f"{row['roc_auc_delta']:+.4f}"
        lines.append(f"| {row['configuration']}{units} | {row['decision_agreement']:.2%} "
                     f"({row['decisions_differing']}/{row['images']} differ) | {auc} | "
                     f"{'yes' if row['within_bound'] else 'no'} | {row['images_per_s']:.0f} / "
                     f"{row['fp32_images_per_s']:.0f} | {row['images_per_s'] / row['fp32_images_per_s']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, default=DEMO_CHECKPOINTS[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_ROOT, help="dataset root with train/validation/test")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--eval-images", type=int, default=400, help="validation and test images each")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    log_to_terminal()
    result = sweep(args.checkpoint, args.data, args.calibration_images, args.eval_images, args.batch)
    if args.json:
        text = json.dumps(result, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
        args.json.write_text(text + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
