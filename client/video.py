"""Videos through the client: a verdict, a timeline of frame scores and the faces followed through it.

    with DeepfakeClient("127.0.0.1:8001") as client:
        video = detect_video(client, "clip.mp4", heatmap=True)
        print(video.label, video.confidence, video.peak_time_s, len(video.tracks))

Frames are sampled and decoded lazily (:class:`deepfake_edge.video.VideoReader`) and each one goes through
the client's own :meth:`DeepfakeClient.iter_detect` as a PIL image while the next ones are decoded, so a
frame is exactly the analysis of a photo and memory stays flat in the video's length: a frame's image is
dropped once it is scored (only the current peak frame's is kept, and only when a heatmap is wanted).
Faces are followed across frames (:mod:`deepfake_edge.tracks`) and the frame scores made into one video
score by the rule the served model card names (``ModelCard.video_rule``, default "top3_mean").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np

from deepfake_edge.client.errors import ServerUnreachableError
from deepfake_edge.client.results import RegionScore, Verdict, format_verdict, provenance_record, region_record
from deepfake_edge.model_card import ModelCard
from deepfake_edge.provenance import Provenance, provenance_for
from deepfake_edge.regions import DEFAULT_MODE
from deepfake_edge.tracks import DEFAULT_VIDEO_RULE, VIDEO_RULES, FaceTracker, Track, associate, video_score
from deepfake_edge.video import VideoInfo, VideoLimits, VideoReader

if TYPE_CHECKING:
    from PIL import Image

    from deepfake_edge.client.sync_client import DeepfakeClient

Box = tuple[int, int, int, int]

DEFAULT_VIDEO_CONCURRENCY = 2
MAX_FAILURE_NOTES = 5  # frames named one by one in the notes when they could not be analysed; then a count


@dataclass(frozen=True)
class FrameScore:
    """One sampled frame: its sample number, presentation time, score (its highest region's fake
    probability, as for a photo) and scored regions, boxes in the video's (upright, original) pixels."""

    index: int
    time_s: float
    fake_probability: float
    regions: tuple[RegionScore, ...] = ()

    @property
    def background_probability(self) -> float:
        """The highest score of the frame's non-face regions (tiles, global view); the frame's score when it
        has no region list (fast mode) or only faces."""
        others = [r.fake_probability for r in self.regions if r.kind != "face"]
        return max(others) if others else self.fake_probability


@dataclass(frozen=True)
class FaceTrack:
    """A face followed through the video: the sampled frames it was found in, its box in each (video
    pixels) and its fake probability, the median of its scores in those frames."""

    track_id: int
    frame_indices: tuple[int, ...]
    boxes: tuple[Box, ...]
    fake_probability: float


@dataclass(frozen=True)
class VideoDetection(Verdict):
    """The verdict on a video.

    ``fake_probability`` is made from the frame scores by ``rule`` (deepfake_edge/tracks.py: VIDEO_RULES);
    ``label`` and ``confidence`` come from the served card exactly as for a photo, under the video
    threshold (``ModelCard.video_threshold_for`` the number of frames analysed, in whole mode when
    calibrated, else the mode's image threshold). ``logit`` is the logit of ``fake_probability``. ``frames``
    is the timeline in time order, ``peak_index``/``peak_time_s`` the highest-scoring frame (a sample
    number, ``frames[i].index``).
    ``notes`` say what was capped or skipped (sampling lowered, frames not analysed, decoding stopped).
    With a heatmap requested: ``peak_image`` is the peak frame as analysed (shrunk to at most
    ``VideoLimits.max_side``), ``heatmap`` its stitched heatmap over ``heatmap_box``, which like every box
    here is in video pixels (overlay: :meth:`peak_overlay`). ``timings_s``: wall time per stage ("open",
    "decode", "inference_wait": waiting for answers beyond decoding, "heatmap", "total"). ``provenance``:
    the video file's Content Credentials (C2PA, MP4/MOV) and metadata, as ``Detection.provenance``.
    """

    rule: str
    threshold: float
    frames: tuple[FrameScore, ...]
    tracks: tuple[FaceTrack, ...]
    peak_index: int
    peak_time_s: float
    video: VideoInfo
    notes: tuple[str, ...] = ()
    peak_image: Optional["Image.Image"] = field(default=None, repr=False, compare=False)
    heatmap: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    heatmap_box: Optional[Box] = None
    timings_s: dict[str, float] = field(default_factory=dict, compare=False)
    provenance: Optional[Provenance] = None

    kind = "video"

    @property
    def peak(self) -> FrameScore:
        return next(frame for frame in self.frames if frame.index == self.peak_index)

    @property
    def verdict(self) -> str:
        return format_verdict(self.label, self.confidence)

    def peak_overlay(self, alpha: float = 0.45) -> "Image.Image":
        """The peak frame with its heatmap blended over it (needs ``heatmap=True``)."""
        from deepfake_edge.heatmap import overlay_heatmap

        if self.peak_image is None or self.heatmap is None:
            raise ValueError("no heatmap: detect_video(..., heatmap=True) keeps the peak frame's")
        return overlay_heatmap(self.peak_image, self.heatmap, self.heatmap_box, alpha,
                               box_of_size=(self.video.width, self.video.height))


