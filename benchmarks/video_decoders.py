"""Which video decoder for ``deepfake_edge.video``: PyAV or OpenCV's FFmpeg backend (``cv2.VideoCapture``).

    python -m deepfake_edge.benchmarks.video_decoders              # ~1.5 min on the 2-core VM
    python -m deepfake_edge.benchmarks.video_decoders --repeats 5

Run from a source checkout: the inputs are made by ``tests/video_samples.py`` (PyAV, offline) in a
temporary folder. Both candidates do the same job: sample at 2 fps (the first frame presented at or after
each instant k / 2 s, by the frame's own timestamp), shrink to <= 1280 px, hand over an RGB PIL image.

- ``pyav``: ``deepfake_edge.video.VideoReader`` itself (the file read through a Python file object,
  container named, frames shrunk by swscale as they are converted), with 1 and 2 decoder threads.
- ``opencv``: ``grab()`` every frame and ``retrieve()`` only the sampled ones (the cheapest way OpenCV
  offers: grab decodes, retrieve converts), times from ``CAP_PROP_POS_MSEC``, ``CAP_PROP_N_THREADS`` 1
  and 2, then ``cv2.resize`` (INTER_AREA) and BGR -> RGB.

(a) speed: wall and CPU seconds (all threads) to sample the whole of OpenCV's ``vtest.avi`` (768x576
MS-MPEG4, 79.5 s at 10 fps; Debian's opencv-doc) and of a 10 s 1280x720 H.264 clip at 25 fps made from
it, no frame cap, median of ``--repeats``. (b) robustness: each bad or odd input of ``tests/video_samples``
decoded in a child process (``--timeout`` s, then it counts as a hang) that reports what the caller gets
and its peak RSS growth. (c) rotation: a phone video (display matrix) comes out with its top on top.
Writes ``benchmarks/results/video_decoders/bench.json`` and ``bench.md``; docs/video.md has the choice.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

DECODERS = ("pyav", "opencv", "opencv_autorotate")
SAMPLE_FPS = 2.0
MAX_SIDE = 1280
RESULTS = Path(__file__).resolve().parent / "results" / "video_decoders"
_EPSILON_S = 1e-6


def _samples_module():
    tests = Path(__file__).resolve().parent.parent / "tests"
    if not (tests / "video_samples.py").exists():
        raise SystemExit(f"{tests / 'video_samples.py'} not found: run from a source checkout")
    sys.path.insert(0, str(tests))
    import video_samples

    return video_samples


def sample_pyav(path: Path, threads: int = 2) -> dict:
    """Sample ``path`` with VideoReader (no frame cap); its frames' times, sizes, top-vs-bottom brightness, notes."""
    from deepfake_edge import video

    video.DECODER_THREADS = threads
    limits = video.VideoLimits(sample_fps=SAMPLE_FPS, max_frames=10**6, max_side=MAX_SIDE)
    try:
        with video.VideoReader(path, limits) as reader:
            frames = [(frame.time_s, frame.image) for frame in reader.frames()]
            return _summary(frames) | {"notes": reader.notes}
    except video.BadVideoError as error:
        return {"error": str(error)}


def sample_opencv(path: Path, threads: int = 2, autorotate: bool = False) -> dict:
    """The same job with cv2.VideoCapture (FFmpeg backend): OpenCV gives no reasons, only "not opened" or frames."""
    import cv2
    from PIL import Image

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
    if not capture.isOpened():
        return {"error": "not opened (OpenCV gives no reason)"}
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, int(autorotate))  # off by default in OpenCV 4.11's wheel
    frames, instant = [], 0
    while capture.grab():
        time_s = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
        if time_s + _EPSILON_S < instant / SAMPLE_FPS:
            continue
        ok, bgr = capture.retrieve()
        if not ok:
            break
        height, width = bgr.shape[:2]
        shrink = min(1.0, MAX_SIDE / max(width, height))
        if shrink < 1.0:
            bgr = cv2.resize(bgr, (round(width * shrink), round(height * shrink)), interpolation=cv2.INTER_AREA)
        frames.append((time_s, Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))))
        instant = math.floor(time_s * SAMPLE_FPS + _EPSILON_S) + 1
    capture.release()
    return _summary(frames) | {"notes": []}


