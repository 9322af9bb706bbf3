"""INT8 (CPU, onnxruntime static quantization) and FP16 (GPU) variants of an exported FP32 graph.

INT8 is *static* post-training quantization: activation ranges are calibrated once on real images
(dynamic quantization recomputes them per batch; its ConvInteger kernels ran ~15x slower than FP32
on the 2-core build VMs). Activations are UINT8 and weights INT8 per channel: onnxruntime's x86 kernels
have VNNI paths for U8S8, while S8S8 ran ~3x slower than FP32 on this CPU. The in-graph preprocessing (Cast/Div/Sub) and the CAM head stay
FP32: they are cheap, and quantizing the heatmap's normalisation would only add error. Which backbone
units (:func:`backbone_units`) also stay FP32 is measured per checkpoint by
:mod:`deepfake_edge.export.fallback`; the recipes tried are compared by :mod:`deepfake_edge.export.int8_sweep`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

# Images per calibration batch: onnxruntime keeps every activation of a batch in memory (~60 MB per
# 224 px image for B0), and histogram calibrators fold each batch in before the next (strided collection).
CALIBRATION_BATCH = 8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizationRecipe:
    """The knobs that trade INT8 speed against accuracy; the defaults are what the export ships."""

    quant_format: str = "QDQ"  # "QDQ" or "QOperator"
    per_channel: bool = True
    calibrate_method: str = "Percentile"  # onnxruntime CalibrationMethod name
    percentile: float = 99.999
    reduce_range: bool = False  # 7-bit weights: for CPUs without VNNI; costs accuracy here
    activation_symmetric: bool = False
    op_types: tuple[str, ...] = ("Conv", "Gemm", "MatMul", "Add", "Mul", "Sigmoid", "GlobalAveragePool")
    # Regular expressions (re.search) over node names; matching nodes stay FP32.
    exclude_name_patterns: tuple[str, ...] = field(default_factory=tuple)
    # Keep the backbone units that INT8 hurts most in FP32, chosen on the validation split
    # (deepfake_edge.export.fallback) until the accuracy bound holds there.
    fp32_fallback: bool = True

    def describe(self) -> dict:
        return {
            "format": self.quant_format,
            "per_channel": self.per_channel,
            "activations": "uint8" + (" symmetric" if self.activation_symmetric else ""),
            "weights": "int8" + (" reduced range" if self.reduce_range else ""),
            "calibration": self.calibrate_method
            + (f" {self.percentile}" if self.calibrate_method == "Percentile" else ""),
            "op_types": list(self.op_types),
            "excluded_patterns": list(self.exclude_name_patterns),
            "fp32_fallback": self.fp32_fallback,
        }


class _BatchReader:
    """onnxruntime CalibrationDataReader over an in-memory UINT8 array, with the strided-collection API."""

    def __init__(self, images: np.ndarray, input_name: str) -> None:
        self._batches = [{input_name: images[i : i + CALIBRATION_BATCH]}
                         for i in range(0, len(images), CALIBRATION_BATCH)]
        self._pending = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict | None:
        return next(self._pending, None)


def _head_and_preprocessing_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes outside the backbone: everything before the first Conv and after the last Conv."""
    names = [node.name for node in model.graph.node]
    conv_positions = [i for i, node in enumerate(model.graph.node) if node.op_type == "Conv"]
    if not conv_positions:
        return []
    return names[: conv_positions[0]] + names[conv_positions[-1] + 1 :]


def _spatial_means_as_global_pools(model: onnx.ModelProto) -> int:
    """Rewrite ``ReduceMean(axes=[2, 3], keepdims=1)`` (timm's squeeze-excite pooling) as GlobalAveragePool.

    Same arithmetic, but onnxruntime has a quantized GlobalAveragePool and no quantized ReduceMean, so
    the rewrite keeps each squeeze-excite block in INT8 instead of leaving it via DQ -> FP32 -> Q.
    """
    nodes, rewritten = [], 0
    for node in model.graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        spatial = sorted(attributes.get("axes", [])) in ([2, 3], [-2, -1]) and attributes.get("keepdims", 1) == 1
        if node.op_type == "ReduceMean" and len(node.input) == 1 and spatial:
            node = onnx.helper.make_node("GlobalAveragePool", list(node.input), list(node.output), name=node.name)
            rewritten += 1
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return rewritten


def backbone_units(prepared: onnx.ModelProto) -> dict[str, list[str]]:
    """The quantizable nodes grouped into units: a timm block (``blocks.3.1``) or a top-level module.

    Units are what the FP32 fallback keeps or quantizes as a whole; the in-graph preprocessing and
    the CAM head are no unit (they always stay FP32).
    """
    fixed = set(_head_and_preprocessing_nodes(prepared))
    units: dict[str, list[str]] = {}
    for node in prepared.graph.node:
        block = re.search(r"blocks\.\d+\.\d+", node.name)
        scopes = [part for part in node.name.split("/") if part]
        unit = block.group(0) if block else (scopes[0] if len(scopes) > 1 else None)
        if unit and node.name not in fixed:
            units.setdefault(unit, []).append(node.name)
    return units


def unit_nodes(units: dict[str, list[str]], selected: Iterable[str]) -> tuple[str, ...]:
    """The node names of the ``selected`` units; an unknown unit name is an error."""
    selected = list(selected)
    unknown = set(selected) - set(units)
    if unknown:
        raise ValueError(f"unknown units {sorted(unknown)}; the graph has {sorted(units)}")
    return tuple(name for unit in selected for name in units[unit])


