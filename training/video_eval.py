"""Video calibration and evaluation of a checkpoint on the test videos of ``data videos`` (training/video_synth.py),
without a server, the way whole_image.py does it for photos.

Each video is sampled by :class:`deepfake_edge.video.VideoReader` with the served defaults (2 frames a second,
at most 120, shrunk to 1280 px) and each sampled frame is analysed as a photo (regions.py: faces, tiles,
the global view) by the checkpoint exported to ONNX as for serving and run by onnxruntime, and, when the card
is calibrated for it, matched with itself by the copy-move check (copy_move.py). A frame's score is its highest
region's, a copy-move finding counting as one more region, as for a photo; faces are followed across frames
(tracks.associate) and every rule of ``tracks.VIDEO_RULES`` makes the video's score from the same frames,
exactly as client/video.py does with a server's answers.

``calibrate_videos`` picks, on the validation videos, the rule with the highest video ROC-AUC (rules within
one (edited, unedited) pair of it tie, and ties go to the simpler rule: peak, then top3_mean, then
track_median) and the lowest threshold at which at most ``max_false_alarm`` of the unedited validation videos
are called Fake, and stores both in the checkpoint's card (``video_rule``, ``video_threshold``) with the
validation report (``metrics["video_validation"]``), and the thresholds that hold that rate on longer videos
(``video_length_thresholds``, training/video_length.py).
``evaluate_videos`` reports, on a split, under the card's rule and each video's threshold for its length:
ROC-AUC overall, per edit family and per footage kind, the share of edited videos caught, the false-alarm
rate, whether every unedited camera-footage segment (vtest.avi/tree.avi) is called Real, and with ``out_dir``
the JSON report and a plot of fake probability over time for real/edited twins.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from deepfake_edge.checkpoint import load_checkpoint, read_card, save_checkpoint
from deepfake_edge.copy_move import copy_move_score
from deepfake_edge.model_card import LABELS, ModelCard, length_threshold
from deepfake_edge.regions import DEFAULT_MAX_FALSE_ALARM, analyse
from deepfake_edge.tracks import DEFAULT_VIDEO_RULE, VIDEO_RULES, associate, video_score
from deepfake_edge.training.video_length import length_thresholds
from deepfake_edge.training.video_synth import VIDEOS_FILE
from deepfake_edge.training.whole_image import copy_move_support, false_alarm_threshold, forward_rows, served_session
from deepfake_edge.video import VideoLimits, VideoReader

# Simpler first: on equal validation ROC-AUC the earlier rule is chosen.
RULE_TIE_ORDER = ("peak", "top3_mean", "track_median")
REPORT_FILE = "video_report.json"
PLOT_FILE = "video_timelines.png"
_FLOAT_SLACK = 1e-9

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class FrameRecord:
    """One sampled frame: its score (the highest region's, a copy-move finding included), the highest score of
    its non-face regions (its score when it has none, as in client/video.py), its faces as ((x0, y0, x1, y1)
    in video pixels, score) and its copy-move support (0: no finding; None: the check did not run)."""

    index: int
    time_s: float
    score: float
    background: float
    faces: tuple[tuple[Box, float], ...] = ()
    copy_move_support: int | None = None


@dataclass(frozen=True)
class VideoScore:
    """One video's frames and its score under every rule; ``family`` is None for an unedited twin."""

    stem: str
    label: int
    family: str | None
    footage: str
    source: str
    frames: tuple[FrameRecord, ...]
    scores: dict[str, float] = field(default_factory=dict)
    tracks: int = 0
    notes: tuple[str, ...] = ()
    seconds: float = 0.0


def rule_scores(frames: Sequence[FrameRecord]) -> tuple[dict[str, float], int]:
    """The video score under every rule of VIDEO_RULES, and the number of face tracks."""
    tracks = associate((f.index, [box for box, _ in f.faces], [score for _, score in f.faces]) for f in frames)
    frame_scores = [f.score for f in frames]
    background = [f.background for f in frames]
    return {rule: float(video_score(rule, frame_scores, tracks, background)) for rule in VIDEO_RULES}, len(tracks)


def score_videos(checkpoint: str | Path, root: str | Path, split: str, limits: VideoLimits = VideoLimits(),
                 max_pairs: int | None = None, progress: bool = True) -> list[VideoScore]:
    """Score both twins of every pair in ``root/<split>`` (at most ``max_pairs``, evenly spread)."""
    folder = Path(root) / split
    if not (folder / VIDEOS_FILE).is_file():
        raise FileNotFoundError(f"{folder / VIDEOS_FILE} not found: make the videos with 'deepfake-edge data videos'")
    records = json.loads((folder / VIDEOS_FILE).read_text())
    stems = sorted(records)
    if not stems:
        raise ValueError(f"{folder / VIDEOS_FILE} lists no video")
    if max_pairs is not None and len(stems) > max_pairs:
        stems = [stems[int(i * len(stems) / max_pairs)] for i in range(max_pairs)]
    jobs = [(stem, label) for stem in stems for label in (0, 1)]
    scores = []
    calibration = read_card(checkpoint).copy_move_calibration
    with served_session(checkpoint) as (session, preprocessor):
        for stem, label in tqdm(jobs, desc=f"videos {split}", unit="video", disable=not progress):
            record = records[stem]
            started = time.perf_counter()
            frames, notes = _score_frames(session, preprocessor, folder / LABELS[label] / f"{stem}.mp4", limits,
                                          calibration)
            by_rule, n_tracks = rule_scores(frames)
            scores.append(VideoScore(stem, label, record["family"] if label else None, record["footage"],
                                     record["source"], tuple(frames), by_rule, n_tracks, tuple(notes),
                                     time.perf_counter() - started))
    return scores


def _score_frames(session: Any, preprocessor: Any, path: Path, limits: VideoLimits,
                  copy_move_calibration: tuple[float, float] | None) -> tuple[list[FrameRecord], list[str]]:
    """Each sampled frame of ``path`` scored as client/video.py scores it; the copy-move check runs when
    ``copy_move_calibration`` is given (as it is served for a card that carries one)."""
    frames = []
    with VideoReader(path, limits) as reader:
        for sampled in reader.frames():
            plan, rows = analyse(sampled.image, preprocessor)
            probabilities = forward_rows(session, rows)[0]
            faces = tuple((tuple(int(round(v * sampled.scale)) for v in region.box), float(p))
                          for region, p in zip(plan.regions, probabilities) if region.kind == "face")
            others = [float(p) for region, p in zip(plan.regions, probabilities) if region.kind != "face"]
            support = None
            if copy_move_calibration is not None:
                support = copy_move_support(sampled.image)
                if support:  # a finding is one more non-face region
                    others.append(copy_move_score(support, copy_move_calibration)[0])
            score = max([float(probabilities.max())] + others)
            frames.append(FrameRecord(sampled.index, float(sampled.time_s), score, max(others) if others else score,
                                      faces, support))  # type: ignore[arg-type]
        notes = list(reader.notes)
    return frames, notes


# -------------------------------------------------------------------------------------------- reports


def _auc(real: np.ndarray, fake: np.ndarray) -> float:
    if not len(real) or not len(fake):
        return float("nan")
    return float(roc_auc_score(np.r_[np.zeros(len(real)), np.ones(len(fake))], np.r_[real, fake]))


def rule_aucs(scores: Sequence[VideoScore]) -> dict[str, float]:
    """Video ROC-AUC (all edited vs all unedited videos) of every rule."""
    return {rule: _auc(np.array([s.scores[rule] for s in scores if s.label == 0]),
                       np.array([s.scores[rule] for s in scores if s.label == 1])) for rule in VIDEO_RULES}


def choose_rule(aucs: dict[str, float], pairs: int) -> str:
    """The rule with the highest ROC-AUC; a rule short of it by less than one of the ``pairs`` (edited,
    unedited) video pairs the ROC-AUC counts ties, and ties go to the first of :data:`RULE_TIE_ORDER`.
    Such a difference is one pair scored equal instead of in order: the videos cannot tell the rules
    apart, and the simpler rule is kept."""
    order = [r for r in RULE_TIE_ORDER if r in aucs] + [r for r in aucs if r not in RULE_TIE_ORDER]
    valid = {r: a for r, a in aucs.items() if not np.isnan(a)}
    if not valid:
        return DEFAULT_VIDEO_RULE
    best = max(valid.values())
    # A whole pair short is not a tie; _FLOAT_SLACK keeps float rounding of exactly 1/pairs from making it one.
    return next(r for r in order if r in valid and valid[r] > best - (1.0 / pairs - _FLOAT_SLACK))


LengthTable = Sequence[tuple[int, float]] | None


def called_fake(video: VideoScore, rule: str, threshold: float, length_table: LengthTable = None) -> bool:
    """Whether ``video`` is called Fake under ``rule`` at ``threshold`` raised for its length by ``length_table``
    (``ModelCard.video_length_thresholds``), as client/video.py calls it."""
    return video.scores[rule] >= length_threshold(threshold, length_table, len(video.frames))


def video_report(scores: Sequence[VideoScore], rule: str, threshold: float,
                 length_table: LengthTable = None) -> dict[str, Any]:
    """ROC-AUC, caught share and false alarms under ``rule`` at ``threshold`` (raised for long videos by
    ``length_table``, :func:`called_fake`): overall, per edit family (against every unedited video), per
    footage kind (against the unedited videos of that kind); the twin accuracy (edited scored above its own
    unedited twin); and how the unedited camera footage is called."""
    if rule not in VIDEO_RULES:
        raise ValueError(f"unknown video rule {rule!r}; known: {', '.join(VIDEO_RULES)}")

    def share_called(videos: Sequence[VideoScore]) -> float:
        if not videos:
            return float("nan")
        return float(np.mean([called_fake(v, rule, threshold, length_table) for v in videos]))

    real = np.array([s.scores[rule] for s in scores if s.label == 0])
    fake_all = [s for s in scores if s.label == 1]
    twins = {(s.stem, s.label): s.scores[rule] for s in scores}
    paired = [(twins[(stem, 0)], twins[(stem, 1)]) for stem, label in twins if label == 1 and (stem, 0) in twins]
    camera_real = [s for s in scores if s.label == 0 and s.footage == "camera"]
    camera_called_real = 1.0 - share_called(camera_real)
    summary: dict[str, Any] = {
        "rule": rule, "threshold": float(threshold),
        "length_thresholds": [list(entry) for entry in length_table or ()],
        "videos_unedited": int(len(real)), "false_alarm_rate": share_called([s for s in scores if s.label == 0]),
        "twin_accuracy": float(np.mean([f > r for r, f in paired])) if paired else float("nan"),
        "camera_unedited": {"videos": len(camera_real), "called_real": camera_called_real,
                            "all_real": bool(camera_real and camera_called_real == 1.0)},
        "rules_roc_auc": rule_aucs(scores),
        "frames_scored": int(sum(len(s.frames) for s in scores)),
        "seconds_per_video": float(np.mean([s.seconds for s in scores])) if scores else float("nan"),
    }
    checked = any(f.copy_move_support is not None for s in scores for f in s.frames)
    if checked:
        summary["copy_move_found_unedited"] = _found_share([s for s in scores if s.label == 0])
    rows = {"all": fake_all}
    for family in sorted({s.family for s in fake_all if s.family}):
        rows[family] = [s for s in fake_all if s.family == family]
    for name, members in rows.items():
        fake = np.array([s.scores[rule] for s in members])
        summary[name] = {"videos_edited": int(len(fake)), "roc_auc": _auc(real, fake), "caught": share_called(members)}
        if checked:
            summary[name]["copy_move_found"] = _found_share(members)
    summary["footage"] = {}
    for kind in sorted({s.footage for s in scores}):
        kind_real = [s for s in scores if s.label == 0 and s.footage == kind]
        kind_fake = [s for s in fake_all if s.footage == kind]
        summary["footage"][kind] = {"videos_edited": len(kind_fake), "videos_unedited": len(kind_real),
                                    "roc_auc": _auc(np.array([s.scores[rule] for s in kind_real]),
                                                    np.array([s.scores[rule] for s in kind_fake])),
                                    "caught": share_called(kind_fake), "false_alarm_rate": share_called(kind_real)}
    return summary


def _found_share(videos: Sequence[VideoScore]) -> float:
    """The share of ``videos`` with a copy-move finding in at least one sampled frame."""
    return float(np.mean([any(f.copy_move_support for f in s.frames) for s in videos])) if videos else float("nan")


def video_rows(scores: Sequence[VideoScore], rule: str, threshold: float,
               length_table: LengthTable = None) -> list[dict[str, Any]]:
    """One JSON row per video: its score under ``rule``, its threshold, the verdict, its timeline and face tracks."""
    rows = []
    for s in scores:
        peak = max(s.frames, key=lambda f: f.score)
        rows.append({"stem": s.stem, "label": LABELS[s.label], "family": s.family, "footage": s.footage,
                     "source": s.source, "score": round(s.scores[rule], 6),
                     "threshold": round(length_threshold(threshold, length_table, len(s.frames)), 6),
                     "called": LABELS[int(called_fake(s, rule, threshold, length_table))],
                     "scores": {r: round(v, 6) for r, v in s.scores.items()}, "face_tracks": s.tracks,
                     "peak_time_s": round(peak.time_s, 3), "notes": list(s.notes),
                     "timeline": [[round(f.time_s, 3), round(f.score, 6)] for f in s.frames]})
    return rows


def _without_rows(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "videos"}


def calibrate_videos(checkpoint: str | Path, root: str | Path, max_false_alarm: float = DEFAULT_MAX_FALSE_ALARM,
                     limits: VideoLimits = VideoLimits(), max_pairs: int | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Set ``video_rule``, ``video_threshold`` and ``video_length_thresholds`` in ``checkpoint``'s card from
    ``root``'s validation videos (the checkpoint is rewritten in place, same dtype); returns the validation
    report, which the card keeps in ``metrics["video_validation"]`` (without the per-video rows)."""
    if not 0.0 <= max_false_alarm < 1.0:
        raise ValueError(f"max_false_alarm must be in [0, 1), got {max_false_alarm}")
    scores = score_videos(checkpoint, root, "validation", limits, max_pairs, progress)
    aucs = rule_aucs(scores)
    rule = choose_rule(aucs, pairs=sum(s.label == 0 for s in scores) * sum(s.label == 1 for s in scores))
    threshold = false_alarm_threshold(np.array([s.scores[rule] for s in scores if s.label == 0]), max_false_alarm)
    unedited = [s for s in scores if s.label == 0]
    table = length_thresholds([s.scores[rule] for s in unedited], [len(s.frames) for s in unedited], threshold,
                              max_false_alarm)
    validation = {"split": "validation", "max_false_alarm": max_false_alarm, "tie_order": list(RULE_TIE_ORDER),
                  **video_report(scores, rule, threshold, table)}
    model, card = load_checkpoint(checkpoint)
    dtype = next(model.parameters()).dtype
    metrics = {**card.metrics, "video_validation": validation}
    save_checkpoint(checkpoint, model, card.replace(video_rule=rule, video_threshold=threshold,
                                                    video_length_thresholds=table, metrics=metrics), dtype=dtype)
    return {**validation, "videos": video_rows(scores, rule, threshold, table)}


def card_video_rule(card: ModelCard) -> tuple[str, float, LengthTable]:
    """The rule, threshold and length thresholds video evaluation applies: exactly what client/video.py
    serves in whole mode."""
    from deepfake_edge.client.video import video_card

    rule, whole, _ = video_card(card, "whole")
    return rule, whole.threshold, card.video_length_thresholds if rule == card.video_rule else None


def evaluate_videos(checkpoint: str | Path, root: str | Path, split: str = "test", out_dir: str | Path | None = None,
                    limits: VideoLimits = VideoLimits(), max_pairs: int | None = None, plot_pairs: int = 6,
                    progress: bool = True) -> dict[str, Any]:
    """The video report of ``root/<split>`` under the card's rule and threshold (:func:`card_video_rule`),
    with a ``videos`` list of per-video rows; with ``out_dir``, also ``video_report.json`` and
    ``video_timelines.png`` (fake probability over time of up to ``plot_pairs`` real/edited twins)."""
    card = read_card(checkpoint)
    rule, threshold, table = card_video_rule(card)
    scores = score_videos(checkpoint, root, split, limits, max_pairs, progress)
    summary = {"split": split, "calibrated": card.video_rule is not None and card.video_threshold is not None,
               **video_report(scores, rule, threshold, table), "videos": video_rows(scores, rule, threshold, table)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / REPORT_FILE).write_text(json.dumps(summary, indent=1) + "\n")
        plot_timelines(scores, rule, threshold, out_dir / PLOT_FILE, plot_pairs, table,
                       title=f"{Path(checkpoint).name} on {split} videos")
        summary["files"] = [str(out_dir / REPORT_FILE), str(out_dir / PLOT_FILE)]
    return summary


def plot_timelines(scores: Sequence[VideoScore], rule: str, threshold: float, path: Path, max_pairs: int = 6,
                   length_table: LengthTable = None, title: str = "") -> Path:
    """Fake probability of each sampled frame over time, unedited twin against edited, for up to
    ``max_pairs`` pairs (one per family first), with the pair's threshold for its length; logit axis,
    labelled in probabilities."""
    from deepfake_edge.training.metrics import logit
    from deepfake_edge.training.plots import _save, plt

    by_key = {(s.stem, s.label): s for s in scores}
    stems = sorted({s.stem for s in scores if (s.stem, 0) in by_key and (s.stem, 1) in by_key})
    chosen, families = [], set()
    for stem in stems:  # one pair per family, then the rest in order
        family = by_key[(stem, 1)].family
        if family not in families:
            chosen.append(stem)
            families.add(family)
    chosen += [stem for stem in stems if stem not in chosen]
    chosen = chosen[:max(1, max_pairs)]
    cols = min(3, len(chosen))
    rows = (len(chosen) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    ticks = np.array([0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999])
    for ax, stem in zip(axes.flat, chosen):
        cut = length_threshold(threshold, length_table, len(by_key[(stem, 0)].frames))
        for label, colour in ((0, "tab:blue"), (1, "tab:red")):
            video = by_key[(stem, label)]
            times = [f.time_s for f in video.frames]
            ax.plot(times, logit(np.array([f.score for f in video.frames])), marker="o", ms=3, color=colour,
                    label=f"{LABELS[label].lower()} ({rule} {video.scores[rule]:.3f})")
        ax.axhline(float(logit(np.array([cut]))[0]), color="black", ls="--", lw=1, label=f"threshold {cut:.4f}")
        ax.set_yticks(logit(ticks), [f"{t:g}" for t in ticks])
        ax.set(xlabel="time (s)", ylabel="fake probability", title=stem)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def format_video_report(summary: dict[str, Any]) -> str:
    checked = "copy_move_found_unedited" in summary
    found = (f"; a copy-move found in a frame of {summary['copy_move_found_unedited']:.1%} of them" if checked
             else "")
    longer = "".join(f", {t:.4f} at {n} frames" for n, t in summary["length_thresholds"][1:])
    lines = [f"rule {summary['rule']}, threshold {summary['threshold']:.4f}{longer}: false alarms on "
             f"{summary['videos_unedited']} unedited videos {summary['false_alarm_rate']:.1%}{found}; "
             f"edited above its twin {summary['twin_accuracy']:.1%}",
             f"unedited camera footage called Real: {summary['camera_unedited']['called_real']:.1%} of "
             f"{summary['camera_unedited']['videos']}"
             + (" (all)" if summary["camera_unedited"]["all_real"] else ""),
             "ROC-AUC by rule: " + ", ".join(f"{r} {a:.3f}" for r, a in summary["rules_roc_auc"].items()),
             f"{'edit family':<14}{'videos':>7}{'ROC-AUC':>9}{'caught':>8}" + (f"{'copy-move':>11}" if checked else "")]
    for name, row in summary.items():
        if isinstance(row, dict) and "videos_edited" in row:
            lines.append(f"{name:<14}{row['videos_edited']:>7}{row['roc_auc']:>9.3f}{row['caught']:>8.1%}"
                         + (f"{row['copy_move_found']:>11.1%}" if checked else ""))
    lines.append(f"{'footage':<14}{'videos':>7}{'ROC-AUC':>9}{'caught':>8}{'false alarms':>14}")
    for kind, row in summary["footage"].items():
        lines.append(f"{kind:<14}{row['videos_edited']:>7}{row['roc_auc']:>9.3f}{row['caught']:>8.1%}"
                     f"{row['false_alarm_rate']:>14.1%}")
    lines.append(f"{summary['frames_scored']} frames scored, {summary['seconds_per_video']:.2f} s a video")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- CLI


def run_calibrate_videos(args: Any) -> int:
    """``deepfake-edge calibrate CHECKPOINT DATA --videos``: ``args.checkpoint``, ``args.data``,
    ``args.max_false_alarm``."""
    from deepfake_edge.cli import CommandError, log_to_terminal

    log_to_terminal()
    try:
        validation = calibrate_videos(args.checkpoint, args.data, args.max_false_alarm)
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from error
    print(f"{args.checkpoint}: video_rule {validation['rule']!r}, video_threshold and video_length_thresholds set "
          f"on validation videos\n"
          f"{format_video_report(validation)}")
    return 0


def run_evaluate_videos(args: Any) -> int:
    """``deepfake-edge evaluate CHECKPOINT DATA --videos``: ``args.checkpoint``, ``args.data``, ``args.split``,
    ``args.out`` (video_report.json, video_timelines.png), ``args.json``."""
    from deepfake_edge.cli import CommandError, log_to_terminal

    log_to_terminal()
    if args.split not in ("validation", "test"):
        raise CommandError("--videos scores the validation or the test split")
    try:
        summary = evaluate_videos(args.checkpoint, args.data, args.split, out_dir=args.out)
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from error
    print(json.dumps(_without_rows(summary)) if args.json else format_video_report(summary))
    return 0
