"""Triton Python-backend model that runs an exported detector with onnxruntime.

``deepfake-edge export`` copies this file verbatim into ``<repository>/<model>/<version>/model.py`` next
to ``model.onnx``. It imports only numpy, onnxruntime and Triton's ``triton_python_backend_utils`` (the
stub provides it), never ``deepfake_edge``, so a model repository is self-contained.

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
import triton_python_backend_utils as pb_utils

INPUT_NAME = "image"
OUTPUT_NAMES = ("fake_probability", "logit", "heatmap")


def _parameter(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default) or default


def _instance_count(config: dict) -> int:
    return max(1, sum(int(group.get("count", 1)) for group in config.get("instance_group", [])))


def _providers(choice: str, device_id: int) -> list:
    available = ort.get_available_providers()
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    tensorrt = ("TensorrtExecutionProvider", {"device_id": device_id, "trt_fp16_enable": True})
    if choice == "cpu":
        return ["CPUExecutionProvider"]
    if choice in ("cuda", "tensorrt"):
        wanted = "TensorrtExecutionProvider" if choice == "tensorrt" else "CUDAExecutionProvider"
        if wanted not in available:
            raise pb_utils.TritonModelException(f"execution_provider={choice} but onnxruntime has only {available}")
        return ([tensorrt] if choice == "tensorrt" else []) + [cuda, "CPUExecutionProvider"]
    if choice != "auto":
        raise pb_utils.TritonModelException(f"unknown execution_provider {choice!r} (auto, cpu, cuda, tensorrt)")
    return ([cuda] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


class TritonPythonModel:
    """One onnxruntime session per model instance; see the module docstring for the contract."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        model_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        threads = int(_parameter(config, "intra_op_threads", "0"))
        if threads <= 0:
            # Instances run concurrently; more threads than cores only adds contention.
            threads = max(1, len(os.sched_getaffinity(0)) // _instance_count(config))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads spinning for work burn the cores that Triton, the other instances and
        # co-located clients need: measured under load, spinning cost 38 vs 22 CPU ms/image (benchmarks/).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        device_id = int(args.get("model_instance_device_id") or 0)
        providers = _providers(_parameter(config, "execution_provider", "auto"), device_id)
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
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
