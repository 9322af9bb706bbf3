"""The ``video`` stage's part of the report: its table, time split and verdict line in bench.md, what the
command prints, and ``video.png`` (where a clip's time goes), all from the section
:func:`~deepfake_edge.benchmarks.video.video_stage` fills."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepfake_edge.benchmarks.report import _fmt, _table
from deepfake_edge.benchmarks.video import FAST_SPLIT_STEPS, SPLIT_STEPS, TARGET_S, verdict
from deepfake_edge.benchmarks.whole_image import format_batch_sizes

POINT_HEADER = ["mode", "frame concurrency", "s per clip (p50)", "runs (s)", "frames", "frames/s", "regions/frame",
                "open s", "decode s", "inference wait s", "rest s", "Triton requests/frame",
                "executed batch sizes (size:executions)", "client + server CPU ms/frame"]


def point_rows(points: list[dict]) -> list[list[str]]:
    rows = []
    for p in points:
        t = p["timings_s"]
        rows.append([p["mode"], str(p["concurrency"]), _fmt(p["total_p50_s"], 2),
                     ", ".join(_fmt(s, 2) for s in p["totals_s"]), str(p["frames_per_run"]),
                     _fmt(p["frames_per_s"], 2), _fmt(p["regions_per_frame"], 1), _fmt(t["open"], 3),
                     _fmt(t["decode"], 2), _fmt(t["inference_wait"], 2), _fmt(t["rest"], 2),
                     _fmt(p.get("requests_per_frame"), 2), format_batch_sizes(p.get("batch_sizes", {})),
                     f"{_fmt(p.get('client_cpu_ms_per_frame'), 0)} + {_fmt(p.get('server_cpu_ms_per_frame'), 0)}"])
    return rows


def split_rows(split: dict) -> list[list[str]]:
    """One row per step: whole and fast, ms per frame and s per clip."""
    whole = {s["step"]: s for s in split["whole"]["steps"]}
    fast = {s["step"]: s for s in split["fast"]["steps"]}
    names = [*SPLIT_STEPS[:-1], FAST_SPLIT_STEPS[1], SPLIT_STEPS[-1]]
    rows = [["open (container, first frame)", "–", _fmt(split["open_s"], 3), "–", _fmt(split["open_s"], 3)]]
    for name in names:
        w, f = whole.get(name), fast.get(name)
        rows.append([name, _fmt(w["ms_per_frame"]) if w else "–", _fmt(w["s_per_clip"], 2) if w else "–",
                     _fmt(f["ms_per_frame"]) if f else "–", _fmt(f["s_per_clip"], 2) if f else "–"])
    rows.append(["sum", _fmt(split["whole"]["sum_s"] / split["frames"] * 1e3), _fmt(split["whole"]["sum_s"], 2),
                 _fmt(split["fast"]["sum_s"] / split["frames"] * 1e3), _fmt(split["fast"]["sum_s"], 2)])
    return rows


def _target_line(section: dict) -> str:
    answer = verdict(section)
    if answer.get("met") is None:
        if not answer.get("full_clip", True):
            return (f"The issue's target ({answer['target_s']:g} s for the 10 s clip) is not judged: this run's "
                    f"clip is {section['clip']['duration_s']:g} s (`--quick`).")
        return ""
    faster = answer.get("whole_fastest_concurrency")
    return (f"**The issue's target, the 10 s 720p clip analysed in ≤ {answer['target_s']:g} s at "
            f"{section['sample_fps']:g} fps (whole mode, the default), is {'met' if answer['met'] else 'MISSED'}**: "
            f"{_fmt(answer['whole_best_p50_s'], 2)} s (p50"
            + (f", frame concurrency {faster}, the faster of {len([p for p in section['points'] if p['mode'] == 'whole'])}"
               if faster is not None else "") + f"); fast mode {_fmt(answer.get('fast_best_p50_s'), 2)} s.")


def markdown_lines(section: dict) -> list[str]:
    """The stage's part of bench.md: the clip, the point table, the time split, the verdict."""
    if not section:
        return []
    if section.get("skipped"):
        return ["## Video", "", f"Skipped: {section['skipped']}.", ""]
    if not section.get("points"):
        return []
    clip = section["clip"]
    frames = section["points"][0]["frames_per_run"]
    lines = [f"## Video ({clip['duration_s']:g} s {clip['width']}x{clip['height']} {clip['codec'].upper()} clip, "
             f"{clip['fps']:g} fps, sampled at {section['sample_fps']:g} fps = {frames} frames, "
             f"`{section['model']}`, {section['protocol']})", "",
             f"Clip made from `{Path(clip['source']).name}` (`benchmarks/video.py` `make_clip`, {clip['bytes']:,} "
             f"bytes, sha256 {clip['sha256'][:16]}…); `detect_video` through a sync `DeepfakeClient`, heatmap off; "
             f"per point one warm-up run, then {section['repeats']} measured, in turns with the mode's other "
             "frame concurrency (order reversed every other round); timings are `detect_video`'s "
             "`timings_s` (medians; \"inference wait\" includes the client's face detection, region cutting and "
             "copy-move check, which run on its worker threads; \"rest\" is model info, tracking and scoring); "
             "Triton's counts and the CPU are for the measured runs only.", ""]
    lines += _table(POINT_HEADER, point_rows(section["points"])) + [""]
    split = section.get("time_split") or {}
    if split.get("frames"):
        lines += [f"Where the time goes, every frame once more at concurrency 1, step by step "
                  f"({split['frames']} frames, {_fmt(split['regions_per_frame'], 1)} regions and "
                  f"{_fmt(split['faces_per_frame'], 2)} faces per frame in whole mode; fast mode sends "
                  f"{split['fast_images_per_request']} frames a request):", ""]
        lines += _table(["step", "whole ms/frame", "whole s/clip", "fast ms/frame", "fast s/clip"],
                        split_rows(split)) + [""]
    target = _target_line(section)
    if target:
        lines += [target, ""]
    return lines


