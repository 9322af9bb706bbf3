"""``deepfake-edge bench``: latency and throughput of our service vs the raw engine and the naive design."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from deepfake_edge.benchmarks.settings import DEFAULT_MODELS, DEFAULT_REPOSITORY, STAGES, BenchSettings
from deepfake_edge.cli import CommandError, add_verb, log_to_terminal


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers, "bench", "benchmark engine, served Triton, naive Flask servers and perf_analyzer in one run",
        "Measure, in one run on this machine: the in-process onnxruntime engine (batch 1-32), our "
        "Triton service through the project's client (gRPC/HTTP, FP32/INT8, concurrency 1-32), the naive "
        "Flask + PyTorch server (and Flask + onnxruntime without batching) under the same load, Triton's "
        "perf_analyzer against our server, and whole-image analysis of full-size photos (DeepfakeClient "
        "mode whole vs fast, concurrency 1-16, with the batch sizes Triton executed) and of a 10 s 720p video clip "
        "(detect_video at 2 fps, whole vs fast, frame concurrency 1 and 2, where the time goes), and encoded JPEGs sent "
        "to deepfake_image vs client-side preprocessing to deepfake_b0 (bytes per request, images/s, CPU per image; "
        "`--only encoded`), and 1 and 2 Triton replicas behind HAProxy at concurrency 16 (`--only replicas`, "
        "serve --replicas). Writes bench.json, "
        "bench.md (every comparison as a same-run ratio) and PNG plots to --out, and prints the ratios that "
        "have targets. All servers run on free 127.0.0.1 ports and are stopped at the end.",
        func=run,
    )
    parser.add_argument("--quick", action="store_true", help="CI preset: fewer, shorter points (under 2 minutes)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="output directory (default runs/bench)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help=f"Triton model names to measure (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint the naive servers and PyTorch load (default: the one the served model was "
                        "exported from, per its export_summary.json)")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                        help="embedded Triton model repository (default model_repository/embedded)")
    parser.add_argument("--duration-s", type=float, default=None,
                        help="seconds per load point (default 8, quick 2); each point is also capped in requests")
    parser.add_argument("--max-requests", type=int, default=None, help="requests per load point at most")
    parser.add_argument("--no-perf-analyzer", action="store_true", help="skip the perf_analyzer sweep")
    parser.add_argument("--no-torch-engine", action="store_true", help="skip in-process PyTorch (reference only)")
    parser.add_argument("--only", nargs="+", choices=STAGES, default=None, metavar="STAGE",
                        help=f"run only these stages (of: {', '.join(STAGES)}; default: all), e.g. "
                        "`--only whole-image`")
    parser.add_argument("--whole-image-model", default=None,
                        help="model the whole-image stage measures (default: the first of --models)")
    parser.add_argument("--video-repeats", type=int, default=None,
                        help="measured runs of the clip per video point (default 3, quick 1; each after a warm-up run)")
    parser.add_argument("--whole-image-max-images", type=int, default=None,
                        help="images per whole-mode point at most (default 32, quick 8; each point is also "
                        "capped at 10 s, quick 4 s)")


def run(args: argparse.Namespace) -> int:
    from deepfake_edge.benchmarks.runner import output_files, run_benchmark, summary_lines

    log_to_terminal()
    settings = BenchSettings(out=args.out, checkpoint=args.checkpoint, repository=args.repository,
                             models=tuple(args.models))
    if args.quick:
        settings = settings.with_quick()
    if args.duration_s is not None:
        settings = replace(settings, max_seconds=args.duration_s)
    if args.max_requests is not None:
        settings = replace(settings, max_requests=args.max_requests)
    if args.no_perf_analyzer:
        settings = replace(settings, perf_analyzer=False)
    if args.no_torch_engine:
        settings = replace(settings, torch_engine=False)
    if args.only:
        settings = replace(settings, stages=tuple(s for s in STAGES if s in args.only))
        if args.quick and "replicas" in args.only:  # the quick preset leaves it out unless asked for by name
            settings = replace(settings, replica_counts=BenchSettings.replica_counts)
    if args.whole_image_model is not None:
        settings = replace(settings, whole_image_model=args.whole_image_model)
    if args.video_repeats is not None:
        settings = replace(settings, video_repeats=args.video_repeats)
    if args.whole_image_max_images is not None:
        settings = replace(settings, whole_image_max_images=args.whole_image_max_images)
    _ensure_repository(settings)
    results = run_benchmark(settings)
    print("\n".join(summary_lines(results)))
    print("wrote " + ", ".join(str(p) for p in output_files(settings.out)))
    return 1 if results["failures"] else 0


def _ensure_repository(settings: BenchSettings) -> None:
    """Build the default repository from the demo checkpoint if it is missing (as ``make serve`` does)."""
    if (settings.repository / settings.models[0] / "config.pbtxt").is_file():
        return
    if settings.repository != DEFAULT_REPOSITORY:
        raise CommandError(f"{settings.repository} has no model {settings.models[0]}: export into it first",
                           exit_code=1)
    from deepfake_edge.cli import main

    if main(["export", "--if-missing"]) != 0:
        raise CommandError("could not build model_repository/ (deepfake-edge export --if-missing failed)",
                           exit_code=1)
