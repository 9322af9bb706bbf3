"""Write exported ONNX files into Triton model repositories: ``embedded/`` and ``ngc/``.

``embedded/`` targets the tritonserver inside the nvidia-pytriton wheel, which has only the Python
backend: each model is ``backend: "python"`` with :mod:`deepfake_edge.export.triton_model` as its
``model.py`` running onnxruntime. ``ngc/`` targets the NGC Triton container on GPU: ``platform:
"onnxruntime_onnx"`` with the TensorRT execution accelerator. Beside the FP32 detector ``deepfake_b0``,
``embedded/`` also gets the encoded-image models (:func:`write_image_models`): the ``deepfake_image``
ensemble and its decoding step ``deepfake_image_decode`` (:mod:`deepfake_edge.export.triton_image_model`),
and ``deepfake_image_whole`` (:mod:`deepfake_edge.export.triton_whole_image_model`: whole-image analysis);
``ngc/`` does not, as the stock NGC image lacks the project's package (docs/encoded_images.md).

Configs are built as ``ModelConfig`` protobuf messages (Triton's own schema, shipped in tritonclient)
and written with ``text_format``, so a misspelt field fails here, not at server start. Every export
adds a version folder ``N+1``; the version policy keeps the latest two loaded, so a re-export rolls
forward while clients pinned to the previous version keep working.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from deepfake_edge.model_card import ModelCard
from deepfake_edge.serving_contract import (
    DECODE_MODEL,
    HEATMAP_OUTPUT,
    IMAGE_BYTES_INPUT,
    IMAGE_MODEL,
    IMAGE_MODEL_DETECTOR,
    INPUT_NAME,
    LOGIT_OUTPUT,
    PROBABILITY_OUTPUT,
    VERDICT_OUTPUT,
    WHOLE_IMAGE_MODEL,
    latest_version_dir,
    model_versions,
)

log = logging.getLogger(__name__)

existing_versions = model_versions  # the serving contract's version lookup, under this module's older name

EMBEDDED = "embedded"
NGC = "ngc"
MAX_BATCH_SIZE = 32
PREFERRED_BATCH_SIZES = (8, 16, 32)
# Requests queue up behind a busy instance anyway, so waiting buys no larger batches; measured with
# benchmarks/: 2000 us added 2.0 ms to every request at concurrency 1 and left batches at 16 unchanged.
MAX_QUEUE_DELAY_US = 100
VERSIONS_KEPT = 2
LABELS_FILE = "labels.txt"
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_model.py")
IMAGE_MODEL_SOURCE = Path(__file__).with_name("triton_image_model.py")
WHOLE_IMAGE_MODEL_SOURCE = Path(__file__).with_name("triton_whole_image_model.py")
# A file is ~26 regions (~0.3 s of analysis on one core): 8 per request bounds one execution to seconds.
WHOLE_IMAGE_MAX_BATCH_SIZE = 8
IMAGE_MODEL_VERSION = "1"  # stateless decoding: one version, rewritten by each export


@dataclass(frozen=True)
class ModelSpec:
    """One Triton model to write: its name, ONNX file, card and heatmap size."""

    name: str
    onnx_path: Path
    card: ModelCard
    heatmap_size: tuple[int, int]
    precision: str  # "fp32", "int8" or "fp16": selects the TensorRT precision in the ngc config


def _outputs(heatmap_size: tuple[int, int]) -> list[dict]:
    return [
        # label_filename: the single element of fake_probability scores labels.txt's only class, "Fake".
        {"name": PROBABILITY_OUTPUT, "data_type": "TYPE_FP32", "dims": [1], "label_filename": LABELS_FILE},
        {"name": LOGIT_OUTPUT, "data_type": "TYPE_FP32", "dims": [1]},
        {"name": HEATMAP_OUTPUT, "data_type": "TYPE_FP32", "dims": list(heatmap_size)},
    ]


def _io(card: ModelCard, heatmap_size: tuple[int, int]) -> dict:
    side = card.input_size
    return {"input": [{"name": INPUT_NAME, "data_type": "TYPE_UINT8", "dims": [3, side, side]}],
            "output": _outputs(heatmap_size)}


def _warmup(card: ModelCard) -> list[dict]:
    dims = [3, card.input_size, card.input_size]
    return [
        {"name": "zeros_batch_1", "batch_size": 1,
         "inputs": {INPUT_NAME: {"data_type": "TYPE_UINT8", "dims": dims, "zero_data": True}}},
        {"name": f"random_batch_{MAX_BATCH_SIZE}", "batch_size": MAX_BATCH_SIZE,
         "inputs": {INPUT_NAME: {"data_type": "TYPE_UINT8", "dims": dims, "random_data": True}}},
    ]


def _common(spec: ModelSpec) -> dict:
    return {
        "name": spec.name,
        "max_batch_size": MAX_BATCH_SIZE,
        **_io(spec.card, spec.heatmap_size),
        "version_policy": {"latest": {"num_versions": VERSIONS_KEPT}},
        "dynamic_batching": {
            "preferred_batch_size": list(PREFERRED_BATCH_SIZES),
            "max_queue_delay_microseconds": MAX_QUEUE_DELAY_US,
        },
        "model_warmup": _warmup(spec.card),
        "parameters": {"model_card": {"string_value": spec.card.to_json()}},
    }


# Two single-threaded instances beat one two-threaded instance on the 2-core build VM: perf_analyzer,
# c=16/32, interleaved A/B, idle: 490-508 vs 360-411 images/s (docs/benchmarks.md). One batch runs while
# the other instance's batch is gathered and its request IPC handled, instead of both cores waiting.
DEFAULT_CPU_INSTANCES = 2


def embedded_config(spec: ModelSpec, instances: int = DEFAULT_CPU_INSTANCES,
                    intra_op_threads: int = 0) -> model_config_pb2.ModelConfig:
    """Python-backend config; ``intra_op_threads=0`` lets model.py use cores / instances."""
    config = _common(spec)
    config["backend"] = "python"
    config["instance_group"] = [{"count": instances, "kind": "KIND_CPU"}]
    config["parameters"].update(
        {
            "execution_provider": {"string_value": "auto"},
            "intra_op_threads": {"string_value": str(intra_op_threads)},
        }
    )
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def ngc_config(spec: ModelSpec, instances: int = 1) -> model_config_pb2.ModelConfig:
    """onnxruntime_onnx config for the NGC container: TensorRT accelerator, GPU instances."""
    config = _common(spec)
    config["platform"] = "onnxruntime_onnx"
    config["instance_group"] = [{"count": instances, "kind": "KIND_GPU"}]
    side = spec.card.input_size

    def shape(batch: int) -> str:
        return f"{INPUT_NAME}:{batch}x3x{side}x{side}"

    if spec.precision == "fp16":
        # An FP16 graph needs no TensorRT precision flag; the CUDA provider runs it as is.
        accelerator = {"name": "cuda", "parameters": {"cudnn_conv_use_max_workspace": "1"}}
    else:
        trt_parameters = {
            # TensorRT builds FP16 kernels from the FP32 graph; a QDQ graph runs INT8 where it has Q/DQ pairs.
            "precision_mode": "INT8" if spec.precision == "int8" else "FP16",
            "max_workspace_size_bytes": str(1 << 30),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": f"/tmp/trt_cache/{spec.name}",
            # One optimisation profile covering every batch the dynamic batcher can form: no rebuilds.
            "trt_profile_min_shapes": shape(1),
            "trt_profile_opt_shapes": shape(PREFERRED_BATCH_SIZES[1]),
            "trt_profile_max_shapes": shape(MAX_BATCH_SIZE),
            "trt_cuda_graph_enable": "1",
        }
        accelerator = {"name": "tensorrt", "parameters": trt_parameters}
    config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [accelerator]}}
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


# -- the encoded-image models (docs/encoded_images.md) ---------------------------------------------------------
_IMAGE_BYTES = {"name": IMAGE_BYTES_INPUT, "data_type": "TYPE_STRING", "dims": [1]}  # one encoded file per item


def decode_config(card: ModelCard, instances: int = DEFAULT_CPU_INSTANCES) -> model_config_pb2.ModelConfig:
    """``deepfake_image_decode``: encoded files in, the detector's UINT8 rows out (Python backend)."""
    side = card.input_size
    config = {
        "name": DECODE_MODEL, "backend": "python", "max_batch_size": MAX_BATCH_SIZE,
        "input": [_IMAGE_BYTES],
        "output": [{"name": INPUT_NAME, "data_type": "TYPE_UINT8", "dims": [3, side, side]}],
        # Decoding costs the same per file in any batch: batching only saves IPC, so no preferred sizes.
        "dynamic_batching": {"max_queue_delay_microseconds": MAX_QUEUE_DELAY_US},
        # As many instances as the detector: each decodes one file at a time, on its own core.
        "instance_group": [{"count": instances, "kind": "KIND_CPU"}],
        # The card tells model.py the input size, resize and interpolation (and clients the threshold).
        "parameters": {"model_card": {"string_value": card.to_json()}},
    }
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def image_ensemble_config(card: ModelCard, heatmap_size: tuple[int, int],
                          detector: str = IMAGE_MODEL_DETECTOR) -> model_config_pb2.ModelConfig:
    """``deepfake_image``: the ensemble decode -> ``detector``, with the detector's outputs."""
    outputs = _outputs(heatmap_size)
    config = {
        "name": IMAGE_MODEL, "platform": "ensemble", "max_batch_size": MAX_BATCH_SIZE,
        "input": [_IMAGE_BYTES], "output": outputs,
        "ensemble_scheduling": {"step": [
            {"model_name": DECODE_MODEL, "model_version": -1,
             "input_map": {IMAGE_BYTES_INPUT: IMAGE_BYTES_INPUT}, "output_map": {INPUT_NAME: INPUT_NAME}},
            # model_version -1: the detector's latest version, so a re-export rolls this model forward too.
            {"model_name": detector, "model_version": -1, "input_map": {INPUT_NAME: INPUT_NAME},
             "output_map": {output["name"]: output["name"] for output in outputs}},
        ]},
        "parameters": {"model_card": {"string_value": card.to_json()}},
    }
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def whole_image_config(card: ModelCard, heatmap_size: tuple[int, int], instances: int = DEFAULT_CPU_INSTANCES,
                       detector: str = IMAGE_MODEL_DETECTOR) -> model_config_pb2.ModelConfig:
    """``deepfake_image_whole``: encoded files in, whole-image analysis with ``detector`` (BLS) out."""
    config = {
        "name": WHOLE_IMAGE_MODEL, "backend": "python", "max_batch_size": WHOLE_IMAGE_MAX_BATCH_SIZE,
        "input": [_IMAGE_BYTES],
        "output": _outputs(heatmap_size) + [{"name": VERDICT_OUTPUT, "data_type": "TYPE_STRING", "dims": [1]}],
        # Analysis costs the same per file in any batch; batching pools the files' rows into fewer detector calls.
        "dynamic_batching": {"max_queue_delay_microseconds": MAX_QUEUE_DELAY_US},
        # Each instance analyses one file at a time on one core while the other's rows are being scored.
        "instance_group": [{"count": instances, "kind": "KIND_CPU"}],
        "parameters": {"model_card": {"string_value": card.to_json()}, "detector": {"string_value": detector}},
    }
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def _write_config(model_dir: Path, config: model_config_pb2.ModelConfig) -> None:
    # Written atomically: a concurrently (re)loading server never sees half a config.
    staging = model_dir / "config.pbtxt.tmp"
    staging.write_text(text_format.MessageToString(config))
    staging.replace(model_dir / "config.pbtxt")


