"""Whole-image analysis through Triton, beside the single view: the ``whole-image`` stage of ``bench``.

A fixed set of full-size photos (:func:`build_photo_set`: the packaged sample photos, resized and cut
to 1024x768; YuNet finds a face in four, coffee's a false positive) goes through the project's
``DeepfakeClient`` in ``mode="whole"`` (every face, native 224-px tiles over the frame, the global
view: one request of batch N) and in
``mode="fast"`` (the global view alone), from 1-16 closed-loop workers. Per point: images/s,
p50/p99 per image, regions per image, and from Triton's own per-model statistics (an admin API,
read with the server's key just before the measured window opens and after it closes) how many
requests and executions the images became and which batch sizes ran (:class:`TritonCounts`). One
request per image and one execution per request is "the regions of one image reached Triton
together as one batch"; fewer executions than requests means the dynamic batcher merged requests.

:func:`time_split` times one whole-image ``detect`` at concurrency 1 step by step (decode, face
detection, region planning and cutting, the copy-move check when the card has it, the Triton round trip of
the rows) to show where the time goes.
"""

from __future__ import annotations

import io
import queue
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from deepfake_edge.benchmarks.report import _fmt, _table

PHOTO_SIZE = (1024, 768)
JPEG_QUALITY = 90
# (photo, vertical anchor of the 4:3 cut in the resized photo: 0 top, 0.5 centre): the anchors keep the
# faces of astronaut and grace_hopper inside the frame.
PHOTO_SET = (("astronaut", 0.0), ("grace_hopper", 0.3), ("camera", 0.5), ("chelsea", 0.5), ("coffee", 0.5),
             ("rocket", 0.5), ("hubble_deep_field", 0.5), ("retina", 0.5))
MODES = ("whole", "fast")
# "copy-move check" is 0 for a card without the check's calibration (deepfake_edge/copy_move.py).
SPLIT_STEPS = ("decode", "face detection", "region plan + cut", "copy-move check", "Triton round trip")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PhotoSet:
    """``encoded[i]`` is photo ``names[i]`` as a 1024x768 JPEG."""

    names: tuple[str, ...]
    encoded: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.encoded)


def cover_crop(photo: Image.Image, size: tuple[int, int] = PHOTO_SIZE, anchor: float = 0.5) -> Image.Image:
    """``photo`` scaled (Lanczos) to cover ``size`` and cut to it: centred across the excess side,
    ``anchor`` (0 top/left .. 1 bottom/right) along it."""
    width, height = photo.size
    scale = max(size[0] / width, size[1] / height)
    resized = photo.resize((max(size[0], round(width * scale)), max(size[1], round(height * scale))),
                           Image.Resampling.LANCZOS)
    left = round((resized.width - size[0]) * (anchor if resized.width > size[0] else 0.5))
    top = round((resized.height - size[1]) * (anchor if resized.height > size[1] else 0.5))
    return resized.crop((left, top, left + size[0], top + size[1]))


def build_photo_set(size: tuple[int, int] = PHOTO_SIZE, quality: int = JPEG_QUALITY) -> PhotoSet:
    """The stage's photos, deterministic: same names and same JPEG bytes on every call."""
    from deepfake_edge.benchmarks.workload import packaged_photos

    photos = packaged_photos()
    names, encoded = [], []
    for name, anchor in PHOTO_SET:
        buffer = io.BytesIO()
        cover_crop(photos[name], size, anchor).save(buffer, format="JPEG", quality=quality)
        names.append(name)
        encoded.append(buffer.getvalue())
    return PhotoSet(tuple(names), tuple(encoded))


# -- Triton's per-model statistics ------------------------------------------------------------------------