def summary_lines(section: dict) -> list[str]:
    """What the command prints for the stage."""
    if not section:
        return []
    if section.get("skipped"):
        return [f"  video: SKIPPED: {section['skipped']}"]
    if not section.get("points"):
        return []
    clip = section["clip"]
    lines = [f"  video ({section['model']}, {clip['duration_s']:g} s {clip['width']}x{clip['height']} clip at "
             f"{section['sample_fps']:g} fps):"]
    for p in section["points"]:
        t = p["timings_s"]
        lines.append(f"    {p['mode']:5} c={p['concurrency']}  {_fmt(p['total_p50_s'], 2):>6} s/clip (p50)  "
                     f"{_fmt(p['frames_per_s'], 2):>6} frames/s  {_fmt(p['regions_per_frame'], 1):>4} regions/frame  "
                     f"decode {_fmt(t['decode'], 2)} s, inference wait {_fmt(t['inference_wait'], 2)} s  "
                     f"batches {format_batch_sizes(p.get('batch_sizes', {}))}")
    split = section.get("time_split") or {}
    if split.get("frames"):
        steps = ", ".join(f"{s['step']} {_fmt(s['s_per_clip'], 2)} s" for s in split["whole"]["steps"])
        lines.append(f"    whole at c=1, step by step: {steps} (sum {_fmt(split['whole']['sum_s'], 2)} s)")
    answer = verdict(section)
    if answer.get("met") is not None:
        lines.append(f"    target <= {answer['target_s']:g} s per 10 s clip (whole): "
                     f"{'met' if answer['met'] else 'MISSED'} ({_fmt(answer['whole_best_p50_s'], 2)} s)")
    return lines


# -- plot -------------------------------------------------------------------------------------------------

def plot(section: dict, path: Path) -> Path:
    """Where the time goes: one stacked bar per point (open, decode, inference wait, rest: p50 medians)
    beside the step-by-step split of whole and fast mode at concurrency 1, with the target marked."""
    from deepfake_edge.benchmarks.plots import _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    colours = {"open": "tab:gray", "decode": "tab:blue", "inference_wait": "tab:orange", "rest": "tab:purple",
               "face detection": "tab:green", "region plan + cut": "tab:olive", "copy-move check": "tab:pink",
               FAST_SPLIT_STEPS[1]: "tab:cyan", "Triton round trip": "tab:red"}
    points = section.get("points", [])
    labels = [f"{p['mode']} c={p['concurrency']}" for p in points]
    left = np.zeros(len(points))
    for key in ("open", "decode", "inference_wait", "rest"):
        widths = np.array([max(p["timings_s"][key], 0.0) for p in points])
        axes[0].barh(labels, widths, left=left, color=colours[key], label=key.replace("_", " "))
        left += widths
    axes[0].set_title("detect_video per clip (p50 of each timing)")
    split = section.get("time_split") or {}
    if split.get("frames"):
        rows = ("whole c=1 (split)", "fast c=1 (split)")
        for row, mode in zip(rows, ("whole", "fast")):
            start = split["open_s"]
            axes[1].barh(row, start, color=colours["open"])
            for step in split[mode]["steps"]:
                axes[1].barh(row, step["s_per_clip"], left=start, color=colours.get(step["step"], "tab:brown"),
                             label=step["step"] if mode == "whole" or step["step"] not in
                             {s["step"] for s in split["whole"]["steps"]} else None)
                start += step["s_per_clip"]
        axes[1].set_title("step by step at concurrency 1 (s per clip)")
    for axis in axes:
        axis.axvline(section.get("target_s", TARGET_S), color="black", linestyle="--", linewidth=1,
                     label=f"target {section.get('target_s', TARGET_S):g} s")
        axis.set_xlabel("seconds per clip")
        axis.grid(True, axis="x", alpha=0.3)
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    clip = section.get("clip", {})
    figure.suptitle(f"video: {clip.get('duration_s', 0):g} s {clip.get('width')}x{clip.get('height')} clip at "
                    f"{section.get('sample_fps', 0):g} fps, {section.get('model', '')} (2 cores shared by client "
                    "and Triton)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    section = results.get("video") or {}
    return [plot(section, out_dir / "video.png")] if section.get("points") else []