def video_card(card: ModelCard, mode: str, frames: Optional[int] = None) -> tuple[str, ModelCard, Optional[str]]:
    """The rule, the card whose ``threshold`` decides a video of ``frames`` sampled frames in ``mode`` (None: as
    long as the calibration clips), and a note when the served card's rule is unknown to this client (then
    the defaults apply) or its threshold was raised for the video's length (``ModelCard.video_threshold_for``).
    ``video_threshold`` is calibrated on whole-mode scores, so like ``image_threshold`` it applies in whole
    mode only."""
    card = card.for_mode(mode)
    rule, note = card.video_rule, None
    if rule is not None and rule not in VIDEO_RULES:
        note = (f"the model card names video rule {rule!r}, unknown to this client; "
                f"used {DEFAULT_VIDEO_RULE!r} and the image threshold")
        return DEFAULT_VIDEO_RULE, card, note
    if mode == "whole" and card.video_threshold is not None:
        threshold = card.video_threshold_for(frames)
        if threshold is not None and threshold > card.video_threshold:
            note = (f"threshold {threshold:.4f} for {frames} sampled frames ({card.video_threshold:.4f} for short "
                    "clips): every frame of an unedited video is one more chance to score high")
        card = card.replace(threshold=threshold)
    return rule or DEFAULT_VIDEO_RULE, card, note


def score_frames(rule: str, frames: tuple[FrameScore, ...] | list[FrameScore],
                 tracks: Optional[list[Track]] = None) -> float:
    """The video score of a timeline under ``rule``; ``tracks`` default to the faces of ``frames`` associated
    again (deterministic), so a stored timeline can be re-scored under another rule (calibration)."""
    if tracks is None:
        tracks = associate((f.index, [r.box for r in f.regions if r.kind == "face"],
                            [r.fake_probability for r in f.regions if r.kind == "face"]) for f in frames)
    return video_score(rule, [f.fake_probability for f in frames], tracks,
                       [f.background_probability for f in frames])


def _scaled(box: tuple[int, int, int, int], scale: float, width: int, height: int) -> Box:
    """A box of the decoded frame in video pixels, inside the video."""
    x0, y0, x1, y1 = (v * scale for v in box)
    return (min(max(round(x0), 0), width), min(max(round(y0), 0), height),
            min(max(round(x1), 0), width), min(max(round(y1), 0), height))


def _logit(probability: float) -> float:
    p = min(max(probability, 1e-7), 1.0 - 1e-7)
    return math.log(p) - math.log1p(-p)


