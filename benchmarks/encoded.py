"""Encoded files to ``deepfake_image`` vs client-side preprocessing to ``deepfake_b0``: the ``encoded`` stage.

The same full-size photos (:func:`~deepfake_edge.benchmarks.whole_image.build_photo_set`: 1024x768 JPEGs at
quality 90) go to the same server in two ways, one image per request, over gRPC from N closed-loop workers,
the two systems taking turns at each concurrency:

* ``client-preprocessing``: this process decodes and preprocesses each JPEG (the project's ``Preprocessor``,
  as ``DeepfakeClient`` in fast mode) and sends the UINT8 rows to ``deepfake_b0``;
* ``encoded``: the JPEG bytes go as they are to ``deepfake_image``, which decodes them on the server.

Both senders are stock tritonclient, so the only difference is where decoding runs. Per point: images/s,
p50/p99, and CPU ms per image of this process (the client) and of the server's process tree. Bytes per
request are exact: the gRPC message and the HTTP body (binary-data extension) that tritonclient builds,
for the measured photos and for JPEGs of other sizes (:data:`SIZE_TABLE`).

Then the same photos in whole mode, ``deepfake_image_whole`` vs ``DeepfakeClient(mode="whole")``
(benchmarks/encoded_whole.py), when the repository has that model.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from deepfake_edge.benchmarks import encoded_whole
from deepfake_edge.benchmarks.cputime import metered_closed_loop
from deepfake_edge.benchmarks.report import _fmt, _table, comparison_tables, per_concurrency_ratios
from deepfake_edge.serving_contract import IMAGE_BYTES_INPUT, IMAGE_MODEL, IMAGE_MODEL_DETECTOR, INPUT_NAME

SYSTEMS = ("client-preprocessing", "encoded")
MODEL_OF = {"client-preprocessing": IMAGE_MODEL_DETECTOR, "encoded": IMAGE_MODEL}
# Bytes per request of JPEGs at other sizes (width, height, quality); no load is run for these.
SIZE_TABLE = ((640, 480, 85), (1024, 768, 90), (1920, 1080, 90))

Progress = Callable[[str], None]


def _inputs(module, system: str, jpeg: bytes, preprocessor) -> list:
    """The request's input tensor, made with ``module`` (tritonclient.grpc or .http)."""
    if system == "encoded":
        tensor = module.InferInput(IMAGE_BYTES_INPUT, [1, 1], "BYTES")
        data = np.array([[jpeg]], dtype=object)
    else:
        data = preprocessor(jpeg)[None]
        tensor = module.InferInput(INPUT_NAME, list(data.shape), "UINT8")
    if module.__name__.endswith("http"):
        tensor.set_data_from_numpy(data, binary_data=True)
    else:
        tensor.set_data_from_numpy(data)
    return [tensor]