def prepare(fp32_path: Path, prepared_path: Path) -> Path:
    """The graph the quantizer reads: shapes inferred, basic fusions, squeeze-excite means as pools."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(prepared_path), skip_symbolic_shape=False)
    model = onnx.load(str(prepared_path))
    if _spatial_means_as_global_pools(model):
        onnx.save(model, str(prepared_path))
    return prepared_path


def quantize_prepared(prepared_path: Path, out_path: Path, calibration_images: np.ndarray,
                      recipe: QuantizationRecipe, calibration_cache: Path | None = None,
                      fp32_nodes: tuple[str, ...] = ()) -> Path:
    """Statically quantize a :func:`prepare`-d graph; ``fp32_nodes`` stay FP32 besides the recipe's exclusions.

    ``calibration_cache`` (a JSON file) stores the activation ranges on first use and reuses them after,
    which makes trying exclusions cheap; it is only valid for the same graph, images, method and op types.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(prepared_path))
    input_name = model.graph.input[0].name
    excluded = set(_head_and_preprocessing_nodes(model)) | set(fp32_nodes)
    excluded |= {n.name for n in model.graph.node
                 if any(re.search(pattern, n.name) for pattern in recipe.exclude_name_patterns)}
    # onnxruntime's calibrators print progress to stdout, which carries the export's JSON summary.
    with _prints_logged():
        quantize_static(
            str(prepared_path),
            str(out_path),
            _BatchReader(calibration_images, input_name),
            quant_format=QuantFormat[recipe.quant_format],
            op_types_to_quantize=list(recipe.op_types),
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(excluded),
            calibrate_method=CalibrationMethod[recipe.calibrate_method],
            calibration_cache_path=calibration_cache,
            extra_options={
                "ActivationSymmetric": recipe.activation_symmetric,
                "CalibPercentile": recipe.percentile,
                "CalibTensorRangeSymmetric": False,
                "CalibStridedMinMax": 1,  # fold in one batch at a time: bounded memory for any image count
            },
        )
    return out_path


def quantize_units(fp32_path: Path, prepared_path: Path, out_path: Path, calibration_images: np.ndarray,
                   recipe: QuantizationRecipe, fp32_units: tuple[str, ...] = (),
                   calibration_cache: Path | None = None) -> Path:
    """Quantize ``prepared_path`` (made by :func:`prepare` from ``fp32_path``) into ``out_path`` with the
    backbone units ``fp32_units`` (names from :func:`backbone_units`) kept FP32; carries the ModelCard over."""
    nodes = unit_nodes(backbone_units(onnx.load(str(prepared_path))), fp32_units)
    quantize_prepared(prepared_path, out_path, calibration_images, recipe, calibration_cache, nodes)
    copy_metadata(fp32_path, out_path)
    return out_path


def quantize_int8(fp32_path: Path, out_path: Path, calibration_images: np.ndarray,
                  recipe: QuantizationRecipe = QuantizationRecipe(), fp32_units: tuple[str, ...] = ()) -> Path:
    """Statically quantize ``fp32_path`` into ``out_path``, calibrated on UINT8 (N, 3, H, W) images.

    ``fp32_units`` stay FP32; the search that picks them is
    :func:`deepfake_edge.export.fallback.choose_fp32_units`.
    """
    with tempfile.TemporaryDirectory() as scratch:
        prepared = prepare(fp32_path, Path(scratch) / "prepared.onnx")
        return quantize_units(fp32_path, prepared, out_path, calibration_images, recipe, fp32_units)


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    """FP16 weights and compute for GPU; the UINT8 input and FP32 outputs are kept as the contract says.

    onnxconverter-common mistypes two spots of this graph, so they are prepared first: the input Cast
    (UINT8 -> FLOAT) stays FP32 with a converter-inserted Cast to FP16 after it, and a graph output that
    other nodes also consume (``logit`` feeds the sigmoid) gets an Identity so its FP32 copy is a leaf.
    """
    from onnxconverter_common import float16

    model = _outputs_as_leaves(onnx.load(str(fp32_path)))
    converted = float16.convert_float_to_float16(
        model, keep_io_types=True, op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "Cast"]
    )
    onnx.checker.check_model(converted, full_check=True)
    onnx.save(converted, str(out_path))
    return out_path


def _outputs_as_leaves(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename graph outputs that feed other nodes; an Identity re-exposes them under their public name."""
    consumed = {name for node in model.graph.node for name in node.input}
    for output in model.graph.output:
        if output.name not in consumed:
            continue
        internal = f"{output.name}_internal"
        for node in model.graph.node:
            node.output[:] = [internal if name == output.name else name for name in node.output]
            node.input[:] = [internal if name == output.name else name for name in node.input]
        model.graph.node.append(onnx.helper.make_node("Identity", [internal], [output.name],
                                                      name=f"{output.name}_leaf"))
    return model


def copy_metadata(source: Path, target: Path) -> None:
    """Replace ``target``'s ONNX metadata (the ModelCard) with ``source``'s."""
    metadata = onnx.load(str(source), load_external_data=False).metadata_props
    model = onnx.load(str(target))
    del model.metadata_props[:]
    model.metadata_props.extend(metadata)
    onnx.save(model, str(target))


class _LogLines(io.TextIOBase):
    """A text stream that logs each line written to it (DEBUG records of this module)."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if line.strip():
                log.debug("%s", line)
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            log.debug("%s", self._pending)
        self._pending = ""


@contextlib.contextmanager
def _prints_logged() -> Iterator[None]:
    """Log what Python code prints to stdout meanwhile instead of writing it there."""
    stream = _LogLines()
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        stream.flush()