def detect_video(client: "DeepfakeClient", source: Any, limits: VideoLimits = VideoLimits(), heatmap: bool = False,
                 mode: str = DEFAULT_MODE, concurrency: int = DEFAULT_VIDEO_CONCURRENCY,
                 provenance: Optional[bool] = None) -> VideoDetection:
    """Analyse a video (path, bytes or binary file object) with ``client`` (a sync :class:`DeepfakeClient`).

    ``provenance`` (default: the client's setting) reads the file's Content Credentials and metadata into
    ``VideoDetection.provenance`` first (a file object is put back where it was; one that cannot seek is not
    read twice: its provenance says so).

    Raises ``BadVideoError`` (a ``BadImageError``) when the video cannot be used, a ``DeepfakeClientError``
    when the server cannot be asked (raised at once when it becomes unreachable: a verdict on part of a
    video would be misleading). A frame that gets no answer otherwise is named in the notes and left out
    of the timeline; when no frame gets one, the first frame's error is raised.
    """
    started = time.perf_counter()
    timings = {"open": 0.0, "decode": 0.0, "inference_wait": 0.0, "heatmap": 0.0}
    info = client.model_info()  # raises when the server cannot be asked, before anything is decoded
    wanted = getattr(client, "provenance", False) if provenance is None else provenance
    found = _video_provenance(source) if wanted else None

    opened = time.perf_counter()
    with VideoReader(source, limits) as reader:
        timings["open"] = time.perf_counter() - opened
        video = reader.info
        pending: list[tuple[int, float, float]] = []  # (index, time_s, scale) of frames sent, not yet answered

        def images() -> Iterator["Image.Image"]:
            frames = reader.frames()
            while True:
                began = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    return
                finally:
                    timings["decode"] += time.perf_counter() - began
                pending.append((frame.index, frame.time_s, frame.scale))
                yield frame.image

        timeline: list[FrameScore] = []
        tracker = FaceTracker()
        frame_notes: list[str] = []
        failures: list[tuple[int, float, Exception]] = []
        version = ""
        peak: Optional[tuple[FrameScore, float, float, Any]] = None  # frame, scale, logit, image (heatmap only)
        results = client.iter_detect(images(), mode=mode, concurrency=concurrency, heatmap=False)
        try:
            while True:
                waited, decoded = time.perf_counter(), timings["decode"]
                try:
                    result = next(results)
                except StopIteration:
                    break
                finally:
                    timings["inference_wait"] += time.perf_counter() - waited - (timings["decode"] - decoded)
                index, time_s, scale = pending.pop(0)
                if not result.ok:
                    if isinstance(result.error, ServerUnreachableError):
                        raise result.error
                    failures.append((index, time_s, result.error))
                    continue
                version = result.model_version
                regions = tuple(RegionScore(r.kind, _scaled(r.box, scale, video.width, video.height),
                                            r.fake_probability) for r in result.regions)
                score = FrameScore(index, time_s, result.fake_probability, regions)
                timeline.append(score)
                faces = [r for r in regions if r.kind == "face"]
                tracker.add(index, [r.box for r in faces], [r.fake_probability for r in faces])
                frame_notes.extend(note for note in result.notes if note not in frame_notes)
                if peak is None or score.fake_probability > peak[0].fake_probability:
                    peak = (score, scale, result.logit, result.source if heatmap else None)
                del result  # the frame's image goes with it (unless it is the peak and a heatmap is wanted)
        finally:
            results.close()
        notes = list(reader.notes)

    if peak is None:
        if failures:
            raise failures[0][2]
        from deepfake_edge.video import BadVideoError

        raise BadVideoError("the video has no frame that could be analysed")
    notes += frame_notes
    notes += [f"frame {index} at {time_s:.2f} s was not analysed: {error}"
              for index, time_s, error in failures[:MAX_FAILURE_NOTES]]
    if len(failures) > MAX_FAILURE_NOTES:
        notes.append(f"{len(failures)} of {len(failures) + len(timeline)} sampled frames were not analysed")
    rule, card, card_note = video_card(info.card, mode, len(timeline))
    if card_note:
        notes.append(card_note)

    tracks = tracker.tracks
    probability = score_frames(rule, timeline, tracks)
    peak_frame, peak_scale, peak_logit, peak_image = peak
    heatmap_map, heatmap_box = None, None
    if heatmap:
        began = time.perf_counter()
        shown = client.detect(peak_image, heatmap=True, mode=mode)
        timings["heatmap"] = time.perf_counter() - began
        heatmap_map = shown.heatmap
        if shown.heatmap_box is not None:
            heatmap_box = _scaled(shown.heatmap_box, peak_scale, video.width, video.height)
    timings["total"] = time.perf_counter() - started
    return VideoDetection(
        source=source, label=card.label_for(probability), confidence=card.confidence_for(probability),
        fake_probability=probability, logit=peak_logit if rule == "peak" else _logit(probability),
        model=info.name, model_version=version, mode=mode, rule=rule, threshold=card.threshold,
        frames=tuple(timeline), tracks=tuple(FaceTrack(t.track_id, tuple(t.frame_indices), tuple(t.boxes), t.median)
                                             for t in tracks),
        peak_index=peak_frame.index, peak_time_s=peak_frame.time_s, video=video, notes=tuple(notes),
        peak_image=peak_image, heatmap=heatmap_map, heatmap_box=heatmap_box,
        timings_s={name: round(seconds, 4) for name, seconds in timings.items()}, provenance=found,
    )


def _video_provenance(source: Any) -> Optional[Provenance]:
    """What the video file says about its origin, read before its frames are (a stream that cannot be put
    back where it was is not read: the frames need it)."""
    if hasattr(source, "read") and not _seekable(source):
        return Provenance(status="error", error="not checked: the video stream cannot be read twice")
    return provenance_for(source)


def _seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def video_record(detection: VideoDetection) -> dict[str, Any]:
    """The JSON shape of a video verdict (``detect --json``, ``/api/detect``); every key always present."""
    info = detection.video
    return {
        "kind": "video",
        "label": detection.label,
        "confidence": round(detection.confidence, 6),
        "verdict": detection.verdict,
        "fake_probability": round(detection.fake_probability, 6),
        "logit": round(detection.logit, 6),
        "threshold": round(detection.threshold, 6),
        "rule": detection.rule,
        "model": detection.model,
        "model_version": detection.model_version,
        "mode": detection.mode,
        "peak": {"index": detection.peak_index, "time_s": round(detection.peak_time_s, 3),
                 "fake_probability": round(detection.peak.fake_probability, 6)},
        "timeline": [{"index": frame.index, "time_s": round(frame.time_s, 3),
                      "fake_probability": round(frame.fake_probability, 6),
                      "regions": [region_record(region) for region in frame.regions]}
                     for frame in detection.frames],
        "tracks": [{"track_id": track.track_id, "frame_indices": list(track.frame_indices),
                    "boxes": [list(box) for box in track.boxes],
                    "fake_probability": round(track.fake_probability, 6)} for track in detection.tracks],
        "video": {"width": info.width, "height": info.height,
                  "duration_s": None if info.duration_s is None else round(info.duration_s, 3),
                  "fps": None if info.fps is None else round(info.fps, 3),
                  "rotation": info.rotation, "codec": info.codec},
        "notes": list(detection.notes),
        "timings_s": dict(detection.timings_s),
        "provenance": provenance_record(detection.provenance),
    }
