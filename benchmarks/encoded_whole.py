"""Whole-image analysis on the server (``deepfake_image_whole``) vs the Python client's whole mode: part of
the ``encoded`` stage (benchmarks/encoded.py runs it after the fast-mode comparison).

The same 1024x768 quality-90 JPEGs go to the same server in two ways, one photo per call, gRPC, N
closed-loop workers, the systems taking turns at each concurrency:

* ``client-whole``: ``DeepfakeClient(mode="whole")`` in this process finds faces, cuts ~26 regions per photo
  and sends them as UINT8 rows to ``deepfake_b0`` (split over its instances: two requests per photo);
* ``encoded-whole``: the JPEG bytes go to ``deepfake_image_whole``, which does all of that on the server.

Per point: images/s, p50/p99, CPU ms per image of this process and of the server's process tree. Bytes per
photo are exact: the gRPC messages tritonclient builds for the requests the client sends for it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial

import numpy as np

from deepfake_edge.benchmarks.cputime import metered_closed_loop
from deepfake_edge.benchmarks.report import comparison_tables, per_concurrency_ratios
from deepfake_edge.serving_contract import (
    IMAGE_BYTES_INPUT,
    IMAGE_MODEL_DETECTOR,
    INPUT_NAME,
    VERDICT_OUTPUT,
    WHOLE_IMAGE_MODEL,
    ModelInfo,
)

SYSTEMS = ("client-whole", "encoded-whole")
MODEL_OF = {"client-whole": IMAGE_MODEL_DETECTOR, "encoded-whole": WHOLE_IMAGE_MODEL}
# ~0.3 s of CPU a photo: 4 workers already keep both cores of the build VM busy.
CONCURRENCIES = (1, 4)

Progress = Callable[[str], None]


def _grpc_bytes(model: str, tensor) -> int:
    from tritonclient.grpc._utils import _get_inference_request

    return _get_inference_request(model, [tensor], "", "", None, 0, False, False, 0, None, None).ByteSize()


def photo_bytes(jpeg: bytes, info: ModelInfo) -> dict[str, int]:
    """gRPC bytes and requests for one photo: the client's whole-mode row requests, and the encoded file."""
    import tritonclient.grpc as grpcclient

    from deepfake_edge.client.analysis import request_slices
    from deepfake_edge.preprocessing import load_image
    from deepfake_edge.regions import analyse

    _, rows = analyse(load_image(jpeg), info.preprocessor)
    client = 0
    slices = request_slices(len(rows), info)
    for part in slices:
        tensor = grpcclient.InferInput(INPUT_NAME, list(rows[part].shape), "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(rows[part]))
        client += _grpc_bytes(IMAGE_MODEL_DETECTOR, tensor)
    tensor = grpcclient.InferInput(IMAGE_BYTES_INPUT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[jpeg]], dtype=object))
    return {"rows": len(rows), "client-whole_requests": len(slices), "client-whole_grpc_bytes": client,
            "encoded-whole_grpc_bytes": _grpc_bytes(WHOLE_IMAGE_MODEL, tensor)}


def _encoded_sender(url: str, photos: tuple[bytes, ...], timeout_s: float):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)

    def send(number: int) -> None:
        tensor = grpcclient.InferInput(IMAGE_BYTES_INPUT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[photos[number % len(photos)]]], dtype=object))
        client.infer(WHOLE_IMAGE_MODEL, [tensor], client_timeout=timeout_s).as_numpy(VERDICT_OUTPUT)

    send.close = client.close  # type: ignore[attr-defined]
    return send


def whole_stage(settings, grpc_url: str, server_pid: int | None, info: ModelInfo, progress: Progress) -> dict:
    """Measure both systems at each of :data:`CONCURRENCIES`; returns the section (points, bytes, ratios)."""
    from deepfake_edge.benchmarks.whole_image import _detect_sender, build_photo_set

    photos = build_photo_set()
    sizes = [photo_bytes(jpeg, info) for jpeg in photos.encoded]
    section: dict = {"photos": len(photos), "points": [],
                     "bytes": {key: round(statistics.fmean(size[key] for size in sizes), 1) for key in sizes[0]}}
    for concurrency in CONCURRENCIES:
        for system in SYSTEMS:
            progress(f"encoded {system} c={concurrency}")
            new_sender = (partial(_encoded_sender, grpc_url, photos.encoded, settings.request_timeout_s)
                          if system == "encoded-whole" else
                          partial(_detect_sender, grpc_url, IMAGE_MODEL_DETECTOR, photos, "whole",
                                  settings.request_timeout_s, []))
            point = metered_closed_loop(system, new_sender, concurrency, settings.max_requests,
                                        settings.whole_image_max_seconds, server_pid, warmup_per_worker=1)
            section["points"].append(point | {"model": MODEL_OF[system]})
    section["ratios"] = ratios(section)
    return section


def ratios(section: dict) -> dict:
    """encoded-whole / client-whole figures of the same run (bytes: client-whole / encoded-whole)."""
    sizes = section["bytes"]
    reduction = sizes["client-whole_grpc_bytes"] / sizes["encoded-whole_grpc_bytes"]
    return {"bytes_per_image_reduction": round(reduction, 2),
            "per_concurrency": per_concurrency_ratios(section["points"], *SYSTEMS)}


def markdown_lines(section: dict) -> list[str]:
    if not section or not section.get("points"):
        return []
    sizes = section["bytes"]
    lines = [f"### Whole-image analysis: `{WHOLE_IMAGE_MODEL}` vs the client's whole mode", "",
             f"The same {section['photos']} JPEGs, one photo per call. Per photo the client sends "
             f"{sizes['rows']:g} UINT8 rows in {sizes['client-whole_requests']:g} requests: "
             f"{sizes['client-whole_grpc_bytes']:,.0f} gRPC bytes, against {sizes['encoded-whole_grpc_bytes']:,.0f} "
             f"for the encoded file ({section['ratios']['bytes_per_image_reduction']:.2f}x fewer).", ""]
    lines += comparison_tables(section, "Ratios, encoded-whole / client-whole:")
    return lines


def summary_lines(section: dict) -> list[str]:
    if not section or not section.get("points"):
        return []
    lines = [f"  whole-image analysis on the server: bytes/photo reduced "
             f"{section['ratios']['bytes_per_image_reduction']:.2f}x"]
    for r in section["ratios"]["per_concurrency"]:
        lines.append(f"    c={r['concurrency']:<2} encoded-whole / client-whole: images/s {r['throughput']:.2f}x, "
                     f"server CPU/image {r['server_cpu_per_image']:.2f}x, "
                     f"client CPU/image {r['client_cpu_per_image']:.2f}x")
    return lines
