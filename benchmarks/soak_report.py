"""Write a soak run's results: ``soak.json`` (figures), ``soak_timeseries.json`` (RSS samples and the
latency of every valid request), ``soak.md`` (for people) and ``soak.png`` (RSS and latency over time)."""

from __future__ import annotations

import json
from pathlib import Path

SERIES_KEYS = ("rss_samples", "timeline")


def write_report(results: dict, out: Path, command: str) -> list[Path]:
    """Write every output file into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {key: value for key, value in results.items() if key not in SERIES_KEYS}
    figures["command"] = command
    paths = [out / "soak.json", out / "soak_timeseries.json", out / "soak.md", out / "soak.png"]
    paths[0].write_text(json.dumps(figures, indent=2) + "\n")
    paths[1].write_text(json.dumps({key: results.get(key, []) for key in SERIES_KEYS}) + "\n")
    paths[2].write_text(markdown(figures))
    plot(results, paths[3])
    return paths


def markdown(results: dict) -> str:
    """The human summary: targets, outcomes by kind, errors by class, RSS per process, latency."""
    requests, machine = results["requests"], results["machine"]
    settings = results["settings"]
    lines = [
        f"# Soak: {requests['sent']:,} requests at concurrency {settings['concurrency']}",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cpu_cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, onnxruntime {machine['onnxruntime']}, {machine['triton']}. "
        f"Load average before {machine['load_average_before']}, after {machine.get('load_average_after')}.",
        "",
        f"Duration {results['duration_s']} s ({requests['sent'] / max(results['duration_s'], 1e-9):.1f} requests/s); "
        f"{requests['valid_sent']:,} valid and {requests['malformed_sent']:,} malformed requests sent; "
        f"**{results['served']:,} valid requests served**.",
        "",
        "## Targets",
        "",
        "| target | met |",
        "|---|---|",
    ]
    lines += [f"| {name.replace('_', ' ')} | {'yes' if met else '**NO**'} |"
              for name, met in results["targets"].items()]
    lines += ["", f"Server crashes: {len(results['crash_events'])}  ", f"5xx from the web API: {results['web_5xx']}  ",
              f"Tracebacks in the serve log: {results['web_app_tracebacks']}", ""]
    lines += [f"- crash: {event}" for event in results["crash_events"]]
    lines += ["", "Listening sockets: " + ", ".join(f"`{address}`" for address in results["listening"])]
    lines += ["", "## Outcomes by kind", "", "| kind | channel | sent | expected | outcomes |", "|---|---|---|---|---|"]
    for name, row in requests["by_kind"].items():
        outcomes = ", ".join(f"{label} {count}" for label, count in row["outcomes"].items())
        lines.append(f"| {name} | {row['channel']} | {row['sent']} | {row['expected']} | {outcomes} |")
    lines += ["", "## Errors by class", "", "Expected rejections (malformed input refused with a clear error):", ""]
    lines += [f"- {label}: {count}" for label, count in results["expected_rejections"].items()] or ["- none"]
    lines += ["", "Unexpected outcomes:", ""]
    lines += [f"- {label}: {count}" for label, count in results["unexpected"].items()] or ["- none"]
    lines += [f"  - e.g. `{example}`" for example in results["unexpected_examples"][:5]]
    lines += ["", "## Memory (RSS, MB)", "",
              "Ready = right after start; warm = after the warm-up requests; last = the last reading; max = the "
              "highest reading during the soak. Growth compares the median RSS of the first and of the last "
              "tenth of the soak (one reading per second), so a leak shows and the swing with load does not.",
              "", "| process | ready | warm | first tenth | last tenth | last | max | growth |",
              "|---|---|---|---|---|---|---|---|"]
    for process, row in results["rss"].items():
        growth = "gone" if row["growth"] is None else f"{row['growth']:+.1%}"
        lines.append(f"| {process} | {row['ready_mb']} | {row['warm_mb']} | {row['first_tenth_mb']} | "
                     f"{row['last_tenth_mb']} | {row['last_mb']} | {row['max_mb']} | {growth} |")
    lines += ["", "## Latency of valid requests during the mix (ms)", "",
              "| channel | count | p50 | p95 | p99 | max |", "|---|---|---|---|---|---|"]
    for channel, row in results["latency_ms"].items():
        if row.get("count"):
            lines.append(f"| {channel} | {row['count']} | {row['p50']} | {row['p95']} | {row['p99']} | {row['max']} |")
    lines += ["", "grpc/http: `DeepfakeClient.detect` (client-side decoding included); web: `POST /api/detect` "
              "with the default heatmap (both models + overlay PNG).", "", "## Triton's own counters", "",
              "| model | inferences | executions (batches) | success | fail |", "|---|---|---|---|---|"]
    for model, row in results["triton_statistics"].items():
        if isinstance(row, dict):
            lines.append(f"| {model} | {row['inferences']} | {row['executions']} | {row['success']} | {row['fail']} |")
    lines += ["", f"Left behind after stop: {', '.join(results['leftovers']) or 'nothing'}", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path:
    """RSS of every process over time (left) and rolling p50/p99 latency of valid requests (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, (rss_axis, latency_axis) = plt.subplots(1, 2, figsize=(13, 5))
    samples = results.get("rss_samples", [])
    for process in sorted({name for sample in samples for name in sample["rss_mb"]}):
        points = [(s["t_s"], s["rss_mb"].get(process)) for s in samples if s["rss_mb"].get(process) is not None]
        if points:
            rss_axis.plot(*zip(*points), label=process)
    rss_axis.set(xlabel="time since the soak started (s)", ylabel="RSS (MB)", title="Memory of every process")
    rss_axis.set_ylim(bottom=0)
    rss_axis.legend(fontsize=7)
    timeline = results.get("timeline", [])
    for channel, colour in (("grpc", "tab:blue"), ("http", "tab:cyan"), ("web", "tab:orange")):
        rows = [(t, ms) for t, ms, c in timeline if c == channel]
        if len(rows) < 20:
            continue
        times, latencies = (np.asarray(column) for column in zip(*rows))
        window = max(10, len(rows) // 40)
        starts = range(0, len(rows) - window + 1, window)
        centres = [times[i : i + window].mean() for i in starts]
        latency_axis.plot(centres, [np.percentile(latencies[i : i + window], 50) for i in starts], color=colour,
                          label=f"{channel} p50")
        latency_axis.plot(centres, [np.percentile(latencies[i : i + window], 99) for i in starts], color=colour,
                          linestyle="--", label=f"{channel} p99")
    latency_axis.set(xlabel="time since the soak started (s)", ylabel="latency (ms)",
                     title="Valid requests during the mix (rolling windows)")
    latency_axis.set_ylim(bottom=0)
    latency_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
