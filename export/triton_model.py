"""Triton Python-backend model that runs an exported detector with onnxruntime.

``deepfake-edge export`` copies this file verbatim into ``<repository>/<model>/<version>/model.py`` next
to ``model.onnx``. It imports only numpy, onnxruntime and Triton's ``triton_python_backend_utils`` (the
stub provides it), never ``deepfake_edge``, so a model repository is self-contained. It also imports
outside Triton (without ``triton_python_backend_utils``): its session settings (:func:`session_options`,
:func:`intra_op_threads`, :func:`providers`) are the ones ``deepfake_edge.serving_contract`` hands to the
engine benchmark, so the served and the in-process sessions share one definition.

The Python-backend contract (one ``TritonPythonModel`` object per model instance, in its own stub process):

- ``initialize(args)`` runs once when the instance loads. ``args`` holds strings: ``model_config`` (the
  config.pbtxt as JSON), ``model_repository`` (this model's directory), ``model_version``,
  ``model_instance_kind``/``model_instance_device_id``. Raising here fails the model load with the message.
- ``execute(requests)`` receives the requests the dynamic batcher gathered (each with its own batch
  dimension) and must return exactly one ``InferenceResponse`` per request, in order. An error response for
  one request (``TritonError``) does not fail the others.
- ``finalize()`` runs once on unload; it releases the session.

Batching: all requests' ``image`` tensors are concatenated along the batch axis and run through ONE
``session.run``; outputs are split back by each request's batch size. That is what makes Triton's dynamic
batching pay off: N single-image requests cost one batch-N inference, not N batch-1 inferences.

Config ``parameters`` read here (all optional, string values):
``execution_provider``: ``auto`` (default: CUDA when a GPU and onnxruntime-gpu are present, else CPU),
``cpu``, ``cuda`` or ``tensorrt``; ``intra_op_threads``: ``0`` (default: usable cores divided by the
number of instances of this model) or a positive count.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton: deepfake_edge.serving_contract uses the session settings below
    pb_utils = None

# The serving contract's tensor names (deepfake_edge/serving_contract.py), repeated: this file must not
# import deepfake_edge. tests/test_serving_contract.py checks that they are equal.
INPUT_NAME = "image"
OUTPUT_NAMES = ("fake_probability", "logit", "heatmap")


def _parameter(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default) or default


def _instance_count(config: dict) -> int:
    return max(1, sum(int(group.get("count", 1)) for group in config.get("instance_group", [])))


# The session settings below are the one definition of how the served model runs onnxruntime; the
# engine benchmark opens its sessions with them too (through deepfake_edge.serving_contract).


def intra_op_threads(requested: int, instances: int) -> int:
    """``requested`` (the ``intra_op_threads`` parameter) when positive, else usable cores / instances."""
    if requested > 0:
        return requested
    # Instances run concurrently; more threads than cores only adds contention.
    return max(1, len(os.sched_getaffinity(0)) // max(1, instances))


def session_options(threads: int) -> ort.SessionOptions:
    """The served model's onnxruntime session options, with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads spinning for work burn the cores that Triton, the other instances and
    # co-located clients need: measured under load, spinning cost 38 vs 22 CPU ms/image (benchmarks/).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _model_error(message: str) -> Exception:
    return pb_utils.TritonModelException(message) if pb_utils is not None else RuntimeError(message)


def providers(choice: str, device_id: int) -> list:
    """The execution providers for the ``execution_provider`` parameter (auto, cpu, cuda, tensorrt)."""
    available = ort.get_available_providers()
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    tensorrt = ("TensorrtExecutionProvider", {"device_id": device_id, "trt_fp16_enable": True})
    if choice == "cpu":
        return ["CPUExecutionProvider"]
    if choice in ("cuda", "tensorrt"):
        wanted = "TensorrtExecutionProvider" if choice == "tensorrt" else "CUDAExecutionProvider"
        if wanted not in available:
            raise _model_error(f"execution_provider={choice} but onnxruntime has only {available}")
        return ([tensorrt] if choice == "tensorrt" else []) + [cuda, "CPUExecutionProvider"]
    if choice != "auto":
        raise _model_error(f"unknown execution_provider {choice!r} (auto, cpu, cuda, tensorrt)")
    return ([cuda] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


class TritonPythonModel:
    """One onnxruntime session per model instance; see the module docstring for the contract."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        model_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        threads = intra_op_threads(int(_parameter(config, "intra_op_threads", "0")), _instance_count(config))
        device_id = int(args.get("model_instance_device_id") or 0)
        self.session = ort.InferenceSession(
            str(model_path), sess_options=session_options(threads),
            providers=providers(_parameter(config, "execution_provider", "auto"), device_id))
        self.output_names = list(OUTPUT_NAMES)

    def execute(self, requests: list) -> list:
        images, sizes, responses = [], [], [None] * len(requests)
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy()
            images.append(image)
            sizes.append(image.shape[0])
        try:
            batch = images[0] if len(images) == 1 else np.concatenate(images, axis=0)
            outputs = self.session.run(self.output_names, {INPUT_NAME: batch})
        except Exception as error:  # an onnxruntime failure answers every request of this batch
            message = f"inference failed: {error}"
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]
        start = 0
        for index, size in enumerate(sizes):
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + size]))
                for name, value in zip(self.output_names, outputs)
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start += size
        return responses

    def finalize(self) -> None:
        self.session = None