@dataclass(frozen=True)
class TritonCounts:
    """Triton's cumulative counters for one model (all versions): ``requests`` answered, ``inferences``
    (rows, i.e. regions), ``executions`` (model runs) and ``batch_sizes`` {executed batch size: executions}."""

    requests: int
    inferences: int
    executions: int
    queue_ns: int
    compute_infer_ns: int
    batch_sizes: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_stats(cls, stats: dict) -> "TritonCounts":
        """From ``get_inference_statistics(model, as_json=True)`` of either protocol (or the HTTP
        ``/v2/models/<model>/stats`` body); gRPC's JSON writes 64-bit counters as strings."""
        requests = inferences = executions = queue = infer = 0
        batch_sizes: dict[int, int] = {}
        for version in stats.get("model_stats", []):
            inferences += int(version.get("inference_count", 0))
            executions += int(version.get("execution_count", 0))
            detail = version.get("inference_stats", {})  # per request
            requests += int(detail.get("success", {}).get("count", 0))
            queue += int(detail.get("queue", {}).get("ns", 0))
            for batch in version.get("batch_stats", []):  # per execution, by executed batch size
                size = int(batch.get("batch_size", 0))
                count = int(batch.get("compute_infer", {}).get("count", 0))
                infer += int(batch.get("compute_infer", {}).get("ns", 0))
                if count:
                    batch_sizes[size] = batch_sizes.get(size, 0) + count
        return cls(requests, inferences, executions, queue, infer, dict(sorted(batch_sizes.items())))

    @classmethod
    def read(cls, http_url: str, model: str, admin_key: str) -> "TritonCounts":
        """Statistics are an admin API: ``admin_key`` is the server's key."""
        import tritonclient.http

        from deepfake_edge.server.admin_key import admin_headers

        client = tritonclient.http.InferenceServerClient(http_url)
        try:
            return cls.from_stats(client.get_inference_statistics(model, headers=admin_headers(admin_key, "http")))
        finally:
            client.close()

    def since(self, before: "TritonCounts") -> "TritonCounts":
        """What happened between ``before`` and this reading (batch sizes that did not run are dropped)."""
        sizes = {size: count - before.batch_sizes.get(size, 0) for size, count in self.batch_sizes.items()}
        return TritonCounts(self.requests - before.requests, self.inferences - before.inferences,
                            self.executions - before.executions, self.queue_ns - before.queue_ns,
                            self.compute_infer_ns - before.compute_infer_ns,
                            {size: count for size, count in sizes.items() if count > 0})

    def per_image(self, images: int) -> dict:
        """The row fields of a load point that measured ``images`` images."""
        return {
            "triton_requests": self.requests, "triton_inferences": self.inferences,
            "triton_executions": self.executions,
            "batch_sizes": {str(size): count for size, count in self.batch_sizes.items()},  # JSON keys
            "requests_per_image": round(self.requests / images, 3) if images else float("nan"),
            "executions_per_image": round(self.executions / images, 3) if images else float("nan"),
            "mean_batch": round(self.inferences / self.executions, 2) if self.executions else float("nan"),
            "server_queue_ms": round(self.queue_ns / self.requests / 1e6, 3) if self.requests else float("nan"),
            "server_compute_ms_per_execution": (round(self.compute_infer_ns / self.executions / 1e6, 3)
                                                if self.executions else float("nan")),
        }


def format_batch_sizes(batch_sizes: dict) -> str:
    """``{25: 40, 26: 8}`` -> ``"25:40, 26:8"`` (executed batch size : executions), by size."""
    if not batch_sizes:
        return "–"
    return ", ".join(f"{int(size)}:{count}" for size, count in sorted(batch_sizes.items(), key=lambda i: int(i[0])))


def arrival(row: dict) -> str:
    """How one image's rows reached the model, read from Triton's counts for the point."""
    requests, executions = row.get("requests_per_image"), row.get("executions_per_image")
    if not requests or requests != requests:  # missing or NaN
        return "–"
    if row.get("triton_executions", 0) < row.get("triton_requests", 0):
        return f"batcher merged requests ({row['triton_requests']} requests in {row['triton_executions']} executions)"
    if abs(requests - 1) < 1e-9 and abs(executions - 1) < 1e-9:
        return "1 request = 1 execution per image"
    return f"{requests:g} requests, {executions:g} executions per image"


# -- the stage --------------------------------------------------------------------------------------------