# The model.py of each encoded-image model that has one (the ensemble has none).
IMAGE_MODEL_SOURCES = {DECODE_MODEL: IMAGE_MODEL_SOURCE, WHOLE_IMAGE_MODEL: WHOLE_IMAGE_MODEL_SOURCE}


def write_image_models(root: Path, card: ModelCard, heatmap_size: tuple[int, int],
                       instances: int = DEFAULT_CPU_INSTANCES) -> list[str]:
    """(Re)write ``deepfake_image``, ``deepfake_image_decode`` and ``deepfake_image_whole`` under ``root`` for
    the detector with ``card`` and ``heatmap_size``; returns their version directories."""
    written = []
    for name, config in ((DECODE_MODEL, decode_config(card, instances)),
                         (IMAGE_MODEL, image_ensemble_config(card, heatmap_size)),
                         (WHOLE_IMAGE_MODEL, whole_image_config(card, heatmap_size, instances))):
        version_dir = root / name / IMAGE_MODEL_VERSION
        version_dir.mkdir(parents=True, exist_ok=True)  # an ensemble needs its (empty) version folder too
        if name in IMAGE_MODEL_SOURCES:
            shutil.copyfile(IMAGE_MODEL_SOURCES[name], version_dir / "model.py")
        if name != DECODE_MODEL:  # the models whose fake_probability names labels.txt
            (root / name / LABELS_FILE).write_text(card.labels[1] + "\n")
        _write_config(root / name, config)
        written.append(str(version_dir))
    return written


