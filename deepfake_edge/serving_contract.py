"""The serving contract: what the exporter, the Triton model, the clients, the server and the benchmarks agree on.

One definition each of:

- the exported graph's tensor names (:data:`INPUT_NAME`, :data:`OUTPUT_NAMES`);
- Triton's default ports (:data:`HTTP_PORT`, :data:`GRPC_PORT`, :data:`METRICS_PORT`, :func:`default_url`);
- the served model names (:func:`model_name_for_arch`, :func:`variant_name`, :func:`precision_of`);
- the encoded-image model: encoded JPEG/PNG/WebP bytes in, the detector's outputs out (:data:`IMAGE_MODEL`,
  :data:`IMAGE_BYTES_INPUT`, :data:`DECODE_MODEL`, :data:`IMAGE_MODEL_DETECTOR`; docs/encoded_images.md), and
  its whole-image analysis twin (:data:`WHOLE_IMAGE_MODEL`, :data:`VERDICT_OUTPUT`);
- the image files the project picks up from folders (:data:`IMAGE_EXTENSIONS`, derived from the formats
  :mod:`deepfake_edge.preprocessing` opens);
- the video files (:data:`VIDEO_EXTENSIONS`, :func:`is_video_path`; what a file *is* is decided by its
  content, :func:`deepfake_edge.video.sniff_kind`);
- a served model's configuration read into :class:`ModelInfo` (:func:`parse_model_config`, from a server's
  answer of either protocol or from a repository's ``config.pbtxt`` with :func:`read_repository_config`);
- the version folders of a repository model (:func:`model_versions`, :func:`latest_version_dir`);
- the onnxruntime session the served model runs (:func:`session_options`, :func:`intra_op_threads`,
  :func:`auto_providers`).

The one exception to "defined here": ``export/triton_model.py`` runs inside Triton's Python-backend stub,
copied verbatim into each model repository, and must not import this package. It therefore repeats the
tensor names (tests/test_serving_contract.py checks that they equal these), and it *holds* the session
settings: ``session_options`` (threads, no inter-op parallelism, full graph optimisation, no spinning),
the threads rule (``intra_op_threads``: the config's ``intra_op_threads`` parameter, else usable cores per
instance) and the ``auto`` execution-provider choice. Writing those settings into every config instead
(export/repository.py) would still need a second function turning them into ``SessionOptions`` inside the
served model and would leave existing repositories without them; keeping them in the served model and
importing that file here (it imports Triton's ``triton_python_backend_utils`` only when present) leaves
exactly one definition that both the server and the in-process engine benchmark run. The import is lazy:
reading the contract does not load onnxruntime.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from PIL import Image

from deepfake_edge.preprocessing import SUPPORTED_FORMATS

if TYPE_CHECKING:
    from deepfake_edge.model_card import ModelCard
    from deepfake_edge.preprocessing import Preprocessor

# --- tensors ------------------------------------------------------------------------------------------------
# The exported graph's tensors, batch first: UINT8 (N, 3, H, W) in; fake probability (N, 1), logit (N, 1)
# and heatmap (N, h, w) out. export/triton_model.py repeats them (it must not import this package).
INPUT_NAME = "image"
OUTPUT_NAMES = ("fake_probability", "logit", "heatmap")
PROBABILITY_OUTPUT, LOGIT_OUTPUT, HEATMAP_OUTPUT = OUTPUT_NAMES
SCORE_OUTPUTS = OUTPUT_NAMES[:2]

# --- ports --------------------------------------------------------------------------------------------------
# Triton's own defaults; docker-compose.yml publishes the same three (a test checks it).
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
PROTOCOLS = ("grpc", "http")
DEFAULT_PORTS = {"http": HTTP_PORT, "grpc": GRPC_PORT}  # per client protocol
DEFAULT_HOST = "127.0.0.1"


def default_url(protocol: str, host: str = DEFAULT_HOST) -> str:
    """``host:port`` of Triton's default port for ``protocol`` ("grpc" or "http")."""
    if protocol not in DEFAULT_PORTS:
        raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
    return f"{host}:{DEFAULT_PORTS[protocol]}"


# --- model names --------------------------------------------------------------------------------------------
PRECISIONS = ("fp32", "int8", "fp16")  # fp32 models carry the base name; the others a "_<precision>" suffix
MODEL_NAMES_BY_ARCH = {"efficientnet_b0": "deepfake_b0", "small_cnn": "deepfake_cnn"}


def model_name_for_arch(arch: str) -> str:
    """The served (FP32) model name of a checkpoint's architecture: ``efficientnet_b0`` -> ``deepfake_b0``."""
    return MODEL_NAMES_BY_ARCH.get(arch, f"deepfake_{arch}")


