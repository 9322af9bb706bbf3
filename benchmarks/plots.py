"""PNG plots of a run: latency vs throughput per system, latency percentiles vs concurrency, engine,
whole-image analysis vs the single view."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _series(results: dict) -> dict[str, list[dict]]:
    """Served points by system (ours, naive and perf_analyzer), sorted by concurrency."""
    series: dict[str, list[dict]] = {}
    for row in results.get("load", []) + results.get("perf_analyzer", []):
        series.setdefault(row["system"], []).append(row)
    return {name: sorted(rows, key=lambda r: r["concurrency"]) for name, rows in sorted(series.items())}


def _style(system: str) -> dict:
    """Line style tells the client (ours, perf_analyzer, naive); colour tells protocol and precision."""
    colours = {"grpc-fp32": "tab:blue", "http-fp32": "tab:cyan", "grpc-int8": "tab:green", "http-int8": "tab:olive",
               "grpc-fp16": "tab:purple", "http-fp16": "tab:pink", "torch-fp32": "tab:red",
               "onnxruntime-fp32": "tab:orange"}
    colour = next((c for key, c in colours.items() if system.endswith(key)), "tab:gray")
    if system.startswith("flask"):
        return {"linestyle": ":", "marker": "s", "color": colour}
    if system.startswith("perf_analyzer"):
        return {"linestyle": "--", "marker": "^", "color": colour, "alpha": 0.7}
    return {"linestyle": "-", "marker": "o", "color": colour}


def _log_axis(axis, which: str = "y") -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    getattr(axis, f"set_{which}scale")("log")
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    getattr(axis, f"{which}axis").set_major_formatter(formatter)
    getattr(axis, f"{which}axis").set_minor_formatter(NullFormatter())


def plot_latency_vs_throughput(results: dict, path: Path) -> Path:
    """p50 and p99 latency against throughput, one curve per system, points labelled by concurrency."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for axis, key in zip(axes, ("p50_ms", "p99_ms")):
        for system, rows in _series(results).items():
            rows = [r for r in rows if r.get(key) == r.get(key) and r["throughput"] > 0]  # drop NaN
            if not rows:
                continue
            axis.plot([r["throughput"] for r in rows], [r[key] for r in rows], label=system, **_style(system))
            for r in rows:
                axis.annotate(str(r["concurrency"]), (r["throughput"], r[key]), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))
        _log_axis(axis)
        axis.set_xlabel("throughput (images/s)")
        axis.set_title(f"{key.split('_')[0]} latency vs throughput (labels: concurrency)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms, log scale)")
    axes[1].legend(fontsize=8, loc="best")
    figure.suptitle(results.get("title", "deepfake-edge: served throughput and latency"))
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def plot_latency_vs_concurrency(results: dict, path: Path) -> Path:
    """p50 / p95 / p99 latency against client concurrency, one panel per percentile."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(16, 5), sharey=True)
    for axis, key in zip(axes, ("p50_ms", "p95_ms", "p99_ms")):
        for system, rows in _series(results).items():
            rows = [r for r in rows if r.get(key) == r.get(key)]
            if rows:
                axis.plot([r["concurrency"] for r in rows], [r[key] for r in rows], label=system, **_style(system))
        axis.set_xscale("log", base=2)
        axis.xaxis.set_major_formatter("{x:g}")
        _log_axis(axis)
        axis.set_xlabel("client concurrency (requests in flight)")
        axis.set_title(key.split("_")[0])
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms, log scale)")
    axes[2].legend(fontsize=8, loc="best")
    figure.suptitle("latency percentiles vs concurrency")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def plot_engine(results: dict, path: Path) -> Path:
    """In-process images/s against batch size, one line per engine and precision."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 5))
    keys = sorted({(r["engine"], r["precision"]) for r in results.get("engine", [])})
    for engine, precision in keys:
        rows = sorted((r for r in results["engine"] if (r["engine"], r["precision"]) == (engine, precision)),
                      key=lambda r: r["batch"])
        axis.plot([r["batch"] for r in rows], [r["images_per_s"] for r in rows], marker="o",
                  label=f"{engine} {precision}")
    axis.set_xscale("log", base=2)
    axis.xaxis.set_major_formatter("{x:g}")
    axis.set_xlabel("batch size")
    axis.set_ylabel("images/s")
    axis.set_title("engine limit (in-process)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def plot_whole_image(results: dict, path: Path) -> Path:
    """Whole-image analysis against the single view: images/s and p50 (p99 dashed) vs concurrency."""
    plt = _pyplot()
    section = results["whole_image"]
    colours = {"whole": "tab:blue", "fast": "tab:orange"}
    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    for mode in ("whole", "fast"):
        rows = sorted((r for r in section["points"] if r["mode"] == mode and r["throughput"] > 0),
                      key=lambda r: r["concurrency"])
        if not rows:
            continue
        concurrency = [r["concurrency"] for r in rows]
        regions = rows[0].get("regions_per_image", float("nan"))
        label = f"{mode} ({regions:.1f} regions/image)" if regions == regions else mode
        axes[0].plot(concurrency, [r["throughput"] for r in rows], marker="o", color=colours[mode], label=label)
        axes[1].plot(concurrency, [r["p50_ms"] for r in rows], marker="o", color=colours[mode], label=f"{mode} p50")
        axes[1].plot(concurrency, [r["p99_ms"] for r in rows], marker="^", linestyle="--", color=colours[mode],
                     alpha=0.6, label=f"{mode} p99")
    for axis, ylabel, title in ((axes[0], "images/s (log scale)", "throughput"),
                                (axes[1], "latency per image (ms, log scale)", "latency")):
        axis.set_xscale("log", base=2)
        axis.xaxis.set_major_formatter("{x:g}")
        _log_axis(axis)
        axis.set_xlabel("client concurrency (images in flight)")
        axis.set_ylabel(ylabel)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    width, height = section.get("photo_size", (0, 0))
    figure.suptitle(f"whole-image analysis vs single view: {width}x{height} photos, {section.get('model', '')}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """Every plot the run's figures allow."""
    paths = []
    if results.get("load") or results.get("perf_analyzer"):
        paths.append(plot_latency_vs_throughput(results, out_dir / "latency_vs_throughput.png"))
        paths.append(plot_latency_vs_concurrency(results, out_dir / "latency_vs_concurrency.png"))
    if results.get("engine"):
        paths.append(plot_engine(results, out_dir / "engine.png"))
    if results.get("whole_image", {}).get("points"):
        paths.append(plot_whole_image(results, out_dir / "whole_image.png"))
    return paths