def _detect_sender(url: str, model: str, photos: PhotoSet, mode: str, timeout_s: float,
                   regions: list[int]) -> Callable[[int], object]:
    """A load-generator sender: its own ``DeepfakeClient`` (own connection), one photo per call;
    ``regions`` collects the region count of every measured (number >= 0) image."""
    from deepfake_edge.client import DeepfakeClient

    client = DeepfakeClient(url, protocol="grpc", model=model, timeout_s=timeout_s, retries=0)
    client.model_info()

    def send(number: int) -> object:
        detection = client.detect(photos.encoded[number % len(photos)], mode=mode)
        if number >= 0:
            regions.append(len(detection.regions) or 1)  # fast mode lists no regions: one view
        return detection

    send.close = client.close  # type: ignore[attr-defined]
    return send


def load_face_detector() -> None:
    """Load and warm yuface now, in a process that has not imported torch yet.

    torch loads its own libgomp into the global symbol scope; yuface's OpenMP calls, bound at its first
    call, then go to torch's runtime (default threads, spinning) instead of yuface's bundled one set
    to one thread, and face detection costs about 3x the CPU (85-135 against 30 ms per 1024x768 photo
    on the 2-core VM). The client processes the stage stands for never import torch; the bench does (the
    engine stage, the checkpoint card), so :func:`~deepfake_edge.benchmarks.runner.run_benchmark`
    calls this first.
    """
    from deepfake_edge.faces import detect_faces

    detect_faces(np.zeros((64, 64, 3), np.uint8))


def round_trip(triton, model: str, info, rows: np.ndarray, timeout_s: float) -> None:
    """The rows of one request of the client, sent as it sends them: split over the model's instances,
    the parts at once."""
    import tritonclient.grpc

    from deepfake_edge.client.analysis import request_slices
    from deepfake_edge.client.triton_io import make_inputs, make_outputs, read_outputs

    answers: queue.Queue = queue.Queue()
    parts = [rows[part] for part in request_slices(len(rows), info)]
    for batch in parts:
        triton.async_infer(model, make_inputs(tritonclient.grpc, batch),
                           lambda result, error: answers.put((result, error)),
                           outputs=make_outputs(tritonclient.grpc, False), client_timeout=timeout_s)
    for _ in parts:
        result, error = answers.get(timeout=timeout_s)
        if error is not None:
            raise error
        read_outputs(result, len(result.as_numpy("logit")), info, False)


def time_split(grpc_url: str, model: str, photos: PhotoSet, repeats: int, timeout_s: float = 60.0) -> dict:
    """One whole-image detect at concurrency 1, step by step, ``repeats`` times per photo (after one
    untimed ``detect`` of each, which also counts its faces and regions): mean ms per image of each
    client step, of the full ``detect`` (both modes), and the region and face counts per photo."""
    import tritonclient.grpc

    from deepfake_edge.client import DeepfakeClient
    from deepfake_edge.client.analysis import read_image
    from deepfake_edge.copy_move import find_copy_move
    from deepfake_edge.faces import detect_faces
    from deepfake_edge.regions import cut_regions, plan_regions

    times: dict[str, list[float]] = {step: [] for step in (*SPLIT_STEPS, "detect whole", "detect fast")}
    per_photo: list[dict] = []
    with DeepfakeClient(grpc_url, protocol="grpc", model=model, timeout_s=timeout_s, retries=0) as client:
        info = client.model_info()
        check = info.card.copy_move_calibration is not None
        triton = tritonclient.grpc.InferenceServerClient(grpc_url)
        try:
            round_trip(triton, model, info, np.zeros((1, *info.input_shape), np.uint8), timeout_s)  # untimed
            for name, data in zip(photos.names, photos.encoded):  # untimed: yuface, the client's lanes
                detection = client.detect(data, mode="whole")
                per_photo.append({"name": name, "faces": sum(r.kind == "face" for r in detection.regions),
                                  "regions": len(detection.regions), "jpeg_bytes": len(data),
                                  "notes": list(detection.notes)})
            for _ in range(repeats):
                for data in photos.encoded:
                    clock = [time.perf_counter()]
                    image = read_image(data, client.max_pixels)
                    clock.append(time.perf_counter())
                    faces = detect_faces(np.asarray(image))
                    clock.append(time.perf_counter())
                    plan = plan_regions(image.size, info.preprocessor, faces)
                    rows = cut_regions(image, plan, info.preprocessor)
                    clock.append(time.perf_counter())
                    if check:
                        find_copy_move(image)
                    clock.append(time.perf_counter())
                    round_trip(triton, model, info, rows, timeout_s)
                    clock.append(time.perf_counter())
                    client.detect(data, mode="whole")
                    clock.append(time.perf_counter())
                    client.detect(data, mode="fast")
                    clock.append(time.perf_counter())
                    for step, began, ended in zip(times, clock, clock[1:]):
                        times[step].append(ended - began)
        finally:
            triton.close()
    mean = {step: statistics.fmean(values) * 1e3 for step, values in times.items()}
    total = mean["detect whole"]
    steps = [{"step": step, "mean_ms": round(mean[step], 2),
              "median_ms": round(statistics.median(times[step]) * 1e3, 2),
              "share": round(mean[step] / total, 3) if total else float("nan")} for step in SPLIT_STEPS]
    other = total - sum(mean[step] for step in SPLIT_STEPS)
    # Negative when steps overlap inside detect: its copy-move check runs while Triton answers the rows.
    steps.append({"step": "rest of detect (thread hand-off, results, less overlap)", "mean_ms": round(other, 2),
                  "median_ms": float("nan"), "share": round(other / total, 3) if total else float("nan")})
    return {"repeats": repeats, "images": len(times["detect whole"]), "steps": steps,
            "detect_whole_ms": round(total, 2), "detect_fast_ms": round(mean["detect fast"], 2),
            "photos": per_photo}