def variant_name(name: str, precision: str) -> str:
    """``deepfake_b0`` + ``int8`` -> ``deepfake_b0_int8``; ``fp32`` keeps the name."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return name if precision == "fp32" else f"{name}_{precision}"


def precision_of(name: str) -> str:
    """``deepfake_b0_int8`` -> int8, ``..._fp16`` -> fp16, anything else fp32."""
    for precision in PRECISIONS[1:]:
        if name.endswith(f"_{precision}"):
            return precision
    return "fp32"


def base_name(name: str) -> str:
    """The FP32 model a variant was made from: ``deepfake_b0_int8`` -> ``deepfake_b0``."""
    precision = precision_of(name)
    return name if precision == "fp32" else name.removesuffix(f"_{precision}")


DEFAULT_MODEL = model_name_for_arch("efficientnet_b0")  # deepfake_b0
CNN_MODEL = model_name_for_arch("small_cnn")  # deepfake_cnn, the baseline
INT8_MODEL = variant_name(DEFAULT_MODEL, "int8")  # deepfake_b0_int8, CPU
FP16_MODEL = variant_name(DEFAULT_MODEL, "fp16")  # deepfake_b0_fp16, GPU (ngc repository only)

# --- the encoded-image model ------------------------------------------------------------------------------
# ``deepfake_image`` takes encoded image files (TYPE_STRING / KServe BYTES, one file per batch item, shape
# (N, 1)) and answers with the detector's OUTPUT_NAMES. It is a Triton ensemble: DECODE_MODEL (Python
# backend, export/triton_image_model.py: header checks, decode, the fast-mode single view) feeds its UINT8
# rows as INPUT_NAME to IMAGE_MODEL_DETECTOR. Why an ensemble and not BLS: docs/encoded_images.md.
IMAGE_MODEL = "deepfake_image"
IMAGE_BYTES_INPUT = "image_bytes"
DECODE_MODEL = "deepfake_image_decode"
IMAGE_MODEL_DETECTOR = DEFAULT_MODEL  # deepfake_b0, FP32: the model the encoded path scores with
# ``deepfake_image_whole`` takes the same input and runs whole-image analysis on the server (a Python model
# calling IMAGE_MODEL_DETECTOR through BLS, export/triton_whole_image_model.py): the detector's outputs of
# the deciding region, plus VERDICT_OUTPUT, one JSON document per file (label, regions, notes ...).
WHOLE_IMAGE_MODEL = "deepfake_image_whole"
VERDICT_OUTPUT = "verdict"
# What the export writes for the encoded-image path into the embedded repository.
IMAGE_MODELS = (IMAGE_MODEL, DECODE_MODEL, WHOLE_IMAGE_MODEL)


def is_detector_model(name: str) -> bool:
    """Whether ``name`` is a detector (UINT8 :data:`INPUT_NAME` in), not one of the encoded-image models."""
    return name not in IMAGE_MODELS


# --- image files --------------------------------------------------------------------------------------------
# Every extension Pillow registers for a format preprocessing opens (SUPPORTED_FORMATS), so a folder scan
# picks up exactly the files load_image can read: .jpg/.jpeg/.jpe/.jfif, .png/.apng, .gif, .bmp,
# .tif/.tiff, .webp, .ppm/.pgm/.pbm/.pnm/.pfm, .ico, .tga/.icb/.vda/.vst (with Pillow 10-13).
IMAGE_FORMAT_BY_EXTENSION = {
    extension: image_format for extension, image_format in Image.registered_extensions().items()
    if image_format in SUPPORTED_FORMATS
}
IMAGE_EXTENSIONS = frozenset(IMAGE_FORMAT_BY_EXTENSION)


def is_image_file(path: str | Path) -> bool:
    """Whether ``path``'s extension (any case) is one of :data:`IMAGE_EXTENSIONS`."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# --- video files --------------------------------------------------------------------------------------------
# The containers deepfake_edge.video reads. A file's kind is decided by its content (video.sniff_kind): an
# animated .gif (in IMAGE_EXTENSIONS) is analysed as a video, and a name that disagrees earns a note.
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})


