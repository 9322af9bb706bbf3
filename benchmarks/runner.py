"""One benchmark run on one machine: engine, our server, perf_analyzer, whole-image analysis, video, the naive
servers (``settings.stages``: all by default, ``bench --only`` picks); then the report.

Systems are measured one at a time (only the system under test is running), all with the same
images. Every server is started here on free 127.0.0.1 ports inside one ``ExitStack``, so it is
stopped when its stage ends, when a stage fails and on Ctrl-C. A stage that fails is recorded under
``failures`` and the run goes on with the others (the command then exits non-zero).
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from deepfake_edge.benchmarks import encoded, plots, report, video, video_report, whole_image
from deepfake_edge.benchmarks import replicas as replica_bench
from deepfake_edge.benchmarks.machine import describe_machine, load_average
from deepfake_edge.benchmarks.ratios import compute_ratios
from deepfake_edge.benchmarks.served import ServedModel, read_served_model
from deepfake_edge.benchmarks.settings import BenchSettings
from deepfake_edge.benchmarks.stages import engine_stage, naive_stage, perf_stage, served_stage
from deepfake_edge.benchmarks.workload import build_workload
from deepfake_edge.digest import file_sha256
from deepfake_edge.serving_contract import precision_of

log = logging.getLogger(__name__)


def count_points(settings: BenchSettings) -> int:
    models, stages = len(settings.models), settings.stages
    return ((models + int(settings.torch_engine) if "engine" in stages else 0)
            + (models * len(settings.protocols) * len(settings.concurrencies) if "served" in stages else 0)
            + (len(settings.naive_engines) * (1 + len(settings.naive_concurrencies)) if "naive" in stages else 0)
            + (models * len(settings.perf_protocols) * len(settings.perf_concurrencies)
               if settings.perf_analyzer and "perf_analyzer" in stages else 0)
            + (whole_image.count_points(settings) if "whole-image" in stages else 0)
            + (video.count_points(settings) if "video" in stages else 0)
            + (encoded.count_points(settings) if "encoded" in stages else 0)
            + (replica_bench.count_points(settings) if "replicas" in stages else 0))


def _served_models(settings: BenchSettings) -> tuple[dict[str, ServedModel], Path]:
    """The models to measure and the checkpoint they were exported from (for PyTorch and the naive servers)."""
    from deepfake_edge.checkpoint import read_card

    models = {name: read_served_model(settings.repository, name) for name in settings.models}
    checkpoint = settings.checkpoint or next((m.checkpoint for m in models.values() if m.checkpoint), None)
    if checkpoint is None:
        raise ValueError(f"cannot tell which checkpoint {settings.repository} was exported from: pass --checkpoint")
    checkpoint_card = read_card(checkpoint)
    for model in models.values():
        if model.card.input_size != checkpoint_card.input_size or model.card.arch != checkpoint_card.arch:
            raise ValueError(f"{checkpoint} ({checkpoint_card.arch}, {checkpoint_card.input_size} px) is not "
                             f"the model served as {model.name} ({model.card.arch}, {model.card.input_size} px)")
    return models, checkpoint


def run_benchmark(settings: BenchSettings, argv: list[str] | None = None) -> dict:
    """Measure everything ``settings`` asks for; write JSON, Markdown and PNGs to ``settings.out``."""
    from tqdm import tqdm

    from deepfake_edge.server.triton import TritonServer, free_port

    started = time.perf_counter()
    settings.out.mkdir(parents=True, exist_ok=True)
    if {"whole-image", "video"} & set(settings.stages):
        whole_image.load_face_detector()  # before anything imports torch (see there)
    models, checkpoint = _served_models(settings)
    settings = replace(settings, checkpoint=checkpoint)
    first = next(iter(models.values()))
    workload = build_workload(first.card)
    results: dict = {
        "schema": 1, "mode": "quick" if settings.quick else "full",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(argv if argv is not None else ["deepfake-edge", *sys.argv[1:]]),
        "machine": describe_machine(),
        "settings": settings.to_dict() | {
            "input_size": first.card.input_size, "images": len(workload), "image_names": list(workload.names),
            "checkpoint_sha256": file_sha256(checkpoint),
            "engine_threads": {name: m.intra_op_threads for name, m in models.items()},
            "triton_instances": {name: m.instances for name, m in models.items()},
            "triton_max_queue_delay_us": {name: m.max_queue_delay_us for name, m in models.items()},
        },
        "stages": list(settings.stages),
        "engine": [], "load": [], "perf_analyzer": [], "whole_image": {}, "video": {}, "encoded": {}, "failures": [],
    }
    interrupted = False
    bar = tqdm(total=count_points(settings), desc="bench", unit="point", dynamic_ncols=True)

    def progress(description: str) -> None:
        bar.set_postfix_str(description, refresh=False)
        bar.update(1)

    def attempt(stage: str, measure) -> list:
        try:
            return measure()
        except Exception as error:  # noqa: BLE001 - one failed stage must not lose the others' figures
            results["failures"].append(f"{stage}: {type(error).__name__}: {error}")
            log.error("%s failed; the other stages go on", stage, exc_info=True)
            return []

    try:
        stages = settings.stages
        if "engine" in stages:
            attempt("engine", lambda: engine_stage(settings, models, workload, progress, results["engine"]))
        with ExitStack() as servers:
            triton = (attempt("triton start", lambda: [servers.enter_context(TritonServer(
                settings.repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()))])
                if {"served", "perf_analyzer", "whole-image", "video", "encoded"} & set(stages) else [])
            if triton:
                grpc_url, http_url = triton[0].grpc_url, triton[0].http_url
                if "served" in stages:
                    attempt("served", lambda: served_stage(
                        settings, grpc_url, http_url, triton[0].pid, models, workload, progress, results["load"],
                        admin_key=triton[0].admin_key))
                if settings.perf_analyzer and "perf_analyzer" in stages:
                    attempt("perf_analyzer", lambda: perf_stage(
                        settings, grpc_url, http_url, models, workload, progress, results["perf_analyzer"],
                        results["failures"], admin_key=triton[0].admin_key))
                if "whole-image" in stages:
                    attempt("whole-image", lambda: whole_image.whole_image_stage(
                        settings, grpc_url, http_url, triton[0].pid, settings.whole_image_target, progress,
                        results["whole_image"], admin_key=triton[0].admin_key))
                if "video" in stages:
                    attempt("video", lambda: video.video_stage(
                        settings, grpc_url, http_url, triton[0].pid, settings.whole_image_target, progress,
                        results["video"], admin_key=triton[0].admin_key))
                if "encoded" in stages:
                    attempt("encoded", lambda: encoded.encoded_stage(
                        settings, grpc_url, triton[0].pid, progress, results["encoded"]))
        if "replicas" in stages:  # its own servers, started once the shared one has stopped
            attempt("replicas", lambda: replica_bench.replicas_stage(
                settings, workload, progress, results.setdefault("replicas", {})))
        if "naive" in stages:
            fp32 = next((m.onnx_path for name, m in models.items() if precision_of(name) == "fp32"), None)
            attempt("naive", lambda: naive_stage(settings, fp32, workload, progress, results["load"]))
    except KeyboardInterrupt:
        # Servers are already stopped (ExitStack); keep what was measured, then let Ctrl-C end the command.
        results["failures"].append("interrupted (Ctrl-C): later stages were not measured")
        interrupted = True
    finally:
        bar.close()
    _finish(results, settings, started)
    if interrupted:
        raise KeyboardInterrupt
    return results


def _finish(results: dict, settings: BenchSettings, started: float) -> None:
    results["machine"]["load_average_after"] = load_average()
    results["duration_s"] = round(time.perf_counter() - started, 1)
    results["ratios"] = [r.to_dict() for r in compute_ratios(results)]
    results["plots"] = [str(p) for p in [*plots.write_plots(results, settings.out),
                                         *video_report.write_plots(results, settings.out),
                                         *([encoded.plot(results["encoded"], settings.out / "encoded.png")]
                                           if results.get("encoded", {}).get("points") else [])]]
    report.write_json(results, settings.out / "bench.json")
    report.write_markdown(results, settings.out / "bench.md")


def summary_lines(results: dict) -> list[str]:
    """What the command prints at the end: the ratios that have targets, failures; the rest is in bench.md."""
    lines = [f"benchmark ({results['mode']}) took {results['duration_s']} s "
             f"on {report.machine_line(results['machine'])}"]
    headline = [r for r in results["ratios"] if r["target"] is not None]
    for ratio in headline:
        verdict = "target met" if ratio["meets"] else "target MISSED"
        sign = ">=" if ratio["higher_is_better"] else "<="
        lines.append(f"  {ratio['value']:7.3f}x  {ratio['name']}  [{verdict}: {sign} {ratio['target']:.2f}]")
    if results["ratios"]:
        lines.append(f"  ({len(results['ratios']) - len(headline)} more ratios in bench.md)")
    lines += whole_image.summary_lines(results.get("whole_image", {}))
    lines += video_report.summary_lines(results.get("video", {}))
    lines += encoded.summary_lines(results.get("encoded", {}))
    lines += replica_bench.summary_lines(results.get("replicas", {}))
    lines += [f"  FAILED {failure}" for failure in results["failures"]]
    return lines


def output_files(out: Path) -> list[Path]:
    return [out / "bench.json", out / "bench.md", *sorted(out.glob("*.png"))]
