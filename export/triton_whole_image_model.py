"""Triton Python-backend model ``deepfake_image_whole``: encoded image files in, whole-image analysis out.

``deepfake-edge export`` copies this file verbatim into ``<repository>/deepfake_image_whole/1/model.py``
(export/repository.py writes its config). It is what ``DeepfakeClient`` does in whole mode, run on the
server, so a client that cannot run the project's Python (curl, any language) gets the stronger verdict.
Each step is the project's own code, imported, never copied:

1. each file of a request (``image_bytes``, TYPE_STRING, one file per batch item) passes the decode model's
   guards and is decoded (:func:`deepfake_edge.export.triton_image_model.open_checked` with the whole-mode
   memory figure, then :func:`~deepfake_edge.preprocessing.load_image`);
2. :func:`deepfake_edge.client.analysis.analyse_whole` plans and cuts its regions (faces, native-resolution
   tiles and the global view, with their caps and notes) and runs the copy-move check when the card is
   calibrated for it;
3. the rows of every file the batcher handed over go to the detector (``deepfake_b0``) through BLS, split
   the way the client splits one image's rows (:func:`deepfake_edge.client.analysis.request_slices`: over
   the detector's instances, each its own core), the parts in flight at once (async BLS, sent just far
   enough apart that the detector's batcher does not merge them again);
4. the client's own whole-mode aggregation (:func:`deepfake_edge.client.analysis.to_detections`: the
   highest region or copy-move decides, the card's whole-mode threshold) and ``detect --json``'s record
   (``deepfake_edge.client.commands.result_record``) turn the scores into the answer.

Outputs per file: the deciding region's ``fake_probability``, ``logit`` and ``heatmap`` (the detector's
shapes, so a client that reads ``deepfake_b0`` reads this too) and ``verdict``, a JSON document (label,
confidence, threshold, regions, notes ...; docs/encoded_images.md).

Errors: a bad file fails its own request with INVALID_ARG (HTTP 400), naming the item, before any of the
execution's rows are scored; the other requests of the same execution are answered as usual. The
detector's failure fails the execution's requests with an internal error. The model keeps serving.

Config ``parameters`` (string values): ``model_card`` (required: input size, resize, labels, thresholds),
``detector`` (default ``deepfake_b0``; its config.pbtxt beside this model gives its instances and batch
limit) and the decode model's limits (``max_encoded_bytes``, ``max_pixels``, ``max_decode_bytes``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_edge.client.analysis import Prepared, analyse_whole, request_slices, to_detections
from deepfake_edge.client.commands import result_record
from deepfake_edge.client.results import Detection
from deepfake_edge.client.triton_io import Outputs
from deepfake_edge.export.triton_image_model import config_parameters, each_item, open_checked, read_limits
from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import BadImageError, load_image
from deepfake_edge.regions import strongest
from deepfake_edge.serving_contract import (
    HEATMAP_OUTPUT,
    IMAGE_BYTES_INPUT,
    IMAGE_MODEL_DETECTOR,
    INPUT_NAME,
    LOGIT_OUTPUT,
    OUTPUT_NAMES,
    PROBABILITY_OUTPUT,
    VERDICT_OUTPUT,
    ModelInfo,
    latest_version_dir,
    parse_model_config,
    read_repository_config,
)

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (tests, the benchmark): the pure helpers work without it
    pb_utils = None

# The keys of ``detect --json``'s record that describe the verdict (path, heatmap file, provenance and error
# keys describe the client's input and output files: there are none here).
RECORD_FIELDS = ("label", "confidence", "fake_probability", "logit", "model", "model_version", "mode", "regions",
                 "notes")


def prepare_item(data: bytes, info: ModelInfo, limits: dict[str, int]) -> Prepared:
    """One encoded file -> its regions and UINT8 rows, as the client's whole mode prepares them."""
    image = open_checked(data, limits, mode="whole")
    try:
        decoded = load_image(image, max_pixels=limits["max_pixels"])
        return analyse_whole(IMAGE_BYTES_INPUT, decoded, info)
    finally:
        image.close()  # free the decoded pixels now: only the rows are kept until the detector answers


def verdict_record(detection: Detection, card: ModelCard) -> dict[str, Any]:
    """``detect --json``'s record of ``detection`` (same keys, same rounding), with the threshold applied."""
    record = result_record(detection, None)
    verdict = {key: record[key] for key in RECORD_FIELDS}
    return {**verdict, "threshold": round(card.for_mode("whole").threshold, 6)}


def rows_of(outputs: Outputs, start: int, stop: int) -> Outputs:
    """The answers to rows ``start:stop`` of ``outputs``."""
    part = slice(start, stop)
    heatmaps = None if outputs.heatmaps is None else outputs.heatmaps[part]
    return Outputs(outputs.probabilities[part], outputs.logits[part], heatmaps, outputs.version)