def request_bytes(system: str, jpeg: bytes, preprocessor) -> dict[str, int]:
    """Exact request sizes for one image: the gRPC ``ModelInferRequest`` and the HTTP body."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.grpc._utils import _get_inference_request

    grpc_request = _get_inference_request(MODEL_OF[system], _inputs(grpcclient, system, jpeg, preprocessor), "", "",
                                          None, 0, False, False, 0, None, None)
    body, _ = httpclient.InferenceServerClient.generate_request_body(_inputs(httpclient, system, jpeg, preprocessor))
    return {"grpc_bytes": grpc_request.ByteSize(), "http_bytes": len(body)}


def bytes_table(preprocessor) -> list[dict]:
    """Mean request bytes of both systems for the packaged photos as JPEGs of each :data:`SIZE_TABLE` size."""
    from deepfake_edge.benchmarks.whole_image import build_photo_set

    rows = []
    for width, height, quality in SIZE_TABLE:
        photos = build_photo_set((width, height), quality)
        sizes = {system: [request_bytes(system, jpeg, preprocessor) for jpeg in photos.encoded] for system in SYSTEMS}
        row = {"size": f"{width}x{height}", "quality": quality,
               "jpeg_bytes": round(statistics.fmean(len(jpeg) for jpeg in photos.encoded))}
        for system in SYSTEMS:
            for key in ("grpc_bytes", "http_bytes"):
                row[f"{system}_{key}"] = round(statistics.fmean(size[key] for size in sizes[system]))
        row["reduction_grpc"] = round(row["client-preprocessing_grpc_bytes"] / row["encoded_grpc_bytes"], 2)
        rows.append(row)
    return rows


def _sender(url: str, system: str, photos: tuple[bytes, ...], preprocessor, timeout_s: float):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)

    def send(number: int) -> None:
        jpeg = photos[number % len(photos)]
        result = client.infer(MODEL_OF[system], _inputs(grpcclient, system, jpeg, preprocessor),
                              client_timeout=timeout_s)
        result.as_numpy("fake_probability")

    send.close = client.close  # type: ignore[attr-defined]
    return send


def encoded_stage(settings, grpc_url: str, server_pid: int | None, progress: Progress, out: dict) -> dict:
    """Measure both systems at each of ``settings.encoded_concurrencies``; fills and returns ``out``."""
    from deepfake_edge.benchmarks.whole_image import JPEG_QUALITY, PHOTO_SIZE, build_photo_set
    from deepfake_edge.preprocessing import Preprocessor
    from deepfake_edge.serving_contract import read_repository_config, parse_model_config

    info = parse_model_config(IMAGE_MODEL_DETECTOR, read_repository_config(settings.repository / IMAGE_MODEL_DETECTOR))
    preprocessor = Preprocessor.from_card(info.card)
    photos = build_photo_set()
    out.update({"photo_size": list(PHOTO_SIZE), "jpeg_quality": JPEG_QUALITY, "protocol": "grpc",
                "photos": len(photos), "jpeg_bytes_mean": round(statistics.fmean(map(len, photos.encoded))),
                "points": [], "bytes": bytes_table(preprocessor)})
    for concurrency in settings.encoded_concurrencies:
        for system in SYSTEMS:
            progress(f"encoded {system} c={concurrency}")
            point = metered_closed_loop(
                system, partial(_sender, grpc_url, system, photos.encoded, preprocessor, settings.request_timeout_s),
                concurrency, settings.max_requests, settings.max_seconds, server_pid)
            out["points"].append(point | {"model": MODEL_OF[system]})
    out["ratios"] = ratios(out)
    if (settings.repository / encoded_whole.WHOLE_IMAGE_MODEL / "config.pbtxt").is_file():
        out["whole"] = encoded_whole.whole_stage(settings, grpc_url, server_pid, info, progress)
    return out


def count_points(settings) -> int:
    whole = len(encoded_whole.SYSTEMS) * len(encoded_whole.CONCURRENCIES)
    return len(SYSTEMS) * len(settings.encoded_concurrencies) + whole


def ratios(section: dict) -> dict:
    """encoded / client-preprocessing figures of the same run (bytes: client-preprocessing / encoded)."""
    [measured] = [row for row in section["bytes"] if row["size"] == "x".join(map(str, section["photo_size"]))] or [None]
    return {"bytes_per_request_reduction": measured and measured["reduction_grpc"],
            "per_concurrency": per_concurrency_ratios(section["points"], *SYSTEMS)}


# -- report -----------------------------------------------------------------------------------------------

def markdown_lines(section: dict) -> list[str]:
    if not section or not section.get("points"):
        return []
    width, height = section["photo_size"]
    lines = [f"## Encoded images: `{IMAGE_MODEL}` vs client-side preprocessing to `{IMAGE_MODEL_DETECTOR}`", "",
             f"{section['photos']} photos as {width}x{height} JPEGs at quality {section['jpeg_quality']} "
             f"(mean {section['jpeg_bytes_mean']:,} bytes), one image per request over {section['protocol']}, "
             "N closed-loop workers, the two systems in turns.", ""]
    lines += comparison_tables(section, "Ratios, encoded / client-preprocessing:")
    lines += ["Bytes per request (mean over the photos; gRPC message and HTTP body as tritonclient builds them):", ""]
    lines += _table(["JPEG", "quality", "JPEG bytes", "client-preprocessing gRPC / HTTP", "encoded gRPC / HTTP",
                     "reduction (gRPC)"],
                    [[r["size"], str(r["quality"]), f"{r['jpeg_bytes']:,}",
                      f"{r['client-preprocessing_grpc_bytes']:,} / {r['client-preprocessing_http_bytes']:,}",
                      f"{r['encoded_grpc_bytes']:,} / {r['encoded_http_bytes']:,}", _fmt(r["reduction_grpc"], 2) + "x"]
                     for r in section["bytes"]]) + [""]
    return lines + encoded_whole.markdown_lines(section.get("whole", {}))


def summary_lines(section: dict) -> list[str]:
    if not section or not section.get("points"):
        return []
    lines = [f"  encoded images ({section['photos']} JPEGs {section['photo_size'][0]}x{section['photo_size'][1]} "
             f"q{section['jpeg_quality']}): bytes/request reduced "
             f"{_fmt(section['ratios']['bytes_per_request_reduction'], 2)}x (target >= 3)"]
    for r in section["ratios"]["per_concurrency"]:
        lines.append(f"    c={r['concurrency']:<2} encoded / client-preprocessing: images/s {r['throughput']:.2f}x, "
                     f"server CPU/image {r['server_cpu_per_image']:.2f}x, client CPU/image {r['client_cpu_per_image']:.2f}x")
    return lines + encoded_whole.summary_lines(section.get("whole", {}))


def plot(section: dict, path: Path) -> Path:
    """Throughput by concurrency, and CPU ms per image split client/server, for both systems."""
    from deepfake_edge.benchmarks.plots import _pyplot

    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    concurrencies = sorted({p["concurrency"] for p in section["points"]})
    for system in SYSTEMS:
        points = sorted((p for p in section["points"] if p["system"] == system), key=lambda p: p["concurrency"])
        left.plot([p["concurrency"] for p in points], [p["throughput"] for p in points], marker="o", label=system)
    left.set(xlabel="concurrency (one image per request)", ylabel="images/s", xscale="log", xticks=concurrencies,
             xticklabels=[str(c) for c in concurrencies], title="throughput")
    left.legend()
    width = 0.38
    for offset, system in zip((-width / 2, width / 2), SYSTEMS):
        points = sorted((p for p in section["points"] if p["system"] == system), key=lambda p: p["concurrency"])
        x = np.arange(len(points)) + offset
        server = [p["server_cpu_ms_per_image"] for p in points]
        right.bar(x, server, width, label=f"{system}: server")
        right.bar(x, [p["client_cpu_ms_per_image"] for p in points], width, bottom=server, label=f"{system}: client",
                  alpha=0.5)
    right.set(xticks=np.arange(len(concurrencies)), xticklabels=[f"c={c}" for c in concurrencies],
              ylabel="CPU ms per image", title="CPU per image (server + client)")
    right.legend(fontsize=8)
    width_px, height_px = section["photo_size"]
    figure.suptitle(f"encoded {width_px}x{height_px} JPEGs to {IMAGE_MODEL} vs client preprocessing to "
                    f"{IMAGE_MODEL_DETECTOR}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
