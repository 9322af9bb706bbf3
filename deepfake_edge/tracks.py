"""Faces followed through a video, and the rules that turn a video's frame scores into one score.

A video is analysed as a series of sampled frames, each scored like a photo (deepfake_edge/regions.py):
every face, tiles over the frame and the global view. Here, pure and numpy-only:

* :func:`iou` and :class:`FaceTracker` / :func:`associate`: faces (boxes) of successive sampled frames
  are linked greedily into tracks, best overlap first, when their boxes overlap by IoU >= 0.3; a track
  survives a gap of up to 2 sampled frames in which its face was not found.
* :data:`VIDEO_RULES` and :func:`video_score`: the rules that make the video's fake probability.

Frame indices are sample numbers (0-based, in time order); a frame that was not analysed is simply
absent, and counts as a gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1)

MIN_IOU = 0.3          # two boxes of successive samples are the same face when they overlap this much
MAX_GAP = 2            # sampled frames a face may be missing from before its track ends
MIN_TRACK_FRAMES = 3   # a track counts for "track_median" when it spans this many frames (see video_score)
TOP_K = 3              # frames averaged by "top3_mean"

DEFAULT_VIDEO_RULE = "top3_mean"
VIDEO_RULES: Mapping[str, str] = {
    "peak": "the highest frame score (one frame decides)",
    "top3_mean": "the mean of the 3 highest frame scores (one spurious frame cannot decide alone)",
    "track_median": "the highest median face score of the face tracks spanning >= 3 sampled frames, or the "
                    "top3_mean of the frames' non-face regions when that is higher",
}


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes; 0 for disjoint or empty boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = float(width) * float(height)
    union = float(a[2] - a[0]) * float(a[3] - a[1]) + float(b[2] - b[0]) * float(b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    """One face followed through the video: where it was in each sampled frame it was found in, and its
    fake probability there. ``track_id`` numbers tracks in the order they started (from 0)."""

    track_id: int
    frame_indices: list[int] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame_indices)

    @property
    def median(self) -> float:
        """The median of the face's scores: the face as a whole, not its worst frame."""
        return float(np.median(self.scores))


class FaceTracker:
    """Greedy IoU association, fed frame by frame in time order (:meth:`add`), so a video's faces are
    tracked while it is still being analysed.

    In each frame the (live track, face) pairs are linked best IoU first, each track and each face at most
    once, a pair only when its IoU is >= ``min_iou`` (ties: the track seen most recently, then the older
    track). A track is live while its last face is at most ``max_gap`` sampled frames back (``max_gap``
    missing frames in between); a face linked to no track starts a new one.
    """

    def __init__(self, min_iou: float = MIN_IOU, max_gap: int = MAX_GAP) -> None:
        if not 0.0 < min_iou <= 1.0 or max_gap < 0:
            raise ValueError("min_iou must be in (0, 1] and max_gap >= 0")
        self.min_iou = min_iou
        self.max_gap = max_gap
        self._tracks: list[Track] = []
        self._last_index: Optional[int] = None

    def add(self, frame_index: int, boxes: Sequence[Box], scores: Sequence[float]) -> None:
        """The faces found in sampled frame ``frame_index`` (later than every frame added before)."""
        if len(boxes) != len(scores):
            raise ValueError("one score per box")
        if self._last_index is not None and frame_index <= self._last_index:
            raise ValueError(f"frames must be added in time order ({frame_index} after {self._last_index})")
        self._last_index = frame_index
        live = [t for t in self._tracks if frame_index - t.frame_indices[-1] <= self.max_gap + 1]
        pairs = []
        for t in live:
            for j, box in enumerate(boxes):
                overlap = iou(t.boxes[-1], box)
                if overlap >= self.min_iou:
                    pairs.append((-overlap, -t.frame_indices[-1], t.track_id, j, t))
        pairs.sort(key=lambda pair: pair[:4])
        used_tracks: set[int] = set()
        assigned: dict[int, Track] = {}
        for _, _, track_id, j, track in pairs:
            if track_id in used_tracks or j in assigned:
                continue
            used_tracks.add(track_id)
            assigned[j] = track
        for j, (box, score) in enumerate(zip(boxes, scores)):
            track = assigned.get(j)
            if track is None:
                track = Track(len(self._tracks))
                self._tracks.append(track)
            track.frame_indices.append(frame_index)
            track.boxes.append(tuple(int(v) for v in box))  # type: ignore[arg-type]
            track.scores.append(float(score))

    @property
    def tracks(self) -> list[Track]:
        """Every track so far, in the order they started."""
        return list(self._tracks)


def associate(frames: Iterable[tuple[int, Sequence[Box], Sequence[float]]], min_iou: float = MIN_IOU,
              max_gap: int = MAX_GAP) -> list[Track]:
    """The face tracks of ``frames``: ``(frame_index, boxes, scores)`` per sampled frame, in time order."""
    tracker = FaceTracker(min_iou, max_gap)
    for frame_index, boxes, scores in frames:
        tracker.add(frame_index, boxes, scores)
    return tracker.tracks


def top_k_mean(scores: Sequence[float], k: int = TOP_K) -> float:
    """The mean of the ``k`` highest scores (of all of them when there are fewer)."""
    values = np.sort(np.asarray(scores, dtype=np.float64))[::-1][:k]
    if values.size == 0:
        raise ValueError("no scores")
    return float(values.mean())


def video_score(rule: str, frame_scores: Sequence[float], tracks: Sequence[Track] = (),
                background_scores: Optional[Sequence[Optional[float]]] = None) -> float:
    """The video's fake probability under ``rule`` (a key of :data:`VIDEO_RULES`).

    ``frame_scores``: each analysed frame's score (its highest region, as for a photo). ``tracks``: the
    face tracks (:func:`associate`). ``background_scores``: per frame, the highest score of its non-face
    regions (tiles, global view; ``None`` for a frame with none), default ``frame_scores``, right for
    frames without faces and for fast mode (one global view, no faces).

    * "peak": ``max(frame_scores)``.
    * "top3_mean": the mean of the 3 highest frame scores (of all of them for a video of < 3 frames).
    * "track_median": the highest median score of the tracks spanning at least ``min(3, frames)`` sampled
      frames, max'd with the top3_mean of ``background_scores``. Faces of shorter tracks (a face seen
      once, a false detection) do not count. Well defined without faces: with no face at all the
      background of every frame is its score, so the rule equals "top3_mean"; with no frame that has a
      non-face region (never in whole mode, which always scores the global view) the background part is
      the top3_mean of the frame scores.
    """
    if rule not in VIDEO_RULES:
        raise ValueError(f"unknown video rule {rule!r}; known: {', '.join(VIDEO_RULES)}")
    if len(frame_scores) == 0:
        raise ValueError("a video score needs at least one frame score")
    if rule == "peak":
        return float(np.max(np.asarray(frame_scores, dtype=np.float64)))
    if rule == "top3_mean":
        return top_k_mean(frame_scores)
    background = [s for s in (frame_scores if background_scores is None else background_scores) if s is not None]
    score = top_k_mean(background if background else frame_scores)
    long_enough = min(MIN_TRACK_FRAMES, len(frame_scores))
    medians = [t.median for t in tracks if len(t) >= long_enough]
    return max([score, *medians])


def peak_index(frame_scores: Sequence[float]) -> int:
    """The position of the highest frame score (the first one on a tie)."""
    if len(frame_scores) == 0:
        raise ValueError("no frame scores")
    return int(np.argmax(np.asarray(frame_scores, dtype=np.float64)))