def image_models_current(root: Path) -> bool:
    """Whether ``root`` holds every encoded-image model, each model.py this version's."""
    model_pys = {root / name / IMAGE_MODEL_VERSION / "model.py": source for name, source in IMAGE_MODEL_SOURCES.items()}
    return (all((root / name / "config.pbtxt").is_file() for name in (IMAGE_MODEL, *IMAGE_MODEL_SOURCES))
            and all(path.is_file() and path.read_bytes() == source.read_bytes() for path, source in model_pys.items()))


def write_image_models_for(root: Path, detector: str = IMAGE_MODEL_DETECTOR,
                           instances: int = DEFAULT_CPU_INSTANCES) -> list[str]:
    """:func:`write_image_models` for the ``detector`` already in ``root``, read from its config.pbtxt."""
    config = text_format.Parse((root / detector / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    card = ModelCard.from_json(config.parameters["model_card"].string_value)
    [heatmap] = [output for output in config.output if output.name == HEATMAP_OUTPUT]
    return write_image_models(root, card, tuple(heatmap.dims), instances)


def _is_compatible(model_dir: Path, new: model_config_pb2.ModelConfig) -> bool:
    """Whether the versions already in ``model_dir`` have the tensors of ``new`` (true when there are none)."""
    config_path = model_dir / "config.pbtxt"
    if not model_versions(model_dir) or not config_path.is_file():
        return True
    old = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    return list(old.input) == list(new.input) and list(old.output) == list(new.output)


def write_model(root: Path, spec: ModelSpec, config: model_config_pb2.ModelConfig, python_backend: bool,
                replace_incompatible: bool = False) -> Path:
    """Add the next version of ``spec`` under ``root/<name>/`` and (re)write its config; returns the version dir.

    Versions share one config, so a version with other tensors (e.g. another input size) cannot join them:
    that is an error, or with ``replace_incompatible`` the old versions are deleted and numbering restarts.
    """
    model_dir = root / spec.name
    if not _is_compatible(model_dir, config):
        if not replace_incompatible:
            raise ValueError(f"{model_dir}: the new export's inputs/outputs differ from the existing versions "
                             f"(e.g. another input size); export into a fresh --out directory instead")
        log.warning("%s: the new export's inputs/outputs differ from the existing versions; replacing them",
                    model_dir)
        shutil.rmtree(model_dir)
    version = max(model_versions(model_dir), default=0) + 1
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True)
    shutil.copyfile(spec.onnx_path, version_dir / "model.onnx")
    if python_backend:
        shutil.copyfile(PYTHON_MODEL_SOURCE, version_dir / "model.py")
    (model_dir / LABELS_FILE).write_text(spec.card.labels[1] + "\n")
    _write_config(model_dir, config)  # last: the version folder is complete before the config names it
    return version_dir


def write_repositories(out: Path, specs: list[ModelSpec], ngc_specs: list[ModelSpec] | None = None,
                       cpu_instances: int = DEFAULT_CPU_INSTANCES,
                       replace_incompatible: bool = False) -> dict[str, list[str]]:
    """Write ``specs`` into ``out/embedded`` and ``ngc_specs`` (default: ``specs``) into ``out/ngc``.

    When ``specs`` hold the FP32 detector ``deepfake_b0``, ``out/embedded`` also gets the encoded-image
    models for it (:func:`write_image_models`). Returns the version directories written, per target.
    ``replace_incompatible``: see ``write_model``.
    """
    written: dict[str, list[str]] = {EMBEDDED: [], NGC: []}
    for spec in specs:
        config = embedded_config(spec, instances=cpu_instances)
        version_dir = write_model(out / EMBEDDED, spec, config, python_backend=True,
                                  replace_incompatible=replace_incompatible)
        written[EMBEDDED].append(str(version_dir))
        if spec.name == IMAGE_MODEL_DETECTOR:
            written[EMBEDDED] += write_image_models(out / EMBEDDED, spec.card, spec.heatmap_size, cpu_instances)
    for spec in ngc_specs if ngc_specs is not None else specs:
        version_dir = write_model(out / NGC, spec, ngc_config(spec), python_backend=False,
                                  replace_incompatible=replace_incompatible)
        written[NGC].append(str(version_dir))
    return written


def is_complete(root: Path, model_names: tuple[str, ...], sources: tuple[Path, ...] = ()) -> bool:
    """True when every model has a config and a latest version holding model.onnx and model.py, and
    that model.onnx is not older than any of ``sources`` (the checkpoints it is exported from), so a
    retrained or pulled checkpoint is never shadowed by an old export."""
    newest_source = max((path.stat().st_mtime for path in sources if path.is_file()), default=0.0)
    for name in model_names:
        latest = latest_version_dir(root / name)
        if latest is None or not (root / name / "config.pbtxt").is_file():
            return False
        if not (latest / "model.onnx").is_file() or not (latest / "model.py").is_file():
            return False
        if (latest / "model.onnx").stat().st_mtime < newest_source:
            return False
    return True
