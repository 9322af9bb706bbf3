"""Write a run's figures as JSON (everything) and Markdown (the tables a person reads)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def per_concurrency_ratios(points: list[dict], baseline: str, other: str) -> list[dict]:
    """``other`` / ``baseline`` per concurrency level of two systems measured in turns: images/s, p50 and CPU
    per image on each side."""
    by = {(p["system"], p["concurrency"]): p for p in points}
    rows = []
    for concurrency in sorted({p["concurrency"] for p in points}):
        base, measured = by.get((baseline, concurrency)), by.get((other, concurrency))
        if base and measured and base["throughput"] > 0:
            rows.append({"concurrency": concurrency,
                         "throughput": round(measured["throughput"] / base["throughput"], 3),
                         "p50": round(measured["p50_ms"] / base["p50_ms"], 3),
                         **{f"{side}_cpu_per_image": round(measured[f"{side}_cpu_ms_per_image"]
                                                           / base[f"{side}_cpu_ms_per_image"], 3)
                            for side in ("server", "client")}})
    return rows


def comparison_tables(section: dict, ratios_title: str) -> list[str]:
    """Two systems measured in turns (the encoded-image stages): every point, then their ratios per
    concurrency level under ``ratios_title``."""
    lines = _table(["system", "concurrency", "images/s", "p50 ms", "p99 ms", "images", "errors",
                    "client CPU ms/image", "server CPU ms/image"],
                   [[p["system"], str(p["concurrency"]), _fmt(p["throughput"]), _fmt(p["p50_ms"]), _fmt(p["p99_ms"]),
                     str(p["requests"]), str(p["errors"]), _fmt(p["client_cpu_ms_per_image"], 1),
                     _fmt(p["server_cpu_ms_per_image"], 1)] for p in section["points"]]) + [""]
    lines += [ratios_title, ""]
    return lines + _table(["concurrency", "images/s", "p50", "server CPU/image", "client CPU/image"],
                          [[str(r["concurrency"]), _fmt(r["throughput"], 2), _fmt(r["p50"], 2),
                            _fmt(r["server_cpu_per_image"], 2), _fmt(r["client_cpu_per_image"], 2)]
                           for r in section["ratios"]["per_concurrency"]]) + [""]


def write_json(results: dict, path: Path) -> Path:
    path.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    return path


def machine_line(machine: dict) -> str:
    load = machine.get("load_average_before", [])
    return (f"{machine.get('cpu_model', '?')}, {machine.get('cpu_cores', '?')} cores, "
            f"{machine.get('memory_gib', '?')} GiB RAM, GPU: {machine.get('gpu') or 'none'}; load average "
            f"before the run {', '.join(_fmt(v, 2) for v in load)}; onnxruntime {machine.get('onnxruntime')}, "
            f"torch {machine.get('torch')}, Triton {machine.get('triton')}")


def markdown(results: dict) -> str:
    """The run as Markdown: machine, engine table, service table, perf_analyzer table, whole-image, video,
    ratios."""
    machine, settings = results.get("machine", {}), results.get("settings", {})
    lines = [f"# deepfake-edge benchmark ({results.get('mode', 'full')} run, {results.get('started', '')})", "",
             f"Machine: {machine_line(machine)}.", "",
             f"Command: `{results.get('command', '')}`; model `{settings.get('checkpoint', '')}` "
             f"({settings.get('input_size', '?')} px), {settings.get('images', '?')} real photos, "
             f"load per point ≤ {settings.get('max_requests', '?')} requests "
             f"and ≤ {settings.get('max_seconds', '?')} s; "
             f"onnxruntime threads: {settings.get('engine_threads', '?')}; "
             f"load average after: {', '.join(_fmt(v, 2) for v in machine.get('load_average_after', []))}.", ""]
    stages = results.get("stages")
    if stages:
        lines += [f"Stages run: {', '.join(stages)} (the load bounds above are the served stages').", ""]
    engine = results.get("engine", [])
    if engine:
        lines += ["## Engine limit (in-process, no server)", ""]
        rows = [[r["engine"], r["precision"], f"{r.get('instances', 1)} x {r['threads']}", str(r["batch"]),
                 _fmt(r["ms_per_batch"], 2), _fmt(r["images_per_s"]), _fmt(r.get("cpu_ms_per_image"), 2)]
                for r in engine]
        lines += _table(["engine", "precision", "instances x threads", "batch", "ms/batch (median)", "images/s",
                         "CPU ms/image"], rows) + [""]
    load = results.get("load", [])
    if load:
        lines += ["## Served (single-image requests from N concurrent clients)", ""]
        rows = [[r["system"], str(r["concurrency"]), _fmt(r["throughput"]), _fmt(r["p50_ms"]), _fmt(r["p95_ms"]),
                 _fmt(r["p99_ms"]), str(r["requests"]), str(r["errors"]), _fmt(r.get("mean_batch")),
                 _fmt(r.get("client_cpu_ms_per_image"), 2), _fmt(r.get("server_cpu_ms_per_image"), 2)] for r in load]
        lines += _table(["system", "concurrency", "images/s", "p50 ms", "p95 ms", "p99 ms", "requests", "errors",
                         "executed batch", "client CPU ms/image", "server CPU ms/image"], rows) + [""]
    perf = results.get("perf_analyzer", [])
    if perf:
        lines += ["## Triton perf_analyzer against the same server", ""]
        rows = [[r["system"], str(r["concurrency"]), _fmt(r["throughput"]), _fmt(r.get("p50_ms")),
                 _fmt(r.get("p95_ms")), _fmt(r.get("p99_ms"))] for r in perf]
        lines += _table(["system", "concurrency", "images/s", "p50 ms", "p95 ms", "p99 ms"], rows) + [""]
    from deepfake_edge.benchmarks.whole_image import markdown_lines

    lines += markdown_lines(results.get("whole_image", {}))
    from deepfake_edge.benchmarks.video_report import markdown_lines as video_lines

    lines += video_lines(results.get("video", {}))
    from deepfake_edge.benchmarks.encoded import markdown_lines as encoded_lines

    lines += encoded_lines(results.get("encoded", {}))
    from deepfake_edge.benchmarks.replicas import markdown_lines as replica_lines

    lines += replica_lines(results.get("replicas", {}))
    ratios = results.get("ratios", [])
    if ratios:
        lines += ["## Ratios (same run)", ""]
        rows = []
        for r in ratios:
            target = "" if r["target"] is None else ("≥ " if r["higher_is_better"] else "≤ ") + _fmt(r["target"], 2)
            verdict = {True: "yes", False: "**no**", None: ""}[r["meets"]]
            rows.append([r["name"], _fmt(r["value"], 2), _fmt(r["numerator"]), _fmt(r["denominator"]), target, verdict])
        lines += _table(["comparison", "ratio", "numerator", "denominator", "target", "met"], rows) + [""]
    failures = results.get("failures", [])
    if failures:
        lines += ["## Stages that failed (details in bench.json)", "",
                  *(f"- {f.splitlines()[0]}" for f in failures), ""]
    plots = results.get("plots", [])
    if plots:
        lines += ["## Plots", "", *(f"![{Path(p).stem}]({Path(p).name})" for p in plots), ""]
    return "\n".join(lines)


def write_markdown(results: dict, path: Path) -> Path:
    path.write_text(markdown(results))
    return path
