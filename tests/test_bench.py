"""The benchmark harness: the naive server answers like PyTorch in-process, and ``bench --quick`` runs end to end.

Speed targets are NOT asserted here (they live in the benchmark's printed ratios); these tests check
that every stage ran, produced sane non-zero figures and wrote its files, and that nothing is left running.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_edge.benchmarks.loadgen import run_closed_loop
from deepfake_edge.benchmarks.naive_server import NaiveServer, predict_sender, request
from deepfake_edge.benchmarks.workload import build_workload
from deepfake_edge.checkpoint import load_checkpoint, save_checkpoint
from deepfake_edge.model_card import ModelCard
from deepfake_edge.models import build_model
from deepfake_edge.preprocessing import Preprocessor, normalize
from deepfake_edge.server.triton import free_port


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    card = ModelCard(arch="small_cnn", input_size=96, resize_size=110)
    return save_checkpoint(tmp_path_factory.mktemp("bench") / "small_cnn.safetensors", build_model("small_cnn"), card)


@pytest.fixture(scope="module")
def naive_server(small_checkpoint):
    with NaiveServer(small_checkpoint, free_port()) as server:
        yield server
    assert server.process is None


def _in_process_probability(checkpoint, data: bytes) -> float:
    model, card = load_checkpoint(checkpoint)
    tensor = torch.from_numpy(Preprocessor.from_card(card)(data)[None])
    with torch.inference_mode():
        return float(torch.sigmoid(model(normalize(tensor, card.mean, card.std)))[0, 0])


def test_naive_server_answers_like_pytorch_in_process(naive_server, small_checkpoint):
    workload = build_workload(ModelCard(arch="small_cnn", input_size=96, resize_size=110))
    send = predict_sender(naive_server.port, workload.encoded)
    for number in (0, 5, 17):
        answer = send(number)
        expected = _in_process_probability(small_checkpoint, workload.encoded[number])
        assert answer["fake_probability"] == pytest.approx(expected, abs=1e-5)
        assert answer["label"] in ("Real", "Fake") and 0.5 <= answer["confidence"] <= 1.0


def test_naive_server_rejects_a_bad_image_and_keeps_serving(naive_server):
    status, answer = request(naive_server.port, "POST", "/predict", b"not an image at all")
    assert status == 400 and "not an image" in answer["error"]
    buffer = io.BytesIO()
    Image.new("RGB", (200, 150), (10, 200, 30)).save(buffer, format="PNG")
    status, answer = request(naive_server.port, "POST", "/predict", buffer.getvalue())
    assert status == 200 and 0.0 <= answer["fake_probability"] <= 1.0


def test_closed_loop_is_bounded_in_requests_and_counts_errors(naive_server):
    workload = build_workload(ModelCard(arch="small_cnn", input_size=96, resize_size=110))
    result = run_closed_loop("naive", lambda: predict_sender(naive_server.port, workload.encoded), concurrency=3,
                             max_requests=12, max_seconds=60)
    assert result.requests == 12 and result.errors == 0
    assert 0 < result.p50_ms <= result.p95_ms <= result.p99_ms and result.throughput > 0

    def failing_sender():
        def send(number):
            if number >= 0 and number % 2:
                raise RuntimeError("boom")
            return number
        return send

    result = run_closed_loop("failing", failing_sender, concurrency=2, max_requests=10, max_seconds=10)
    assert (result.requests, result.errors, result.first_error) == (5, 5, "RuntimeError: boom")


def test_workload_bytes_preprocess_to_its_tensors():
    card = ModelCard(arch="small_cnn", input_size=96, resize_size=110)
    workload = build_workload(card)
    assert len(workload) == 32 and workload.tensors.shape == (32, 3, 96, 96) and workload.tensors.dtype == np.uint8
    assert np.array_equal(Preprocessor.from_card(card)(workload.encoded[7]), workload.tensors[7])
    assert len({t.tobytes() for t in workload.tensors}) == 32  # distinct images


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(900)  # includes building the shared demo_repository if this test is the first to need it
def test_bench_quick_runs_every_stage_end_to_end(demo_repository, small_checkpoint, tmp_path):
    repository = demo_repository / "embedded"
    models = [m for m in ("deepfake_b0", "deepfake_b0_int8") if (repository / m / "config.pbtxt").is_file()]
    assert "deepfake_b0" in models
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "deepfake_edge.cli", "bench", "--quick", "--out", str(out),
               "--repository", str(repository), "--models", *models]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:  # as a person would: Ctrl-C first, so the bench stops what it started
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, output[-4000:]
    assert "served/in-process" in output and "wrote" in output

    results = json.loads((out / "bench.json").read_text())
    assert results["failures"] == [] and results["mode"] == "quick"
    encoded = results["encoded"]  # the encoded-image stage (benchmarks/encoded.py), both systems in the same run
    assert {p["system"] for p in encoded["points"]} == {"client-preprocessing", "encoded"}
    assert all(p["requests"] > 0 and p["errors"] == 0 for p in encoded["points"])
    assert len(encoded["ratios"]["per_concurrency"]) == 2 and encoded["ratios"]["bytes_per_request_reduction"] > 0
    assert results["machine"]["cpu_cores"] >= 1 and results["machine"]["onnxruntime"]
    engine = results["engine"]
    assert {(r["engine"], r["precision"]) for r in engine} >= {("onnxruntime", "fp32")}
    assert all(r["images_per_s"] > 0 and r["ms_per_batch"] > 0 for r in engine)
    systems = {r["system"] for r in results["load"]}
    assert {"triton-grpc-fp32", "triton-http-fp32", "flask-torch-fp32"} <= systems
    for row in results["load"]:
        assert row["requests"] > 0 and row["errors"] == 0 and row["throughput"] > 0, row
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], row
    served = [r for r in results["load"] if r["system"].startswith("triton")]
    assert all(r["mean_batch"] >= 1 for r in served)
    assert max(r["mean_batch"] for r in served if r["concurrency"] > 1) > 1  # the dynamic batcher batched
    assert results["perf_analyzer"] and all(r["throughput"] > 0 for r in results["perf_analyzer"])
    names = [r["name"] for r in results["ratios"]]
    assert any(n.startswith("served/in-process fp32") for n in names)
    assert any(n.startswith("throughput triton-grpc-fp32/flask-torch-fp32") for n in names)
    assert all(math.isfinite(r["value"]) and r["value"] > 0 for r in results["ratios"])

    markdown = (out / "bench.md").read_text()
    assert "## Engine limit" in markdown and "## Ratios" in markdown and "flask-torch-fp32" in markdown
    for name in ("latency_vs_throughput.png", "latency_vs_concurrency.png", "engine.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300
    # this module's own naive_server fixture may still be up: it serves small_checkpoint, the bench does not
    _assert_nothing_left_running(process.pid, repository, not_ours=str(small_checkpoint))


def _assert_nothing_left_running(bench_pid: int, repository, not_ours: str) -> None:
    import psutil

    def leftovers() -> list[str]:
        found = []
        for process in psutil.process_iter(["pid", "cmdline", "status"]):
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(process.info["cmdline"] or [])
            if f"--model-repository={repository.resolve()}" in cmdline and process.info["pid"] != os.getpid():
                # the session's own triton_server fixture may serve the same repository: only ours count
                if f"dfe{bench_pid}_" in cmdline:
                    found.append(cmdline)
            if "deepfake_edge.benchmarks.naive_server" in cmdline and not_ours not in cmdline:
                found.append(cmdline)
        return found

    # Children get SIGTERM from the kernel when the bench exits (PR_SET_PDEATHSIG) and need a moment to
    # finish exiting on a loaded machine: poll, bounded, before calling anything a leak.
    deadline = time.monotonic() + 20
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left
    assert not [p for p in os.listdir("/dev/shm") if f"dfe{bench_pid}_" in p]


# -- whole-image stage ------------------------------------------------------------------------------------

def _stats(version_rows: list[dict]) -> dict:
    """A get_inference_statistics answer of one model version with these counters."""
    return {"model_stats": version_rows}


def _version(requests, inferences, executions, batch_sizes: dict, as_strings=False) -> dict:
    def n(value):
        return str(value) if as_strings else value

    return {"name": "deepfake_b0", "version": "1", "inference_count": n(inferences), "execution_count": n(executions),
            "inference_stats": {"success": {"count": n(requests), "ns": n(requests * 1000)},
                                "queue": {"count": n(requests), "ns": n(requests * 2_000_000)}},
            "batch_stats": [{"batch_size": n(size), "compute_input": {"count": n(count), "ns": n(1)},
                             "compute_infer": {"count": n(count), "ns": n(count * 50_000_000)}}
                            for size, count in batch_sizes.items()]}


def test_whole_image_photo_set_is_deterministic_full_size_with_faces():
    from deepfake_edge.benchmarks.whole_image import PHOTO_SIZE, build_photo_set
    from deepfake_edge.faces import detect_faces
    from deepfake_edge.preprocessing import load_image

    first, second = build_photo_set(), build_photo_set()
    assert first == second and len(first) >= 6 and len(set(first.encoded)) == len(first)
    with_faces = 0
    for name, data in zip(first.names, first.encoded):
        image = load_image(data)
        assert image.size == PHOTO_SIZE == (1024, 768) and data[:2] == b"\xff\xd8", name
        with_faces += bool(detect_faces(np.asarray(image)))
    assert with_faces >= 2
    assert {"astronaut", "grace_hopper"} <= set(first.names)


def test_whole_image_triton_statistics_become_a_batch_size_table():
    from deepfake_edge.benchmarks.whole_image import TritonCounts, arrival, format_batch_sizes

    before = TritonCounts.from_stats(_stats([_version(10, 50, 10, {1: 2, 8: 3, 25: 5})]))
    assert before.batch_sizes == {1: 2, 8: 3, 25: 5} and before.requests == 10 and before.executions == 10
    # gRPC's JSON writes int64 counters as strings; versions add up
    after = TritonCounts.from_stats(_stats([_version(14, 152, 14, {1: 2, 8: 3, 25: 7, 26: 2}, as_strings=True),
                                            _version(0, 0, 0, {})]))
    window = after.since(before)
    assert window.batch_sizes == {25: 2, 26: 2}  # sizes that did not run in the window are dropped
    assert (window.requests, window.inferences, window.executions) == (4, 102, 4)
    row = window.per_image(4)
    assert row["batch_sizes"] == {"25": 2, "26": 2} and row["mean_batch"] == 25.5
    assert row["requests_per_image"] == row["executions_per_image"] == 1.0
    assert row["server_queue_ms"] == 2.0 and row["server_compute_ms_per_execution"] == 50.0
    assert format_batch_sizes(row["batch_sizes"]) == "25:2, 26:2" == format_batch_sizes({26: 2, 25: 2})
    assert format_batch_sizes({}) == "–"
    assert arrival(row) == "1 request = 1 execution per image"
    merged = TritonCounts(8, 8, 3, 0, 0, {2: 1, 3: 2}).per_image(8)
    assert arrival(merged).startswith("batcher merged requests (8 requests in 3 executions)")


def test_whole_image_results_format_as_tables(tmp_path):
    from deepfake_edge.benchmarks import plots, report
    from deepfake_edge.benchmarks.whole_image import POINT_HEADER, markdown_lines, summary_lines

    def point(mode, concurrency, throughput, regions, sizes):
        return {"mode": mode, "concurrency": concurrency, "throughput": throughput, "p50_ms": 1000 / throughput,
                "p99_ms": 2000 / throughput, "requests": 16, "errors": 0, "regions_per_image": regions,
                "triton_requests": 16, "triton_executions": 16, "requests_per_image": 1.0,
                "executions_per_image": 1.0, "batch_sizes": sizes, "server_queue_ms": 0.5,
                "server_compute_ms_per_execution": 120.0, "client_cpu_ms_per_image": 60.0,
                "server_cpu_ms_per_image": 250.0}

    section = {"model": "deepfake_b0", "protocol": "grpc", "photo_size": [1024, 768],
               "photos": [{"name": "astronaut", "faces": 1, "regions": 26}, {"name": "chelsea", "faces": 0,
                                                                             "regions": 25}],
               "points": [point("whole", 1, 3.2, 25.5, {"25": 8, "26": 8}), point("fast", 1, 80.0, 1.0, {"1": 16})],
               "time_split": {"images": 16, "detect_whole_ms": 300.0, "detect_fast_ms": 12.0, "steps": [
                   {"step": "decode", "mean_ms": 10.0, "median_ms": 9.0, "share": 0.033},
                   {"step": "Triton round trip", "mean_ms": 250.0, "median_ms": 240.0, "share": 0.833}]}}
    lines = markdown_lines(section)
    assert lines[0].startswith("## Whole-image analysis (1024x768 photos, `deepfake_b0`")
    assert "astronaut (26 regions, 1 face)" in lines[2] and "chelsea (25 regions, 0 faces)" in lines[2]
    table = [line for line in lines if line.startswith("| whole") or line.startswith("| fast")]
    assert table[0].split(" | ")[:4] == ["| whole", "1", "3.20", "312.5"] and "25:8, 26:8" in table[0]
    assert len(table[0].split(" | ")) == len(POINT_HEADER)
    assert "- whole c=1: 1 request = 1 execution per image" in lines
    assert "| Triton round trip | 250.0 | 240.0 | 83 % |" in lines
    printed = summary_lines(section)
    assert "whole c=1" in printed[1] and "25.5 regions/image" in printed[1] and "batches 25:8, 26:8" in printed[1]
    assert markdown_lines({}) == summary_lines({}) == []
    results = {"whole_image": section}
    assert "## Whole-image analysis" in report.markdown(results)
    [path] = plots.write_plots(results, tmp_path)
    with Image.open(path) as image:
        assert path.name == "whole_image.png" and image.format == "PNG" and image.width > 300


def test_bench_only_selects_stages():
    import argparse

    from deepfake_edge.benchmarks import commands
    from deepfake_edge.benchmarks.runner import count_points
    from deepfake_edge.benchmarks.settings import STAGES, BenchSettings

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["bench", "--only", "whole-image"])
    assert args.only == ["whole-image"]
    assert BenchSettings().stages == STAGES and "whole-image" in STAGES  # the default run includes it
    only = BenchSettings(stages=("whole-image",))
    assert count_points(only) == 1 + 2 * 5 and count_points(BenchSettings()) > count_points(only)
    assert only.whole_image_target == "deepfake_b0"


@pytest.mark.server
@pytest.mark.slow
def test_whole_image_stage_runs_against_triton(triton_server):
    from dataclasses import replace

    from deepfake_edge.benchmarks.settings import BenchSettings
    from deepfake_edge.benchmarks.whole_image import whole_image_stage

    settings = replace(BenchSettings().with_quick(), whole_image_concurrencies=(1, 2), whole_image_max_images=4,
                       whole_image_fast_max_images=8)
    steps: list[str] = []
    section = whole_image_stage(settings, triton_server.grpc_url, triton_server.http_url, triton_server.pid,
                                "deepfake_b0", steps.append, admin_key=triton_server.admin_key)
    assert steps[0].endswith("time split") and len(steps) == 1 + 2 * 2
    assert sum(p["faces"] > 0 for p in section["photos"]) >= 2
    assert all(p["regions"] >= 24 for p in section["photos"])  # 1024x768: 6 x 4 tiles, global, faces
    timed = {s["step"]: s["mean_ms"] for s in section["time_split"]["steps"]}
    assert timed.keys() >= {"decode", "copy-move check", "Triton round trip"}
    assert timed["copy-move check"] > 0, "the demo B0's card runs the copy-move check"
    for point in section["points"]:
        assert point["errors"] == 0 and point["requests"] > 0 and point["throughput"] > 0, point
        assert sum(point["batch_sizes"].values()) == point["triton_executions"]
        if point["mode"] == "whole":
            # The embedded model runs two instances: each image's regions go out as two requests sent at once,
            # each run whole (a batch of half the regions), so both cores work on one image.
            # (+ at most one image in flight from the point before, which the statistics window can catch)
            assert 2 * point["requests"] <= point["triton_requests"] <= 2 * (point["requests"] + 1), point
            assert point["regions_per_image"] >= 24 and min(map(int, point["batch_sizes"])) >= 12
        else:
            assert point["triton_requests"] == point["requests"]
            assert point["regions_per_image"] == 1


# -- video stage ------------------------------------------------------------------------------------------

def _video_point(mode, concurrency, totals, regions, sizes, requests):
    from statistics import median

    frames = 20
    p50 = median(totals)
    return {"mode": mode, "concurrency": concurrency, "repeats": len(totals), "totals_s": totals,
            "total_p50_s": p50, "frames_per_run": frames, "frames_per_s": frames / p50, "regions_per_frame": regions,
            "timings_s": {"open": 0.05, "decode": 0.5, "inference_wait": p50 - 0.6, "heatmap": 0.0, "total": p50,
                          "rest": 0.05},
            "requests_per_frame": requests, "batch_sizes": sizes, "triton_executions": sum(sizes.values()),
            "client_cpu_ms_per_frame": 70.0, "server_cpu_ms_per_frame": 300.0}


def test_video_stage_report_counts_and_skip(tmp_path):
    import argparse
    from dataclasses import replace

    from deepfake_edge.benchmarks import commands, report
    from deepfake_edge.benchmarks.runner import count_points
    from deepfake_edge.benchmarks.settings import STAGES, BenchSettings
    from deepfake_edge.benchmarks.video import verdict, video_stage
    from deepfake_edge.benchmarks.video_report import POINT_HEADER, markdown_lines, summary_lines, write_plots

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    assert parser.parse_args(["bench", "--only", "video"]).only == ["video"] and "video" in STAGES
    only = BenchSettings(stages=("video",))
    assert count_points(only) == 2 + 2 * 2 and count_points(only.with_quick()) == 2 + 2 * 1
    assert only.video_sample_fps == 2.0 and only.video_clip_seconds == 10.0

    section = {"model": "deepfake_b0", "protocol": "grpc", "sample_fps": 2.0, "repeats": 3, "target_s": 10.0,
               "clip": {"source": "/x/vtest.avi", "width": 1280, "height": 720, "fps": 25.0, "duration_s": 10.0,
                        "codec": "h264", "bytes": 963426, "sha256": "0d9940b14e86f887" + "0" * 48},
               "points": [_video_point("whole", 1, [7.9, 8.1, 8.0], 29.0, {"14": 30, "15": 30}, 2.0),
                          _video_point("whole", 2, [11.0, 10.4, 10.6], 29.0, {"14": 20, "29": 20}, 2.0),
                          _video_point("fast", 1, [0.9, 0.8, 0.85], 1.0, {"4": 15}, 0.25),
                          _video_point("fast", 2, [0.7, 0.75, 0.8], 1.0, {"4": 15}, 0.25)],
               "time_split": {"frames": 20, "open_s": 0.05, "fast_images_per_request": 8, "regions_per_frame": 29.0,
                              "faces_per_frame": 0.0,
                              "whole": {"sum_s": 7.55, "steps": [
                                  {"step": "decode", "s_per_clip": 0.5, "ms_per_frame": 25.0},
                                  {"step": "face detection", "s_per_clip": 0.6, "ms_per_frame": 30.0},
                                  {"step": "region plan + cut", "s_per_clip": 0.4, "ms_per_frame": 20.0},
                                  {"step": "Triton round trip", "s_per_clip": 6.0, "ms_per_frame": 300.0}]},
                              "fast": {"sum_s": 0.85, "steps": [
                                  {"step": "decode", "s_per_clip": 0.5, "ms_per_frame": 25.0},
                                  {"step": "fast view (resize + crop)", "s_per_clip": 0.1, "ms_per_frame": 5.0},
                                  {"step": "Triton round trip", "s_per_clip": 0.2, "ms_per_frame": 10.0}]}}}
    answer = verdict(section)
    assert answer["met"] is True and answer["whole_fastest_concurrency"] == 1 and answer["whole_best_p50_s"] == 8.0
    assert answer["fast_fastest_concurrency"] == 2
    section["verdict"] = answer
    lines = markdown_lines(section)
    assert lines[0] == ("## Video (10 s 1280x720 H264 clip, 25 fps, sampled at 2 fps = 20 frames, `deepfake_b0`, "
                        "grpc)")
    table = [line for line in lines if line.startswith(("| whole |", "| fast |"))]
    assert len(table) == 4 and all(len(row.split(" | ")) == len(POINT_HEADER) for row in table)
    assert table[0].split(" | ")[:6] == ["| whole", "1", "8.00", "7.90, 8.10, 8.00", "20", "2.50"]
    assert "14:30, 15:30" in table[0] and "70 + 300" in table[0]
    assert "| Triton round trip | 300.0 | 6.00 | 10.0 | 0.20 |" in lines and "| sum | 377.5 | 7.55 | 42.5 | 0.85 |" in lines
    assert any(line.startswith("**The issue's target") and "is met**: 8.00 s (p50, frame concurrency 1" in line
               for line in lines)
    printed = summary_lines(section)
    assert "whole c=1" in printed[1] and "2.50 frames/s" in printed[1] and "met (8.00 s)" in printed[-1]
    assert "## Video (10 s" in report.markdown({"video": section})
    [path] = write_plots({"video": section}, tmp_path)
    with Image.open(path) as image:
        assert path.name == "video.png" and image.format == "PNG" and image.width > 300

    short = dict(section, clip=dict(section["clip"], duration_s=4.0))
    assert verdict(short)["met"] is None and "not judged" in "\n".join(markdown_lines(short))
    slow = dict(section, points=[_video_point("whole", 2, [12.0], 29.0, {}, 2.0)])
    assert verdict(slow)["met"] is False and verdict(slow)["whole_fastest_concurrency"] is None

    # without vtest.avi the stage says so and measures nothing (no server is reached)
    settings = replace(only, video_source=tmp_path / "vtest.avi")
    skipped = video_stage(settings, "127.0.0.1:1", "127.0.0.1:1", None, "deepfake_b0", lambda step: None,
                          admin_key="unused")
    assert "vtest.avi not found" in skipped["skipped"] and "points" not in skipped
    assert summary_lines(skipped)[0].startswith("  video: SKIPPED") and "Skipped:" in markdown_lines(skipped)[2]
    assert markdown_lines({}) == summary_lines({}) == write_plots({"video": skipped}, tmp_path) == []


def test_video_clip_is_deterministic_720p(tmp_path):
    from deepfake_edge.benchmarks.settings import VTEST
    from deepfake_edge.benchmarks.video import make_clip
    from deepfake_edge.video import probe

    if not VTEST.is_file():
        pytest.skip(f"{VTEST} not installed (opencv-doc)")
    first = make_clip(tmp_path / "a.mp4", seconds=1.0).read_bytes()
    assert make_clip(tmp_path / "b.mp4", seconds=1.0).read_bytes() == first
    info = probe(tmp_path / "a.mp4")
    assert (info.width, info.height, info.fps, info.duration_s, info.codec) == (1280, 720, 25.0, 1.0, "h264")


@pytest.mark.server
@pytest.mark.slow
def test_video_stage_runs_against_triton(triton_server):
    from dataclasses import replace
    from statistics import median

    from deepfake_edge.benchmarks.settings import BenchSettings
    from deepfake_edge.benchmarks.video import video_stage

    settings = replace(BenchSettings(), video_clip_seconds=2.0, video_concurrencies=(1, 2), video_repeats=2)
    if not settings.video_source.is_file():
        pytest.skip(f"{settings.video_source} not installed (opencv-doc)")
    steps: list[str] = []
    section = video_stage(settings, triton_server.grpc_url, triton_server.http_url, triton_server.pid,
                          "deepfake_b0", steps.append, admin_key=triton_server.admin_key)
    assert len(steps) == 2 + 2 * 2 and steps[0].startswith("video: making") and steps[-1] == "video time split"
    clip = section["clip"]
    assert (clip["width"], clip["height"], clip["duration_s"], clip["codec"]) == (1280, 720, 2.0, "h264")
    assert [(p["mode"], p["concurrency"]) for p in section["points"]] == [("whole", 1), ("whole", 2), ("fast", 1),
                                                                          ("fast", 2)]
    split = section["time_split"]
    for point in section["points"]:
        frames = 2 * point["frames_per_run"]
        assert point["frames_per_run"] == 4 and len(point["totals_s"]) == 2, point  # 2 s at 2 fps
        assert point["total_p50_s"] == pytest.approx(median(point["totals_s"]), abs=1e-3)
        assert point["frames_per_s"] == pytest.approx(4 / point["total_p50_s"], rel=1e-2)
        timings = point["timings_s"]
        assert timings["inference_wait"] > 0 and timings["decode"] > 0 and timings["rest"] > -0.05
        assert timings["open"] + timings["decode"] + timings["inference_wait"] <= timings["total"] + 1e-3
        # Triton's counts cover exactly the measured runs: every row sent, once
        assert point["triton_inferences"] == point["rows_sent"] == round(point["regions_per_frame"] * frames), point
        assert sum(point["batch_sizes"].values()) == point["triton_executions"]
        if point["mode"] == "whole":
            # 1280x720: 7 x 4 native tiles + the global view (+ faces); the rows of a frame go out as two
            # requests at once, one per model instance
            assert point["regions_per_frame"] == split["regions_per_frame"] >= 29
            assert point["triton_requests"] == 2 * frames and point["requests_per_frame"] == 2.0
        else:
            assert point["regions_per_frame"] == 1 and point["triton_requests"] == 2  # 4 frames: one request a run
        assert point["client_cpu_ms_per_frame"] > 0 and point["server_cpu_ms_per_frame"] > 0
    # the demo B0's card is calibrated for the copy-move check, so the client runs it on every frame
    assert split["frames"] == 4 and [s["step"] for s in split["whole"]["steps"]] == [
        "decode", "face detection", "region plan + cut", "copy-move check", "Triton round trip"]
    assert all(s["s_per_clip"] > 0 for mode in ("whole", "fast") for s in split[mode]["steps"])
    assert section["verdict"]["met"] is None and section["verdict"]["full_clip"] is False  # a 2 s clip
