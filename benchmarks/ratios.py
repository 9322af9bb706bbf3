"""The comparisons a benchmark run is for, each a ratio of two figures measured in the same run.

- served / in-process: our served throughput against the engine at the same precision, both at the
  best point (best concurrency vs best batch) and at the batch size Triton actually executed.
- ours / naive: throughput and p99 latency at equal client concurrency.
- INT8 / FP32: engine (per batch) and served (best point).
- ours / perf_analyzer: our Python client against Triton's own load generator, equal concurrency.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Ratio:
    """``value`` = numerator / denominator; ``target`` is the goal (None: informational)."""

    name: str
    value: float
    numerator: float
    denominator: float
    target: float | None = None
    higher_is_better: bool = True

    @property
    def meets(self) -> bool | None:
        if self.target is None or math.isnan(self.value):
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def to_dict(self) -> dict:
        return {**asdict(self), "meets": self.meets}


def _ratio(name: str, numerator: float, denominator: float, target: float | None = None,
           higher_is_better: bool = True) -> Ratio:
    value = numerator / denominator if denominator and not math.isnan(denominator) else float("nan")
    return Ratio(name, round(value, 3), round(numerator, 3), round(denominator, 3), target, higher_is_better)


def engine_throughput_at(engine: list[dict], engine_name: str, precision: str, batch: float) -> float:
    """Engine images/s at a (possibly fractional) batch, interpolated linearly in log2(batch)."""
    points = sorted((r["batch"], r["images_per_s"]) for r in engine
                    if r["engine"] == engine_name and r["precision"] == precision)
    if not points or math.isnan(batch):
        return float("nan")
    if batch <= points[0][0]:
        return points[0][1]
    for (b0, v0), (b1, v1) in zip(points, points[1:]):
        if batch <= b1:
            t = (math.log2(batch) - math.log2(b0)) / (math.log2(b1) - math.log2(b0))
            return v0 + t * (v1 - v0)
    return points[-1][1]


def _best(rows: list[dict], key: str = "throughput") -> dict | None:
    return max(rows, key=lambda r: r[key], default=None)


def compute_ratios(results: dict, naive_concurrency: int = 16, served_target: float = 0.95,
                   naive_throughput_target: float = 5.0, naive_p99_target: float = 1 / 3,
                   int8_target: float = 1.5) -> list[Ratio]:
    """Every comparison the run's figures allow (a missing stage just yields fewer ratios)."""
    engine, load, perf = results.get("engine", []), results.get("load", []), results.get("perf_analyzer", [])
    ratios: list[Ratio] = []
    ours = [r for r in load if r["system"].startswith("triton")]
    for precision in ("fp32", "int8", "fp16"):
        engine_rows = [r for r in engine if r["engine"] == "onnxruntime" and r["precision"] == precision]
        best_engine = _best(engine_rows, "images_per_s")
        if best_engine is None:
            continue
        for source, rows in (("client", [r for r in ours if r["precision"] == precision]),
                             ("perf_analyzer", [r for r in perf if r["precision"] == precision])):
            best_served = _best(rows)
            if best_served is not None:
                ratios.append(_ratio(
                    f"served/in-process {precision} best ({source} {best_served['protocol']} "
                    f"c={best_served['concurrency']} vs batch {best_engine['batch']})",
                    best_served["throughput"], best_engine["images_per_s"], served_target))
        for row in [r for r in ours if r["precision"] == precision and r.get("mean_batch")]:
            at_batch = engine_throughput_at(engine, "onnxruntime", precision, row["mean_batch"])
            ratios.append(_ratio(f"served/in-process {precision} {row['protocol']} c={row['concurrency']} "
                                 f"(executed batch {row['mean_batch']:.1f})", row["throughput"], at_batch))
    for naive_system in sorted({r["system"] for r in load if r["system"].startswith("flask")}):
        naive_rows = {r["concurrency"]: r for r in load if r["system"] == naive_system}
        for ours_row in [r for r in ours if r["concurrency"] in naive_rows]:
            naive_row = naive_rows[ours_row["concurrency"]]
            headline = ours_row["concurrency"] == naive_concurrency and naive_system == "flask-torch-fp32"
            label = f"{ours_row['system']}/{naive_system} c={ours_row['concurrency']}"
            ratios.append(_ratio(f"throughput {label}", ours_row["throughput"], naive_row["throughput"],
                                 naive_throughput_target if headline else None))
            ratios.append(_ratio(f"p99 {label}", ours_row["p99_ms"], naive_row["p99_ms"],
                                 naive_p99_target if headline else None, higher_is_better=False))
    onnx = {(r["precision"], r["batch"]): r["images_per_s"] for r in engine if r["engine"] == "onnxruntime"}
    for batch in sorted({b for _, b in onnx}):
        if ("fp32", batch) in onnx and ("int8", batch) in onnx:
            ratios.append(_ratio(f"INT8/FP32 in-process batch {batch}", onnx["int8", batch], onnx["fp32", batch]))
    best = {p: max((v for (q, _), v in onnx.items() if q == p), default=None) for p in ("fp32", "int8")}
    if best["fp32"] and best["int8"]:
        ratios.append(_ratio("INT8/FP32 in-process best batch", best["int8"], best["fp32"], int8_target))
    for source, rows in (("client", ours), ("perf_analyzer", perf)):
        best_fp32 = _best([r for r in rows if r["precision"] == "fp32"])
        best_int8 = _best([r for r in rows if r["precision"] == "int8"])
        if best_fp32 and best_int8:
            ratios.append(_ratio(f"INT8/FP32 served best ({source})", best_int8["throughput"],
                                 best_fp32["throughput"], int8_target))
    ratios += _cpu_cost_ratios(engine, ours, [r for r in load if r["system"] == "flask-torch-fp32"], naive_concurrency)
    for pa_row in perf:
        ours_row = next((r for r in ours if r["precision"] == pa_row["precision"]
                         and r["protocol"] == pa_row["protocol"]
                         and r["concurrency"] == pa_row["concurrency"]), None)
        if ours_row is not None:
            ratios.append(_ratio(f"client/perf_analyzer {ours_row['system']} c={ours_row['concurrency']}",
                                 ours_row["throughput"], pa_row["throughput"]))
    return ratios