def is_video_path(path: str | Path) -> bool:
    """Whether ``path``'s extension (any case) is one of :data:`VIDEO_EXTENSIONS`."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# --- a served model's configuration -------------------------------------------------------------------------
class ModelConfigError(ValueError):
    """A served model's configuration does not follow the contract (no model card, wrong input ...)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a served model's configuration says, as clients, the server verbs and the benchmarks need it.

    ``instances``: model instances the server runs (instance_group counts): requests it runs at once.
    ``parameters``: the config's string parameters (``model_card``, ``execution_provider``,
    ``intra_op_threads`` ...).
    """

    name: str
    card: ModelCard
    max_batch_size: int
    input_shape: tuple[int, int, int]
    instances: int = 1
    max_queue_delay_us: int = 0
    parameters: Mapping[str, str] = field(default_factory=dict, compare=False)

    @cached_property
    def preprocessor(self) -> Preprocessor:
        from deepfake_edge.preprocessing import Preprocessor

        return Preprocessor.from_card(self.card)

    @property
    def request_bytes_per_image(self) -> int:
        return math.prod(self.input_shape)

    @property
    def precision(self) -> str:
        """fp32, int8 or fp16: what the export recorded in the card, else what the name says."""
        return str(self.card.extra.get("precision") or precision_of(self.name))


def instance_count(config: Mapping[str, Any]) -> int:
    """Instances a config asks for: the sum of its instance groups' counts, at least 1."""
    return max(1, sum(int(group.get("count", 1)) for group in config.get("instance_group", [])))


def parse_model_config(name: str, config: Mapping[str, Any]) -> ModelInfo:
    """``config`` is a model configuration as JSON: ``get_model_config(..., as_json=True)`` of either protocol
    (gRPC wraps it in ``config``) or a ``config.pbtxt`` read with :func:`read_repository_config`.

    Raises :class:`ModelConfigError` when it is not a deepfake-edge model or breaks the contract.
    """
    from deepfake_edge.model_card import ModelCard

    config = config.get("config", config)
    parameters = {key: str(value.get("string_value", "")) for key, value in config.get("parameters", {}).items()}
    if not parameters.get("model_card"):
        raise ModelConfigError(f"model {name!r} has no 'model_card' config parameter: not a deepfake-edge model")
    card = ModelCard.from_json(parameters["model_card"])
    max_batch_size = int(config.get("max_batch_size", 0))
    inputs = {spec["name"]: spec for spec in config.get("input", [])}
    if INPUT_NAME not in inputs or max_batch_size < 1:
        raise ModelConfigError(f"model {name!r} does not follow the contract (batched UINT8 input {INPUT_NAME!r})")
    shape = tuple(int(d) for d in inputs[INPUT_NAME].get("dims", []))
    if shape != (3, card.input_size, card.input_size):
        raise ModelConfigError(f"model {name!r}: input dims {list(shape)} disagree with card input_size "
                               f"{card.input_size}")
    return ModelInfo(
        name=name, card=card, max_batch_size=max_batch_size, input_shape=shape, instances=instance_count(config),
        max_queue_delay_us=int(config.get("dynamic_batching", {}).get("max_queue_delay_microseconds", 0)),
        parameters=parameters,
    )


def config_as_dict(config: Any) -> dict[str, Any]:
    """HTTP returns a dict; gRPC ``as_json=True`` returns a dict too, older versions a JSON string."""
    return json.loads(config) if isinstance(config, (str, bytes)) else config


def read_repository_config(model_dir: str | Path) -> dict[str, Any]:
    """``<model_dir>/config.pbtxt`` as the JSON dict Triton would answer (proto field names)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config_path = Path(model_dir) / "config.pbtxt"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: build the repository with `deepfake-edge export`")
    message = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


# --- versions -----------------------------------------------------------------------------------------------
def model_versions(model_dir: str | Path) -> list[int]:
    """The version folders of a repository model (``<model_dir>/<N>/``), ascending; empty when there are none."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(child.name) for child in model_dir.iterdir() if child.is_dir() and child.name.isdigit())


def latest_version_dir(model_dir: str | Path) -> Path | None:
    """The highest version folder (what Triton's ``latest`` policy serves first), or None."""
    versions = model_versions(model_dir)
    return Path(model_dir) / str(versions[-1]) if versions else None


# --- the onnxruntime session of the served model (defined in export/triton_model.py, see above) -----------
def _served_model():
    from deepfake_edge.export import triton_model

    return triton_model


def session_options(threads: int):
    """The ``onnxruntime.SessionOptions`` the served model opens its session with, ``threads`` intra-op."""
    return _served_model().session_options(threads)


def intra_op_threads(info: ModelInfo) -> int:
    """Intra-op threads per instance the served model uses for ``info``'s config (its own rule)."""
    return _served_model().intra_op_threads(int(info.parameters.get("intra_op_threads") or 0), info.instances)


def auto_providers() -> list[str]:
    """The execution providers the served model picks with ``execution_provider: auto`` (names only)."""
    return [p if isinstance(p, str) else p[0] for p in _served_model().providers("auto", 0)]
