"""What both clients (sync and asyncio) do around a Triton call, independent of the protocol and of how
they wait: the clients are transports over these functions.

:func:`prepare` turns one source into the rows of one request (one row in fast mode; every region of
the image in whole mode, deepfake_edge/regions.py); :func:`request_slices` says how the rows go out;
:func:`to_detections` turns the answered rows back into one :class:`Detection` per source;
:func:`retry_delay` decides whether a failed call is retried; :func:`merge_chunk` gives every source of
a chunk its Detection or Failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image

from deepfake_edge.client.errors import DeepfakeClientError, ServerUnreachableError, is_transient, translate
from deepfake_edge.client.results import Detection, Failure, RegionScore, Result
from deepfake_edge.client.triton_io import ModelInfo, Outputs, normalize_url
from deepfake_edge.preprocessing import BadImageError, ImageSource, load_image
from deepfake_edge.regions import MODES, RegionPlan, analyse, stitch_heatmap, strongest
from deepfake_edge.server.admin_key import admin_headers

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_IMAGES_PER_REQUEST = 8  # fast mode: with several requests in flight the server batches across them
MIN_ROWS_TO_SPLIT = 8
MAX_PARALLEL_PARTS = 4


@dataclass(frozen=True)
class Prepared:
    """One source ready to send: its UINT8 (N, 3, S, S) ``rows``; ``plan`` in whole mode, else the crop
    box of the single view (for the heatmap)."""

    source: ImageSource
    rows: np.ndarray
    plan: Optional[RegionPlan]
    crop_box: tuple[int, int, int, int]

    @property
    def mode(self) -> str:
        return "fast" if self.plan is None else "whole"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def prepare(info: ModelInfo, source: ImageSource, mode: str, max_pixels: int) -> Prepared:
    """Decode ``source`` and cut its rows; every way a source can be unusable (missing file, not an image,
    too large ...) is a BadImageError naming the reason."""
    image = read_image(source, max_pixels)
    preprocessor = info.preprocessor
    if mode == "fast":
        view = preprocessor.resize_and_crop(image, max_pixels=max_pixels)
        rows = np.asarray(view, dtype=np.uint8).transpose(2, 0, 1)[None]
        box = tuple(round(v) for v in preprocessor.crop_box(image.size))
        return Prepared(source, np.ascontiguousarray(rows), None, box)  # type: ignore[arg-type]
    plan, rows = analyse(image, preprocessor)
    return Prepared(source, rows, plan, (0, 0, *image.size))


def prepare_chunk(info: ModelInfo, chunk: list[ImageSource], mode: str,
                  max_pixels: int) -> tuple[list[Prepared], list[Optional[Failure]]]:
    """The sources of ``chunk`` that could be prepared, and a Failure (or None) per source."""
    prepared, failures = [], []
    for source in chunk:
        try:
            prepared.append(prepare(info, source, mode, max_pixels))
            failures.append(None)
        except BadImageError as error:
            failures.append(Failure(source, error))
    return prepared, failures


def read_image(source: ImageSource, max_pixels: int) -> Image.Image:
    """``load_image`` with file-system errors turned into BadImageError."""
    try:
        return load_image(source, max_pixels=max_pixels)
    except FileNotFoundError:
        raise BadImageError("file not found") from None
    except IsADirectoryError:
        raise BadImageError("is a directory, not an image file") from None
    except PermissionError:
        raise BadImageError("permission denied") from None
    except OSError as error:
        raise BadImageError(f"cannot read file: {error.strerror or error}") from None
    except MemoryError:
        raise BadImageError("not enough memory to decode this image") from None


def stacked_rows(prepared: list[Prepared]) -> np.ndarray:
    return prepared[0].rows if len(prepared) == 1 else np.concatenate([p.rows for p in prepared])


def request_slices(rows: int, info: ModelInfo) -> list[slice]:
    """How ``rows`` rows go out: one request when they fit the model's batch limit and the server runs one
    instance; split evenly over its instances (at most the batch limit each) from :data:`MIN_ROWS_TO_SPLIT`
    rows on, so that one image's regions run on all of them at once instead of one core (the embedded
    server runs two single-threaded instances on two cores)."""
    parts = min(info.instances, MAX_PARALLEL_PARTS) if rows >= MIN_ROWS_TO_SPLIT else 1
    size = min(info.max_batch_size, math.ceil(rows / parts))
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def to_detections(prepared: list[Prepared], outputs: Outputs, info: ModelInfo) -> list[Detection]:
    """One Detection per prepared source from the answered rows of all of them, in order."""
    detections, start = [], 0
    for item in prepared:
        rows = slice(start, start + len(item.rows))
        start = rows.stop
        probabilities, logits = outputs.probabilities[rows], outputs.logits[rows]
        heatmaps = None if outputs.heatmaps is None else outputs.heatmaps[rows]
        card = info.card.for_mode(item.mode)
        decider = strongest(probabilities)
        probability = float(probabilities[decider])
        regions: tuple[RegionScore, ...] = ()
        notes: tuple[str, ...] = ()
        heatmap = None
        if item.plan is not None:
            regions = tuple(RegionScore(region.kind, region.box, float(p))
                            for region, p in zip(item.plan.regions, probabilities))
            notes = item.plan.notes
            if heatmaps is not None:
                heatmap = stitch_heatmap(item.plan, probabilities, heatmaps)
        elif heatmaps is not None:
            heatmap = np.array(heatmaps[0], dtype=np.float32)
        detections.append(Detection(
            source=item.source, label=card.label_for(probability), confidence=card.confidence_for(probability),
            fake_probability=probability, logit=float(logits[decider]), model=info.name,
            model_version=outputs.version, mode=item.mode, regions=regions, notes=notes, heatmap=heatmap,
            heatmap_box=item.crop_box if heatmap is not None else None))
    return detections


def images_per_request(mode: str, batch_size: Optional[int], info: ModelInfo) -> int:
    """Images per request for ``detect_many``: ``batch_size`` if given, else 8 in fast mode (several
    requests in flight let the server batch across them) and 1 in whole mode (an image is already a
    batch of its regions); never more than the model's ``max_batch_size``."""
    default = DEFAULT_IMAGES_PER_REQUEST if mode == "fast" else 1
    return min(batch_size or default, info.max_batch_size)