def _total_cpu(row: dict) -> float:
    return row.get("client_cpu_ms_per_image", float("nan")) + row.get("server_cpu_ms_per_image", float("nan"))


def _cpu_cost_ratios(engine: list[dict], ours: list[dict], naive: list[dict], concurrency: int) -> list[Ratio]:
    """The same comparisons by CPU ms per image (lower cost = higher capacity), which other load on the
    machine disturbs far less than images/s: what the wall-clock ratios would be on an idle machine
    where every system is CPU-bound."""
    ratios: list[Ratio] = []
    for precision in ("fp32", "int8"):
        cheapest = min((r["cpu_ms_per_image"] for r in engine if r["engine"] == "onnxruntime"
                        and r["precision"] == precision), default=None)
        rows = [r for r in ours if r["precision"] == precision and r["concurrency"] == concurrency]
        for row in rows if cheapest else []:
            ratios.append(_ratio(f"CPU cost in-process/served {row['system']} c={concurrency} (server only)",
                                 cheapest, row["server_cpu_ms_per_image"]))
            ratios.append(_ratio(f"CPU cost in-process/served {row['system']} c={concurrency} (client + server)",
                                 cheapest, _total_cpu(row)))
        for naive_row in [r for r in naive if r["concurrency"] == concurrency]:
            for row in rows:
                ratios.append(_ratio(f"CPU cost naive/ours {naive_row['system']}/{row['system']} c={concurrency}",
                                     _total_cpu(naive_row), _total_cpu(row)))
    fp32 = min((r["cpu_ms_per_image"] for r in engine if r["engine"] == "onnxruntime" and r["precision"] == "fp32"),
               default=None)
    int8 = min((r["cpu_ms_per_image"] for r in engine if r["engine"] == "onnxruntime" and r["precision"] == "int8"),
               default=None)
    if fp32 and int8:
        ratios.append(_ratio("CPU cost FP32/INT8 in-process (cheapest batch each)", fp32, int8))
    return ratios