def whole_image_stage(settings, grpc_url: str, http_url: str, server_pid: int | None, model: str,
                      progress: Progress, out: dict | None = None, *, admin_key: str) -> dict:
    """The stage: the time split at concurrency 1, then both modes at every concurrency of
    ``settings.whole_image_concurrencies``. Fills ``out`` in place (an interrupted run keeps what it
    measured) and returns it."""
    from deepfake_edge.benchmarks.cputime import CpuMeter
    from deepfake_edge.benchmarks.loadgen import run_closed_loop
    from deepfake_edge.serving_contract import precision_of

    out = {} if out is None else out
    photos = build_photo_set()
    out.update({"model": model, "precision": precision_of(model), "protocol": "grpc",
                "photo_size": list(PHOTO_SIZE), "photos": [{"name": n} for n in photos.names],
                "bounds": {"whole": [settings.whole_image_max_images, settings.whole_image_max_seconds],
                           "fast": [settings.whole_image_fast_max_images, settings.whole_image_fast_max_seconds]},
                "points": [], "time_split": {}})
    progress(f"whole-image {model} time split")
    split = time_split(grpc_url, model, photos, settings.whole_image_split_repeats, settings.request_timeout_s)
    out["photos"] = split.pop("photos")
    out["time_split"] = split
    for mode in MODES:
        max_images = settings.whole_image_max_images if mode == "whole" else settings.whole_image_fast_max_images
        max_seconds = settings.whole_image_max_seconds if mode == "whole" else settings.whole_image_fast_max_seconds
        for concurrency in settings.whole_image_concurrencies:
            progress(f"whole-image {mode} c={concurrency}")
            regions: list[int] = []
            senders: list = []
            window: dict = {}

            def make_sender(mode=mode, regions=regions, senders=senders):
                sender = _detect_sender(grpc_url, model, photos, mode, settings.request_timeout_s, regions)
                senders.append(sender)
                return sender

            def open_window(window=window) -> None:  # every worker has warmed up; none is sending
                window["before"] = TritonCounts.read(http_url, model, admin_key)
                window["meter"] = CpuMeter(server_pid).start()

            result = run_closed_loop(f"{mode}-{precision_of(model)}", make_sender, concurrency, max_images,
                                     max_seconds, warmup_per_worker=1, on_window_open=open_window)
            images = result.requests + result.errors
            after = TritonCounts.read(http_url, model, admin_key)
            for sender in senders:
                sender.close()
            row = result.to_dict() | {"mode": mode, "model": model, "precision": precision_of(model),
                                      "regions_per_image": round(statistics.fmean(regions), 2) if regions
                                      else float("nan")}
            if "before" in window:
                row |= after.since(window["before"]).per_image(images)
                row |= window["meter"].per_image(images)
            out["points"].append(row)
    return out


def count_points(settings) -> int:
    return 1 + len(MODES) * len(settings.whole_image_concurrencies)