def answer(prepared: list[Prepared], outputs: Outputs, info: ModelInfo) -> dict[str, np.ndarray]:
    """A request's output arrays from its files' rows and their scores (``outputs``, heatmaps included)."""
    # Without heatmaps to_detections skips the stitched whole-image map: only the deciding CAM goes out.
    detections = to_detections(prepared, dataclasses.replace(outputs, heatmaps=None), info)
    heatmaps, start = [], 0
    for item in prepared:
        rows = slice(start, start + len(item.rows))
        heatmaps.append(outputs.heatmaps[rows][strongest(outputs.probabilities[rows])])
        start = rows.stop
    verdicts = [json.dumps(verdict_record(d, info.card)).encode() for d in detections]
    return {
        PROBABILITY_OUTPUT: np.array([[d.fake_probability] for d in detections], dtype=np.float32),
        LOGIT_OUTPUT: np.array([[d.logit] for d in detections], dtype=np.float32),
        HEATMAP_OUTPUT: np.stack(heatmaps).astype(np.float32),
        VERDICT_OUTPUT: np.array([[verdict] for verdict in verdicts], dtype=object),
    }


class TritonPythonModel:
    """Analyses each request's files and scores their regions with the detector; see the module docstring."""

    def initialize(self, args: dict) -> None:
        parameters = config_parameters(args, "the input size, labels and thresholds to analyse with")
        detector = parameters.get("detector") or IMAGE_MODEL_DETECTOR
        # The detector's config (beside this model in the repository) says how its rows are best split.
        self.detector_dir = Path(args["model_repository"]).parent / detector
        detector_info = parse_model_config(detector, read_repository_config(self.detector_dir))
        # This model's own card decides (the one its clients read from its config); the export writes the same.
        self.info = dataclasses.replace(detector_info, card=ModelCard.from_json(parameters["model_card"]))
        self.limits = read_limits(parameters)

    async def score(self, rows: np.ndarray) -> Outputs:
        """The detector's answers to ``rows``, sent as parts that its instances run at the same time."""
        requests = [pb_utils.InferenceRequest(model_name=self.info.name, requested_output_names=list(OUTPUT_NAMES),
                                              inputs=[pb_utils.Tensor(INPUT_NAME, np.ascontiguousarray(rows[part]))])
                    for part in request_slices(len(rows), self.info)]
        latest = latest_version_dir(self.detector_dir)  # what "latest" (-1) resolves to, for the record
        version = latest.name if latest is not None else ""
        # Parts that reach the detector within its queue delay are merged by its dynamic batcher into one batch
        # on one instance (one core): 26 rows of a 1024x768 photo took ~490 ms so, against ~295 ms split. The
        # batcher dispatches a part at most that delay after it arrives (100 us in the embedded repository),
        # so the next part is sent twice that delay later.
        pending = []
        for number, request in enumerate(requests):
            if number:
                await asyncio.sleep(2 * self.info.max_queue_delay_us / 1e6)
            pending.append(asyncio.ensure_future(request.async_exec()))
        parts = []
        for response in await asyncio.gather(*pending):
            if response.has_error():
                raise RuntimeError(response.error().message())

            def output(name: str, response: Any = response) -> np.ndarray:
                return pb_utils.get_output_tensor_by_name(response, name).as_numpy()

            parts.append(Outputs(output(PROBABILITY_OUTPUT).reshape(-1), output(LOGIT_OUTPUT).reshape(-1),
                                 np.array(output(HEATMAP_OUTPUT)), version))
        return Outputs.concat(parts)

    def prepare(self, request: Any) -> "list[Prepared] | Any":
        """A request's prepared files, or the TritonError to answer it with."""
        items = pb_utils.get_input_tensor_by_name(request, IMAGE_BYTES_INPUT).as_numpy()
        try:
            return each_item(items, lambda data: prepare_item(data, self.info, self.limits))
        except BadImageError as error:  # the client's file: HTTP 400 / gRPC INVALID_ARGUMENT
            return pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
        except Exception as error:  # noqa: BLE001 - anything else fails this request, not the instance
            return pb_utils.TritonError(f"{IMAGE_BYTES_INPUT}: cannot analyse: {type(error).__name__}: {error}")

    async def execute(self, requests: list) -> list:
        batch = [self.prepare(request) for request in requests]
        prepared = [item for entry in batch if isinstance(entry, list) for item in entry]
        outputs = None
        if prepared:
            # All files of the execution in one set of detector calls: fewer, fuller batches than per file.
            try:
                outputs = await self.score(np.concatenate([item.rows for item in prepared]))
            except Exception as error:  # noqa: BLE001 - the detector's failure fails these requests only
                failure = pb_utils.TritonError(f"{self.info.name}: {error}")
                batch = [entry if not isinstance(entry, list) else failure for entry in batch]
        responses, start = [], 0
        for entry in batch:
            if not isinstance(entry, list):
                responses.append(pb_utils.InferenceResponse(error=entry))
                continue
            stop = start + sum(len(item.rows) for item in entry)
            arrays = answer(entry, rows_of(outputs, start, stop), self.info)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, array) for name, array in arrays.items()]))
            start = stop
        return responses

    def finalize(self) -> None:
        self.info = None
