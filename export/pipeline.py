"""Checkpoint -> checked ONNX variants -> Triton repositories, with a JSON summary of what was measured.

For each checkpoint: export FP32, check parity against PyTorch (fails the export if broken), then
optionally quantize to INT8 (sensitive units kept FP32: those of the checkpoint's INT8 recipe file when
its SHA-256 matches, else chosen on the validation split and written to that file; the result is
checked against FP32 on the test split: decisions and ROC-AUC) and convert to FP16, measure CPU speed,
and write everything into ``<out>/embedded`` and ``<out>/ngc``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepfake_edge.checkpoint import load_checkpoint
from deepfake_edge.export import evaluate, int8_recipe, repository
from deepfake_edge.export.calibration import DEFAULT_DATA_ROOT, ImageSet, load_image_set, synthesize_small_dataset
from deepfake_edge.export.graph import export_onnx, feature_map_size
from deepfake_edge.export.fallback import quantize_with_fallback
from deepfake_edge.export.quantize import QuantizationRecipe, convert_fp16, quantize_int8
from deepfake_edge.model_card import ModelCard
from deepfake_edge.serving_contract import model_name_for_arch

FP32_MAX_DELTA = 1e-4
INT8_MAX_AUC_DROP = 0.005
INT8_MIN_AGREEMENT = 0.99
SUMMARY_FILE = "export_summary.json"

log = logging.getLogger(__name__)


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
    # Of the evaluation images, how many (evenly spread) the FP32-vs-PyTorch parity and the FP16 comparison
    # use (None: all). PyTorch is the slow half of parity; 32 images catch a broken export as surely.
    parity_images: int | None = None
    check_int8: bool = True
    # Per-checkpoint INT8 recipe files (export/int8_recipe.py): reuse a matching one's FP32 units instead
    # of searching, and write the outcome of a search. ``search_fallback`` searches even when one matches.
    int8_recipe_files: bool = True
    search_fallback: bool = False
    speed: bool = True
    speed_batches: tuple[int, ...] = (1, 8, 32)
    cpu_instances: int = repository.DEFAULT_CPU_INSTANCES  # each gets cores / instances onnxruntime threads
    replace_incompatible: bool = False  # delete a model's old versions when the new one has other tensors
    recipe: QuantizationRecipe = field(default_factory=QuantizationRecipe)


def model_name_for(card: ModelCard) -> str:
    return model_name_for_arch(card.arch)


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
    seconds[stage] = round(seconds.get(stage, 0.0) + time.perf_counter() - started, 2)


def _spread(count: int, limit: int | None) -> np.ndarray:
    """Indices of ``limit`` of ``count`` items, evenly spread (the image sets come sorted by label)."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))


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
    parity_subset = _spread(len(evaluation.images), options.parity_images)
    parity_labels = evaluation.labels[parity_subset] if evaluation.labels is not None else None
    with _timed(seconds, "parity_fp32"):
        log.info("%s: FP32 ONNX vs PyTorch on %d images", name, len(parity_subset))
        reference = evaluate.torch_probabilities(model, card, evaluation.images[parity_subset])
        fp32_outputs = evaluate.onnx_outputs(fp32_path, evaluation.images)
    fp32_probabilities = fp32_outputs["fake_probability"].reshape(-1)
    parity = evaluate.compare(reference, fp32_probabilities[parity_subset], card.threshold,
                              parity_labels, tolerance=FP32_MAX_DELTA)
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
        int8_path = workdir / f"{name}_int8.onnx"
        report, fp32_units = _quantize_int8(checkpoint, name, options, fp32_path, int8_path, calibration, data,
                                            card, evaluation, fp32_probabilities, seconds)
        summary["int8_vs_fp32"] = report
        summary["files"]["int8"] = _file_entry(int8_path)
        if options.check_int8 and report["problems"]:
            raise ExportCheckError(f"{name}_int8 is outside the accuracy bound: {'; '.join(report['problems'])}")
        int8_card = card.replace(extra={**card.extra, "precision": "int8",
                                        "int8": {**options.recipe.describe(), "fp32_units": list(fp32_units)}})
        embedded.append(repository.ModelSpec(f"{name}_int8", int8_path, int8_card, heatmap_size, "int8"))
        ngc.append(embedded[-1])
    if options.fp16 and variants:
        with _timed(seconds, "convert_fp16"):
            fp16_path = convert_fp16(fp32_path, workdir / f"{name}_fp16.onnx")
        summary["files"]["fp16"] = _file_entry(fp16_path)
        with _timed(seconds, "evaluate_fp16"):
            # onnxruntime's CPU provider runs the FP16 graph too (slowly): enough to check its numbers.
            fp16_probabilities = evaluate.onnx_outputs(fp16_path, evaluation.images[parity_subset])
        summary["fp16_vs_fp32"] = evaluate.compare(fp32_probabilities[parity_subset],
                                                   fp16_probabilities["fake_probability"].reshape(-1),
                                                   card.threshold, parity_labels)
        fp16_card = card.replace(extra={**card.extra, "precision": "fp16"})
        # FP16 is for GPUs: onnxruntime's CPU provider has few FP16 kernels, so it goes to ngc/ only.
        ngc.append(repository.ModelSpec(f"{name}_fp16", fp16_path, fp16_card, heatmap_size, "fp16"))
    if options.speed:
        with _timed(seconds, "cpu_speed"):
            summary["cpu_speed"] = _speeds(summary["files"], card.input_size, options.speed_batches)
    return embedded, ngc, summary