def _summary(frames: list) -> dict:
    from PIL import ImageStat

    if not frames:
        return {"frames": 0, "times": [], "size": None, "top_minus_bottom": None}
    image = frames[0][1].convert("L")
    band = max(1, image.height // 8)
    top = ImageStat.Stat(image.crop((0, 0, image.width, band))).mean[0]
    bottom = ImageStat.Stat(image.crop((0, image.height - band, image.width, image.height))).mean[0]
    return {"frames": len(frames), "times": [round(time_s, 3) for time_s, _ in frames[:12]],
            "size": list(frames[0][1].size), "top_minus_bottom": round(top - bottom, 1)}


def run_one(decoder: str, path: Path, threads: int = 2) -> dict:
    if decoder == "pyav":
        return sample_pyav(path, threads)
    return sample_opencv(path, threads, autorotate=decoder == "opencv_autorotate")


def speed(path: Path, repeats: int) -> list[dict]:
    rows = []
    for decoder in ("pyav", "opencv"):
        for threads in (1, 2):
            walls, cpus, result = [], [], {}
            for _ in range(repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                result = run_one(decoder, path, threads)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            rows.append({"input": path.name, "decoder": decoder, "threads": threads, "frames": result.get("frames"),
                         "wall_s": round(statistics.median(walls), 3), "cpu_s": round(statistics.median(cpus), 3)})
            print(f"  {path.name:14} {decoder:7} threads={threads}: {rows[-1]['wall_s']:.2f} s wall, "
                  f"{rows[-1]['cpu_s']:.2f} s CPU, {rows[-1]['frames']} frames", flush=True)
    return rows


def isolated(decoder: str, path: Path, timeout_s: float) -> dict:
    """``run_one`` in a child process: a crash or a hang is an outcome, not the end of the benchmark."""
    command = [sys.executable, "-m", "deepfake_edge.benchmarks.video_decoders", "--one", decoder, str(path)]
    started = time.perf_counter()
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"outcome": f"hang (> {timeout_s:.0f} s)"}
    if child.returncode != 0:
        return {"outcome": f"crash (exit {child.returncode})", "stderr": child.stderr[-300:]}
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["seconds"] = round(time.perf_counter() - started, 2)
    if "error" in result:
        result["outcome"] = f"refused: {result['error']}"
    else:
        said = "; ".join(result["notes"]) or "nothing said"
        result["outcome"] = f"{result['frames']} frames; {said}"
    return result


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: a child keeps its parent's peak across exec."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def _one(decoder: str, path: str) -> None:
    baseline = peak_rss_mb()
    result = run_one(decoder, Path(path))
    result["peak_rss_growth_mb"] = round(peak_rss_mb() - baseline)
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a child counts as hung")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=2, metavar=("DECODER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        for library in ("av", "cv2"):  # both loaded before the baseline RSS, in both arms
            importlib.import_module(library)
        _one(*args.one)
        return 0
    samples = _samples_module()
    from deepfake_edge.benchmarks.machine import describe_machine

    machine = describe_machine()  # its load average is the one before the run
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        print("(a) speed, sampling at 2 fps, median of", args.repeats, flush=True)
        speed_rows = speed(samples.VTEST, args.repeats) + speed(samples.hd_clip(folder), args.repeats)
        inputs = {name: maker(folder) for name, (maker, _, _) in samples.BAD_VIDEOS.items()}
        inputs |= {"8k (7680x4320)": samples.eight_k(folder), "variable frame rate": samples.variable_rate(folder),
                   "animated GIF": samples.animated_gif(folder)}
        inputs |= {f"phone, rotation {degrees}": samples.rotated_phone(folder, degrees) for degrees in (-90, 90, 180)}
        print("(b, c) bad and odd inputs, each in a child process", flush=True)
        robustness = []
        for name, path in inputs.items():
            for decoder in DECODERS:
                if decoder == "opencv_autorotate" and not name.startswith("phone"):
                    continue
                row = {"input": name, "decoder": decoder} | isolated(decoder, path, args.timeout)
                robustness.append(row)
                print(f"  {name:22} {decoder:17} {row['outcome'][:110]}", flush=True)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
              "versions": _versions(), "speed": speed_rows, "robustness": robustness,
              "vfr_expected_times": [0.0, 0.9, 1.0, 1.7, 2.5, 3.1],
              "load_average_after": [round(load, 2) for load in os.getloadavg()]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench.md").write_text("\n".join(markdown(report)) + "\n")
    print("\n".join(markdown(report)))
    return 0


def _versions() -> dict:
    import av
    import cv2

    return {"av": av.__version__, "ffmpeg_in_av": ".".join(map(str, av.library_versions["libavcodec"])),
            "opencv": cv2.__version__,
            "ffmpeg_in_opencv": cv2.getBuildInformation().split("avcodec:")[1].split("(")[1].split(")")[0]}


def markdown(report: dict) -> list[str]:
    machine = report["machine"]
    lines = [f"# Video decoders ({report['date']})", "",
             f"Machine: {machine['cpu_model']}, {machine['cpu_cores']} cores, {machine['memory_gib']} GiB, "
             f"GPU: {machine['gpu'] or 'none'}; load average before {machine['load_average_before']}, after "
             f"{report['load_average_after']} (a shared VM: wall times move with it, CPU times less). "
             f"Versions: {report['versions']}.", "",
             "## (a) Speed: sample at 2 fps, shrink to <= 1280 px, RGB PIL images (median)", "",
             "| input | decoder | decoder threads | frames sampled | wall s | CPU s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['input']} | {r['decoder']} | {r['threads']} | {r['frames']} | {r['wall_s']:.2f} "
              f"| {r['cpu_s']:.2f} |" for r in report["speed"]]
    lines += ["", "## (b, c) Bad and odd inputs (child process each; times in s from the first frame)", "",
              "| input | decoder | what the caller gets | first times | top - bottom | peak RSS growth MB | s |",
              "|---|---|---|---|---|---|---|"]
    for r in report["robustness"]:
        times = ", ".join(f"{t:g}" for t in r.get("times", [])[:6])
        lines.append(f"| {r['input']} | {r['decoder']} | {r['outcome']} | {times} | {r.get('top_minus_bottom', '')} "
                     f"| {r.get('peak_rss_growth_mb', '')} | {r.get('seconds', '')} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
