"""The Triton side of the contract, shared by the sync and asyncio clients.

Reads a served model's configuration into :class:`ModelInfo` (the model card travels in the config's
``model_card`` parameter, so input size, crop rule, labels and threshold are never re-typed here),
builds the request tensors and reads a response's outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from deepfake_edge.client.errors import ServerError
from deepfake_edge.model_card import INPUT_NAME, OUTPUT_NAMES, ModelCard
from deepfake_edge.preprocessing import Preprocessor

SCORE_OUTPUTS, HEATMAP_OUTPUT = OUTPUT_NAMES[:2], OUTPUT_NAMES[2]
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}


def normalize_url(url: str | None, protocol: str) -> str:
    """``host:port`` as tritonclient wants it: scheme stripped, default port of the protocol added."""
    if protocol not in DEFAULT_PORTS:
        raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
    url = (url or "127.0.0.1").strip()
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    url = url.rstrip("/")
    if ":" not in url.rsplit("]", 1)[-1]:
        url = f"{url}:{DEFAULT_PORTS[protocol]}"
    return url


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs to know about a served model, all of it read from the server."""

    name: str
    card: ModelCard
    max_batch_size: int
    input_shape: tuple[int, int, int]

    @cached_property
    def preprocessor(self) -> Preprocessor:
        return Preprocessor.from_card(self.card)

    @property
    def request_bytes_per_image(self) -> int:
        return int(np.prod(self.input_shape))


def parse_model_config(name: str, config: dict[str, Any]) -> ModelInfo:
    """``config`` is ``get_model_config(..., as_json=True)`` of either protocol (gRPC wraps it in ``config``)."""
    config = config.get("config", config)
    try:
        card_json = config["parameters"]["model_card"]["string_value"]
    except KeyError:
        raise ServerError(f"model {name!r} has no 'model_card' config parameter: not a deepfake-edge model") from None
    card = ModelCard.from_json(card_json)
    max_batch_size = int(config.get("max_batch_size", 0))
    inputs = {spec["name"]: spec for spec in config.get("input", [])}
    if INPUT_NAME not in inputs or max_batch_size < 1:
        raise ServerError(f"model {name!r} does not follow the contract (batched UINT8 input {INPUT_NAME!r})")
    shape = tuple(int(d) for d in inputs[INPUT_NAME].get("dims", []))
    if shape != (3, card.input_size, card.input_size):
        raise ServerError(f"model {name!r}: input dims {list(shape)} disagree with card input_size {card.input_size}")
    return ModelInfo(name=name, card=card, max_batch_size=max_batch_size, input_shape=shape)


def make_inputs(module: ModuleType, batch: np.ndarray, shm_region: str | None = None) -> list:
    """The request's ``image`` input: ``batch`` inline, or (if ``shm_region`` names a registered region
    already holding it) a reference to system shared memory."""
    infer_input = module.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
    if shm_region is None:
        infer_input.set_data_from_numpy(batch)
    else:
        infer_input.set_shared_memory(shm_region, batch.nbytes)
    return [infer_input]


def make_outputs(module: ModuleType, heatmap: bool) -> list:
    names = SCORE_OUTPUTS + ((HEATMAP_OUTPUT,) if heatmap else ())
    return [module.InferRequestedOutput(name) for name in names]


def response_version(result: Any) -> str:
    """The version that answered (gRPC responses are protobufs, HTTP ones dicts)."""
    response = result.get_response()
    if isinstance(response, dict):
        return str(response.get("model_version", ""))
    return str(getattr(response, "model_version", ""))


@dataclass(frozen=True)
class Outputs:
    """A response's rows: fake probabilities and logits (float32 [N]), heatmaps (float32 [N, h, w]) if
    asked for, and the model version that answered."""

    probabilities: np.ndarray
    logits: np.ndarray
    heatmaps: np.ndarray | None
    version: str

    @classmethod
    def concat(cls, parts: Sequence["Outputs"]) -> "Outputs":
        if len(parts) == 1:
            return parts[0]
        heatmaps = None if parts[0].heatmaps is None else np.concatenate([p.heatmaps for p in parts])
        return cls(np.concatenate([p.probabilities for p in parts]), np.concatenate([p.logits for p in parts]),
                   heatmaps, parts[0].version)


def read_outputs(result: Any, rows: int, info: ModelInfo, heatmap: bool) -> Outputs:
    """The outputs of a response to ``rows`` rows; missing outputs or a wrong row count are a ServerError."""
    probabilities = result.as_numpy("fake_probability")
    logits = result.as_numpy("logit")
    heatmaps = result.as_numpy(HEATMAP_OUTPUT) if heatmap else None
    if probabilities is None or logits is None or (heatmap and heatmaps is None):
        raise ServerError(f"model {info.name!r} answered without the expected outputs")
    probabilities, logits = probabilities.reshape(-1), logits.reshape(-1)
    if len(probabilities) != rows or len(logits) != rows:
        raise ServerError(f"model {info.name!r} answered {len(probabilities)} scores for {rows} images")
    return Outputs(probabilities, logits, heatmaps, response_version(result))


def not_ready_message(model: str, url: str, index: Any) -> str:
    """Names the models the server does have (``index``: the repository index of either protocol, or None
    when the caller may not read it: it is an admin API)."""
    if index is None:
        return (f"model {model!r} is not ready on the Triton server at {url} (unknown, loading or failed to "
                f"load); 'deepfake-edge serve' lists its models when it starts")
    entries = index.get("models", []) if isinstance(index, dict) else index
    states = ", ".join(f"{m.get('name')} ({m.get('state') or 'UNAVAILABLE'})" for m in entries) or "none"
    return f"model {model!r} is not ready on the Triton server at {url}; its models: {states}"


def config_as_dict(config: Any) -> dict[str, Any]:
    """HTTP returns a dict; gRPC ``as_json=True`` returns a dict too, older versions a JSON string."""
    return json.loads(config) if isinstance(config, (str, bytes)) else config