def _quantize_int8(checkpoint: Path, name: str, options: ExportOptions, fp32_path: Path, int8_path: Path,
                   calibration: ImageSet, data: Path, card: ModelCard, evaluation: ImageSet,
                   fp32_probabilities: np.ndarray, seconds: dict) -> tuple[dict, tuple[str, ...]]:
    """Quantize, with the FP32 units of a matching recipe file or else searched; check INT8 vs FP32 on ``evaluation``.

    Returns the ``int8_vs_fp32`` report and the units kept FP32. Stored units that miss the bound here,
    having met it when they were chosen, are searched again; every search's result is written to the
    checkpoint's recipe file, with the bound it missed if it did.
    """
    recipe, description = options.recipe, options.recipe.describe()

    def checked(stage: str) -> dict:
        with _timed(seconds, "evaluate_int8"):
            probabilities = evaluate.onnx_outputs(int8_path, evaluation.images)["fake_probability"].reshape(-1)
        report = evaluate.compare(fp32_probabilities, probabilities, card.threshold, evaluation.labels)
        report.update(source=evaluation.source, calibration_images=int(len(calibration.images)),
                      calibration_source=calibration.source, recipe=description, problems=int8_problems(report))
        log.info("%s_int8 (%s): decisions agree with FP32 on %.2f%% of %d test images, ROC-AUC delta %s%s",
                 name, stage, 100 * report["decision_agreement"], report["images"], report["roc_auc_delta"],
                 f"; outside the bound: {'; '.join(report['problems'])}" if report["problems"] else "")
        return report

    use_files = recipe.fp32_fallback and options.int8_recipe_files
    stored, why = None, "FP32 fallback off" if not recipe.fp32_fallback else "recipe files off"
    if use_files:
        stored, why = (None, "searching as asked (--search-fallback)") if options.search_fallback \
            else int8_recipe.load(checkpoint, description)
    log.info("%s_int8: %s", name, why)
    if stored is not None:
        try:
            with _timed(seconds, "quantize_int8"):
                quantize_int8(fp32_path, int8_path, calibration.images, recipe, stored.fp32_units)
        except ValueError as error:  # units this graph does not have: the file is stale after all
            log.info("%s_int8: %s does not fit this graph (%s); searching", name, stored.path, error)
        else:
            report = checked(f"FP32 units from {stored.path}")
            report["fp32_fallback"] = {"fp32_units": list(stored.fp32_units), "recipe_file": str(stored.path)}
            if not report["problems"] or stored.missed_bound_when_written:
                return report, stored.fp32_units
            log.info("%s_int8: the FP32 units of %s miss the bound on these images; searching", name, stored.path)
    validation = None
    if recipe.fp32_fallback:
        with _timed(seconds, "load_validation_images"):
            validation = load_image_set(card, data, "validation", options.eval_images)
        log.info("%s_int8: searching the backbone units to keep FP32 (a few dozen quantizations)", name)
    with _timed(seconds, "quantize_int8"):
        fallback = quantize_with_fallback(
            fp32_path, int8_path, calibration.images, validation.images if validation else None,
            validation.labels if validation else None, card.threshold, recipe)
    report = checked("searched" if validation is not None else "all units INT8")
    if validation is not None:
        report["fp32_fallback"] = {**fallback.describe(), "validation_source": validation.source}
        if use_files:  # outside the bound too: a new search would choose the same units (the file says so)
            chosen = [t for t in fallback.trials if t["fp32_units"] == len(fallback.fp32_units)]
            try:
                path = int8_recipe.write(checkpoint, description, fallback.fp32_units,
                                         validation={**chosen[-1], "source": validation.source} if chosen else None,
                                         test=report, calibration_images=int(len(calibration.images)),
                                         calibration_source=calibration.source)
            except OSError as error:
                log.warning("%s_int8: could not write the recipe file: %s", name, error)
            else:
                report["fp32_fallback"]["recipe_file"] = str(path)
                log.info("%s_int8: wrote %s (commit it: the next export of this checkpoint skips the search)",
                         name, path)
    return report, fallback.fp32_units


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