class ClientSettings:
    """What both clients are configured with, and the tritonclient call options that follow from it.

    ``url`` is ``host:port`` (default 127.0.0.1 and the protocol's default port); every call is bounded by
    ``timeout_s``; connection failures are retried ``retries`` times with back-off; ``admin_key`` (optional)
    is sent where an admin API needs it.
    """

    def __init__(self, url: Optional[str], protocol: str, model: str, timeout_s: float, retries: int,
                 max_pixels: int, admin_key: Optional[str]):
        self.protocol = protocol
        self.url = normalize_url(url, protocol)
        self.model = model
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.max_pixels = max_pixels
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        self._module = module
        self._admin_headers = admin_headers(admin_key, protocol) if admin_key else None
        # gRPC takes a timeout per call and returns protobufs unless asked for JSON; HTTP has neither option.
        self._call_options = {"client_timeout": self.timeout_s} if protocol == "grpc" else {}
        self._json_options = {"as_json": True, **self._call_options} if protocol == "grpc" else {}
        self._info: Optional[ModelInfo] = None


def backoff_s(attempt: int) -> float:
    """0.25 s, 0.5 s, 1 s, ... capped at 4 s."""
    return min(4.0, 0.25 * 2**attempt)


def retry_delay(raw: BaseException, url: str, timeout_s: float, attempt: int,
                retries: int) -> tuple[DeepfakeClientError, Optional[float]]:
    """A failed call's error as the client reports it, and the seconds to wait before trying again (None:
    give up and raise it). Only transient errors (connection failures) are retried, at most ``retries``
    times. An exception that is not a client error (a bug) is raised as it is."""
    error = translate(raw, url, timeout_s)
    if error is raw and not isinstance(raw, DeepfakeClientError):
        raise raw
    return error, backoff_s(attempt) if is_transient(error) and attempt < retries else None


def merge_chunk(prepared: list[Prepared], failures: list[Optional[Failure]],
                outcome: "list[Result] | DeepfakeClientError",
                unreachable: list[ServerUnreachableError]) -> list[Result]:
    """One result per source of a chunk, in order: its Failure from :func:`prepare_chunk`, else its answer
    from ``outcome`` (the answers of the prepared sources, or the error they all failed with). The first
    unreachable-server error is remembered in ``unreachable``, so later chunks fail without being sent."""
    if isinstance(outcome, DeepfakeClientError):
        if isinstance(outcome, ServerUnreachableError) and not unreachable:
            unreachable.append(outcome)
        outcome = [Failure(item.source, outcome) for item in prepared]
    answers = iter(outcome)
    return [failure if failure is not None else next(answers) for failure in failures]