# -- report -----------------------------------------------------------------------------------------------

POINT_HEADER = ["mode", "concurrency", "images/s", "p50 ms", "p99 ms", "images", "errors", "regions/image",
                "Triton requests/image", "executions/image", "executed batch sizes (size:executions)",
                "server queue ms", "server compute ms/execution", "client + server CPU ms/image"]


def point_rows(points: list[dict]) -> list[list[str]]:
    return [[p["mode"], str(p["concurrency"]), _fmt(p["throughput"], 2), _fmt(p["p50_ms"]), _fmt(p["p99_ms"]),
             str(p["requests"]), str(p["errors"]), _fmt(p.get("regions_per_image"), 1),
             _fmt(p.get("requests_per_image"), 2), _fmt(p.get("executions_per_image"), 2),
             format_batch_sizes(p.get("batch_sizes", {})), _fmt(p.get("server_queue_ms"), 1),
             _fmt(p.get("server_compute_ms_per_execution"), 1),
             f"{_fmt(p.get('client_cpu_ms_per_image'), 0)} + {_fmt(p.get('server_cpu_ms_per_image'), 0)}"]
            for p in points]


def markdown_lines(section: dict) -> list[str]:
    """The stage's part of bench.md: photos, the load table, the time split."""
    if not section or not section.get("points"):
        return []
    width, height = section.get("photo_size", PHOTO_SIZE)
    photos = section.get("photos", [])
    lines = [f"## Whole-image analysis ({width}x{height} photos, `{section['model']}`, "
             f"{section.get('protocol', 'grpc')}, whole vs fast)", "",
             f"{len(photos)} photos: " + ", ".join(
                 f"{p['name']} ({p['regions']} regions, {p['faces']} face{'s' if p['faces'] != 1 else ''})"
                 if "regions" in p else p["name"] for p in photos) + ".", "",
             "One image per call of `DeepfakeClient.detect(mode=...)` from N closed-loop workers (one warm-up "
             "image each), " + "; ".join(f"{mode} points ≤ {n} images and ≤ {seconds:g} s" for mode, (n, seconds)
                                          in section.get("bounds", {}).items())
             + "; Triton's counts are for the measured window only.", ""]
    lines += _table(POINT_HEADER, point_rows(section["points"])) + [""]
    for point in section["points"]:
        if point["mode"] == "whole":
            lines.append(f"- whole c={point['concurrency']}: {arrival(point)}")
    lines.append("")
    split = section.get("time_split") or {}
    if split.get("steps"):
        lines += [f"Where one whole-image detect spends its time (concurrency 1, {split['images']} detects, "
                  f"mean per image; `detect` end to end {_fmt(split['detect_whole_ms'])} ms whole, "
                  f"{_fmt(split['detect_fast_ms'])} ms fast):", ""]
        lines += _table(["step", "mean ms", "median ms", "share of detect"],
                        [[s["step"], _fmt(s["mean_ms"]), _fmt(s["median_ms"]), _fmt(s["share"] * 100, 0) + " %"]
                         for s in split["steps"]]) + [""]
    return lines


def summary_lines(section: dict) -> list[str]:
    """What the command prints for the stage: one line per point and the time split."""
    if not section or not section.get("points"):
        return []
    lines = [f"  whole-image analysis ({section['model']}, {len(section.get('photos', []))} photos "
             f"{section['photo_size'][0]}x{section['photo_size'][1]}):"]
    for p in section["points"]:
        lines.append(f"    {p['mode']:5} c={p['concurrency']:<2} {_fmt(p['throughput'], 2):>7} images/s  "
                     f"p50 {_fmt(p['p50_ms']):>7} ms  p99 {_fmt(p['p99_ms']):>7} ms  "
                     f"{_fmt(p.get('regions_per_image'), 1):>4} regions/image  "
                     f"batches {format_batch_sizes(p.get('batch_sizes', {}))}")
    split = section.get("time_split") or {}
    if split.get("steps"):
        steps = ", ".join(f"{s['step']} {_fmt(s['mean_ms'])} ms" for s in split["steps"])
        lines.append(f"    one whole detect at c=1: {steps} (= {_fmt(split['detect_whole_ms'])} ms)")
    return lines
