"""Triton Python-backend model that turns encoded image files into the detector's UINT8 input rows.

``deepfake-edge export`` copies this file verbatim into ``<repository>/deepfake_image_decode/1/model.py``.
It is the first step of the ``deepfake_image`` ensemble (export/repository.py writes both configs): encoded
JPEG/PNG/WebP/... bytes in (``image_bytes``, TYPE_STRING, one file per batch item), UINT8 ``image`` rows of
the detector's input size out, which Triton hands to the detector (``deepfake_b0``) in the same ensemble.

Unlike ``triton_model.py`` this model imports ``deepfake_edge``: the point is to decode and preprocess with
the project's one definition (:func:`deepfake_edge.preprocessing.open_image`, :class:`Preprocessor`, the
fast-mode single view the client sends today) and the web app's decode-memory figure
(:func:`deepfake_edge.webapp.decode_budget.scoring_bytes`), never a copy of them. The embedded server runs
its stubs with the project's virtual environment (server/triton.py), where the package is installed.

The Python-backend contract (one ``TritonPythonModel`` object per model instance, in its own stub process):

- ``initialize(args)`` runs once when the instance loads; ``args["model_config"]`` is the config.pbtxt as
  JSON. Raising here fails the model load with the message.
- ``execute(requests)`` receives the requests the dynamic batcher gathered and returns exactly one
  ``InferenceResponse`` per request, in order. An error response (``TritonError``) fails that request
  alone; the ensemble then answers it with the error and never runs the detector for it.
- ``finalize()`` runs once on unload.

Guards, the web app's (webapp/app.py), each checked before any pixel is decoded and reported per request
as ``image_bytes[i]: <reason>``: at most ``max_encoded_bytes`` per file; the header's format, pixel count
(``max_pixels``) and aspect ratio (:func:`open_image`); at most ``max_decode_bytes`` of memory to decode it
(the figure the web app reserves). Truncated or corrupt pixel data is reported by :func:`load_image`. An
instance decodes one file at a time, so its decoding memory stays under ``max_decode_bytes``.

Config ``parameters`` read here (string values): ``model_card`` (required: input size, resize and
interpolation), ``max_encoded_bytes``, ``max_pixels``, ``max_decode_bytes`` (defaults: the web app's).
"""

from __future__ import annotations

import json
from typing import Callable, TypeVar

import numpy as np
from PIL import Image

from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import DEFAULT_MAX_PIXELS, BadImageError, Preprocessor, open_image
from deepfake_edge.serving_contract import IMAGE_BYTES_INPUT, INPUT_NAME
from deepfake_edge.webapp.decode_budget import DEFAULT_MAX_DECODE_BYTES, scoring_bytes
from deepfake_edge.webapp.limits import DEFAULT_MAX_UPLOAD_BYTES

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (tests, the benchmark): decode_item works without it
    pb_utils = None

T = TypeVar("T")
LIMIT_DEFAULTS = {"max_encoded_bytes": DEFAULT_MAX_UPLOAD_BYTES, "max_pixels": DEFAULT_MAX_PIXELS,
                  "max_decode_bytes": DEFAULT_MAX_DECODE_BYTES}


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def open_checked(data: bytes, limits: dict[str, int], mode: str = "fast") -> Image.Image:
    """One encoded file, opened (no pixel decoded yet) once it passes the web app's guards for ``mode``.

    Raises :class:`BadImageError` naming the problem for anything the web app would refuse. Also the first
    step of ``deepfake_image_whole`` (export/triton_whole_image_model.py), with ``mode="whole"``.
    """
    if len(data) > limits["max_encoded_bytes"]:
        raise BadImageError(f"encoded file too large: {_megabytes(len(data))} "
                            f"(limit {_megabytes(limits['max_encoded_bytes'])})")
    image = open_image(data, max_pixels=limits["max_pixels"])  # the header alone: no pixel decoded yet
    needed = scoring_bytes(image, models=1, mode=mode)
    if needed > limits["max_decode_bytes"]:
        image.close()
        raise BadImageError(f"image too large to decode: its {image.width}x{image.height} pixels ({image.mode}) "
                            f"would take about {_megabytes(needed)} of memory "
                            f"(limit {_megabytes(limits['max_decode_bytes'])})")
    return image


def decode_item(data: bytes, preprocessor: Preprocessor, limits: dict[str, int]) -> np.ndarray:
    """One encoded file -> UINT8 (3, H, W), exactly as the client's fast mode prepares it.

    Raises :class:`BadImageError` naming the problem for anything the web app would refuse.
    """
    image = open_checked(data, limits)
    try:
        return preprocessor(image, max_pixels=limits["max_pixels"])  # load_image + resize_and_crop
    finally:
        image.close()  # free the decoded pixels now, not when the next file is being decoded


def each_item(items: np.ndarray, decode: Callable[[bytes], T]) -> list[T]:
    """``decode`` of each file of a request's ``image_bytes`` (N, 1); a BadImageError names the item."""
    decoded = []
    for index, item in enumerate(items.reshape(-1)):
        try:
            decoded.append(decode(bytes(item)))
        except BadImageError as error:
            raise BadImageError(f"{IMAGE_BYTES_INPUT}[{index}]: {error}") from None
    return decoded


def decode_request(items: np.ndarray, preprocessor: Preprocessor, limits: dict[str, int]) -> np.ndarray:
    """A request's ``image_bytes`` (N, 1) -> UINT8 (N, 3, H, W); the error names the item that failed."""
    return np.stack(each_item(items, lambda data: decode_item(data, preprocessor, limits)))


def config_parameters(args: dict, card_needed_for: str) -> dict[str, str]:
    """The string ``parameters`` of the model config Triton passes to ``initialize``; a config without the
    ``model_card`` parameter (``card_needed_for``: what this model reads from it) fails the model's load."""
    config = json.loads(args["model_config"])
    parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    if not parameters.get("model_card"):
        raise pb_utils.TritonModelException(f"the config has no 'model_card' parameter: {card_needed_for}")
    return parameters


def read_limits(parameters: dict[str, str]) -> dict[str, int]:
    """The guards' limits from a config's string ``parameters``, the web app's defaults where absent."""
    return {key: int(parameters.get(key) or default) for key, default in LIMIT_DEFAULTS.items()}


class TritonPythonModel:
    """Decodes each request's files in turn; see the module docstring for the contract."""

    def initialize(self, args: dict) -> None:
        parameters = config_parameters(args, "the input size, resize and interpolation to preprocess with")
        self.preprocessor = Preprocessor.from_card(ModelCard.from_json(parameters["model_card"]))
        self.limits = read_limits(parameters)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, IMAGE_BYTES_INPUT).as_numpy()
            try:
                rows = decode_request(items, self.preprocessor, self.limits)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(INPUT_NAME, rows)]))
            except BadImageError as error:  # the client's file: HTTP 400 / gRPC INVALID_ARGUMENT
                error = pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except Exception as error:  # noqa: BLE001 - anything else fails this request, not the instance
                message = f"{IMAGE_BYTES_INPUT}: cannot decode: {type(error).__name__}: {error}"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))
        return responses

    def finalize(self) -> None:
        self.preprocessor = None
