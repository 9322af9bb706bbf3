"""Checkpoint -> checked ONNX variants -> Triton repositories, with a JSON summary of what was measured.

For each checkpoint: export FP32, check parity against PyTorch (fails the export if broken), then
optionally quantize to INT8 (sensitive units kept FP32, chosen on the validation split; the result is
checked against FP32 on the test split: decisions and ROC-AUC) and convert to FP16, measure CPU speed,
and write everything into ``<out>/embedded`` and ``<out>/ngc``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepfake_edge.checkpoint import load_checkpoint
from deepfake_edge.export import evaluate, repository
from deepfake_edge.export.calibration import DEFAULT_DATA_ROOT, ImageSet, load_image_set, synthesize_small_dataset
from deepfake_edge.export.graph import export_onnx, feature_map_size
from deepfake_edge.export.fallback import quantize_with_fallback
from deepfake_edge.export.quantize import QuantizationRecipe, convert_fp16
from deepfake_edge.model_card import ModelCard

DEFAULT_NAMES = {"efficientnet_b0": "deepfake_b0", "small_cnn": "deepfake_cnn"}
FP32_MAX_DELTA = 1e-4
INT8_MAX_AUC_DROP = 0.005
INT8_MIN_AGREEMENT = 0.99
SUMMARY_FILE = "export_summary.json"


class ExportCheckError(RuntimeError):
    """An exported graph failed its parity or accuracy bound; nothing was written to the repository."""


@dataclass
class ExportOptions:
    out: Path = Path("model_repository")
    opset: int = 17
    int8: bool = False
    fp16: bool = False
    variants_for: tuple[str, ...] | None = None  # model names that get the INT8/FP16 variants (None: all)
    data: Path | None = None  # dataset root or image folder for parity/accuracy (its test split)
    calibration_data: Path | None = None  # dataset root or image folder for INT8 calibration (train split)
    calibration_images: int = 300
    eval_images: int = 400
    check_int8: bool = True
    speed: bool = True
    speed_batches: tuple[int, ...] = (1, 8, 32)
    cpu_instances: int = repository.DEFAULT_CPU_INSTANCES  # each gets cores / instances onnxruntime threads
    replace_incompatible: bool = False  # delete a model's old versions when the new one has other tensors
    recipe: QuantizationRecipe = field(default_factory=QuantizationRecipe)


def model_name_for(card: ModelCard) -> str:
    return DEFAULT_NAMES.get(card.arch, f"deepfake_{card.arch}")


def _file_entry(path: Path) -> dict:
    return {"path": str(path), "bytes": path.stat().st_size}


def int8_problems(report: dict) -> list[str]:
    """Why an INT8-vs-FP32 ``compare`` report misses the accuracy bound; empty when it meets it."""
    problems = []
    if report["decision_agreement"] < INT8_MIN_AGREEMENT:
        problems.append(f"decisions agree on {report['decision_agreement']:.2%} < {INT8_MIN_AGREEMENT:.0%}")
    if report["roc_auc_delta"] is not None and report["roc_auc_delta"] < -INT8_MAX_AUC_DROP:
        problems.append(f"ROC-AUC drops by {-report['roc_auc_delta']:.4f} > {INT8_MAX_AUC_DROP}")
    return problems


@contextmanager
def _timed(seconds: dict, stage: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds[stage] = round(time.perf_counter() - started, 2)


def export_checkpoint(checkpoint: Path, name: str, options: ExportOptions, workdir: Path, data: Path,
                      ) -> tuple[list[repository.ModelSpec], list[repository.ModelSpec], dict]:
    """Export and check one checkpoint against ``data``; returns (embedded specs, ngc specs, summary)."""
    seconds: dict[str, float] = {}
    model, card = load_checkpoint(checkpoint)
    heatmap_size = feature_map_size(model, card.input_size)
    with _timed(seconds, "export_fp32"):
        fp32_path = export_onnx(model, card, workdir / f"{name}.onnx", opset=options.opset)
    summary: dict = {"checkpoint": str(checkpoint), "arch": card.arch, "input_size": card.input_size,
                     "heatmap_size": list(heatmap_size), "opset": options.opset,
                     "files": {"fp32": _file_entry(fp32_path)}, "seconds": seconds}

    with _timed(seconds, "load_evaluation_images"):
        evaluation: ImageSet = load_image_set(card, data, "test", options.eval_images)
    with _timed(seconds, "parity_fp32"):
        reference = evaluate.torch_probabilities(model, card, evaluation.images)
        fp32_outputs = evaluate.onnx_outputs(fp32_path, evaluation.images)
    parity = evaluate.compare(reference, fp32_outputs["fake_probability"].reshape(-1), card.threshold,
                              evaluation.labels, tolerance=FP32_MAX_DELTA)
    parity["source"] = evaluation.source
    summary["parity_fp32_vs_pytorch"] = parity
    if parity["max_abs_delta_probability"] > FP32_MAX_DELTA or parity["decisions_differing_beyond_tolerance"]:
        raise ExportCheckError(f"{name}: FP32 ONNX differs from PyTorch: {json.dumps(parity)}")

    embedded = [repository.ModelSpec(name, fp32_path, card.replace(extra={**card.extra, "precision": "fp32"}),
                                     heatmap_size, "fp32")]
    ngc = list(embedded)
    variants = options.variants_for is None or name in options.variants_for
    if options.int8 and variants:
        with _timed(seconds, "load_calibration_images"):
            calibration = load_image_set(card, options.calibration_data or data, "train",
                                         options.calibration_images)
        validation = None
        if options.recipe.fp32_fallback:
            with _timed(seconds, "load_validation_images"):
                validation = load_image_set(card, data, "validation", options.eval_images)
        with _timed(seconds, "quantize_int8"):
            int8_path = workdir / f"{name}_int8.onnx"
            fallback = quantize_with_fallback(
                fp32_path, int8_path, calibration.images, validation.images if validation else None,
                validation.labels if validation else None, card.threshold, options.recipe)
        with _timed(seconds, "evaluate_int8"):
            int8_probabilities = evaluate.onnx_outputs(int8_path, evaluation.images)["fake_probability"].reshape(-1)
        report = evaluate.compare(fp32_outputs["fake_probability"].reshape(-1), int8_probabilities, card.threshold,
                                  evaluation.labels)
        report.update(calibration_images=int(len(calibration.images)), calibration_source=calibration.source,
                      recipe=options.recipe.describe(), problems=int8_problems(report))
        if validation is not None:
            report["fp32_fallback"] = {**fallback.describe(), "validation_source": validation.source}
        summary["int8_vs_fp32"] = report
        summary["files"]["int8"] = _file_entry(int8_path)
        if options.check_int8 and report["problems"]:
            raise ExportCheckError(f"{name}_int8 is outside the accuracy bound: {'; '.join(report['problems'])}")
        int8_card = card.replace(extra={**card.extra, "precision": "int8",
                                        "int8": {**options.recipe.describe(), "fp32_units": list(fallback.fp32_units)}})
        embedded.append(repository.ModelSpec(f"{name}_int8", int8_path, int8_card, heatmap_size, "int8"))
        ngc.append(embedded[-1])
    if options.fp16 and variants:
        with _timed(seconds, "convert_fp16"):
            fp16_path = convert_fp16(fp32_path, workdir / f"{name}_fp16.onnx")
        summary["files"]["fp16"] = _file_entry(fp16_path)
        with _timed(seconds, "evaluate_fp16"):
            # onnxruntime's CPU provider runs the FP16 graph too (slowly): enough to check its numbers.
            fp16_probabilities = evaluate.onnx_outputs(fp16_path, evaluation.images)["fake_probability"].reshape(-1)
        summary["fp16_vs_fp32"] = evaluate.compare(fp32_outputs["fake_probability"].reshape(-1), fp16_probabilities,
                                                   card.threshold, evaluation.labels)
        fp16_card = card.replace(extra={**card.extra, "precision": "fp16"})
        # FP16 is for GPUs: onnxruntime's CPU provider has few FP16 kernels, so it goes to ngc/ only.
        ngc.append(repository.ModelSpec(f"{name}_fp16", fp16_path, fp16_card, heatmap_size, "fp16"))
    if options.speed:
        with _timed(seconds, "cpu_speed"):
            summary["cpu_speed"] = _speeds(summary["files"], card.input_size, options.speed_batches)
    return embedded, ngc, summary


def _speeds(files: dict, input_size: int, batches: tuple[int, ...]) -> dict:
    speeds: dict = {"threads": evaluate.cpu_count(), "provider": "CPUExecutionProvider",
                    "optimization": "ORT_ENABLE_ALL",
                    "timing": "median of each round, best of 3 rounds, graphs taking turns"}
    speeds.update(evaluate.measure_speeds({precision: Path(files[precision]["path"]) for precision in ("fp32", "int8")
                                           if precision in files}, input_size, batches))
    if "int8" in speeds:
        speeds["int8_speedup"] = {batch: round(speeds["fp32"][batch]["ms_per_batch"]
                                               / speeds["int8"][batch]["ms_per_batch"], 2)
                                  for batch in speeds["fp32"]}
    return speeds


def run_export(checkpoints: list[Path], options: ExportOptions, names: list[str] | None = None) -> dict:
    """Export every checkpoint, then write both repositories; returns the summary (also written to disk)."""
    torch.set_num_threads(evaluate.cpu_count())
    names = names or [model_name_for(_card(path)) for path in checkpoints]
    if len(set(names)) != len(names):
        raise ValueError(f"two checkpoints would get the same model name: {names}; pass --name for each")
    summary: dict = {"repository": str(options.out), "models": {}}
    with tempfile.TemporaryDirectory(prefix="deepfake-edge-export-") as scratch:
        data = options.data or DEFAULT_DATA_ROOT
        if options.data is None and not DEFAULT_DATA_ROOT.is_dir():
            data = synthesize_small_dataset(Path(scratch) / "synth", options.calibration_images, options.eval_images,
                                            image_size=max(_card(path).resize_size for path in checkpoints))
        embedded, ngc = [], []
        for checkpoint, name in zip(checkpoints, names):
            model_embedded, model_ngc, summary["models"][name] = export_checkpoint(
                Path(checkpoint), name, options, Path(scratch), data)
            embedded += model_embedded
            ngc += model_ngc
        written = repository.write_repositories(options.out, embedded, ngc, cpu_instances=options.cpu_instances,
                                                replace_incompatible=options.replace_incompatible)
    summary["written"] = written
    _record_paths(summary, written)
    text = json.dumps(summary, indent=2, default=_json_default)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / SUMMARY_FILE).write_text(text + "\n")
    for version_dir in written[repository.EMBEDDED] + written[repository.NGC]:
        (Path(version_dir) / SUMMARY_FILE).write_text(text + "\n")
    return summary


def _record_paths(summary: dict, written: dict) -> None:
    """Point the summary's file entries at the repository copies instead of the deleted scratch files."""
    for name, model_summary in summary["models"].items():
        for precision, entry in model_summary["files"].items():
            model_name = name if precision == "fp32" else f"{name}_{precision}"
            target = repository.NGC if precision == "fp16" else repository.EMBEDDED
            version_dir = next(d for d in written[target] if Path(d).parent.name == model_name)
            entry["path"] = str(Path(version_dir) / "model.onnx")


def _card(path: Path) -> ModelCard:
    from deepfake_edge.checkpoint import read_card

    return read_card(path)


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)
