"""How much memory uploads being decoded and scored may take at once: a byte-weighted semaphore.

A count of concurrent decodes did not bound memory: a few KB of PNG can declare 40 M pixels, and eight of
them at once grew the web app by gigabytes. Each upload now reserves what decoding and scoring it takes at
its peak, computed from its header before any pixel is decoded (:func:`scoring_bytes`), and waits, first
come first served, until that much of the budget is free. A video reserves one fixed figure for the largest
frames the app accepts (:func:`video_scoring_bytes`) for as long as it is decoded and scored.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from deepfake_edge.preprocessing import decoded_bytes_estimate
from deepfake_edge.regions import DEFAULT_MODE, MAX_ANALYSED_SIDE

# 16 clients sending bombs of every kind and 6000 x 6000 images took the web app from 104 to 293 MB
# (tests/test_security_bombs.py; target +300 MB). RGB images of up to 40 M pixels fit, up to 10:1.
DEFAULT_MAX_DECODE_BYTES = 256 * 2**20
# Scoring resizes the decoded image once per model, at the same time; Pillow's first (horizontal) pass
# allocates about resize_size x the longest side x 4 bytes (measured: 2 x 29 MB for 1415 x 28268 at 256).
# 512 covers the resize sizes of models with inputs up to 448 pixels.
_RESIZE_BYTES_PER_LONG_SIDE_PIXEL = 4 * 512

# Videos. PyAV (FFmpeg) holds the decoder's reference and reordering frames, one more per decoding thread,
# in the stream's own format: memory proportional to the frame size, whatever the video's length. Measured
# 2026-12 on the build machine (av 18.1.0, deepfake_edge.video.VideoReader with its 2 decoder threads, frames
# sampled at 2 fps and shrunk to 1280 px): the peak RSS (ru_maxrss) of a fresh process decoding the whole
# clip, over its RSS after decoding a small clip once (codec libraries loaded), in bytes per frame pixel:
#   3840x2160 H.264 8-bit, x264 ref=1 ............... 86 MB  (10.4 B/px)
#   3840x2160 H.264 8-bit, ref=3 bframes=3 .......... 152 MB (18.3 B/px)  (a camera/x264-medium-like stream)
#   3840x2160 HEVC 8-bit, x265 ...................... 147 MB (17.7 B/px)
#   3840x2160 HEVC 10-bit, x265 fast ................ 263 MB (31.7 B/px)  (a phone's HDR video)
#   3840x2160 H.264 8-bit, ref=16 bframes=3 ......... 266 MB (32.1 B/px)  (crafted: the most reference frames)
#   1920x1080 H.264 8-bit, ref=16 bframes=16 ........ 56 MB  (27 B/px)
#   7680x4320 H.264 8-bit, ref=16 bframes=3 ......... 1009 MB (30.4 B/px): why the app's frame limit is far below 8K
#   384x288 H.264 ................................... 2 MB
# The clips were made with PyAV from a grey frame with a moving square (decoder memory follows the frame
# size and the reference structure, not the content). 32 B/px covers every one of them.
VIDEO_DECODE_BYTES_PER_PIXEL = 32
VIDEO_DECODE_SLACK_BYTES = 8 << 20  # codec and thread contexts, swscale, the demuxer's index
# Each sampled frame being analysed: the RGB frame (at most 1280 x 1280, 4.9 MB) and its whole-image regions
# cut to the model's input (measured: 30 regions of 224 px, 4.3 MB, for a 1280x720 frame; 49 tiles at
# 1280 x 1280), with room for the face detector's copy.
VIDEO_FRAME_SCORING_BYTES = 12 << 20
# Frames alive at once: the client's ``concurrency`` requests in flight plus one being prepared
# (iter_detect), the frame being decoded, and the peak frame kept for its heatmap.
_VIDEO_FRAMES_BESIDES_IN_FLIGHT = 3


class BudgetExceededError(Exception):
    """The reservation is larger than the whole budget: it could never be granted."""


class BudgetBusyError(Exception):
    """The reservation could not be granted within the time allowed."""


def scoring_bytes(image: Image.Image, models: int, mode: str = DEFAULT_MODE) -> int:
    """Peak memory of decoding ``image`` (opened, not yet decoded) and scoring it with ``models`` models in
    analysis ``mode``.

    Decoding's peak (:func:`~deepfake_edge.preprocessing.decoded_bytes_estimate`) plus the models' resize
    passes, which run while the decoded RGB image is held; the decode's temporaries are freed by then, so
    this counts a little more than the true peak. Whole-image analysis also resizes the image to the tiles'
    analysed size (up to ``MAX_ANALYSED_SIDE``), once per model, whose first pass is as wide as that.
    """
    per_long_side_pixel = _RESIZE_BYTES_PER_LONG_SIDE_PIXEL
    if mode == "whole":
        per_long_side_pixel += 4 * min(MAX_ANALYSED_SIDE, max(image.size))
    return decoded_bytes_estimate(image) + models * per_long_side_pixel * max(image.size)


def video_scoring_bytes(max_frame_pixels: int, concurrency: int) -> int:
    """Peak memory of decoding a video whose frames have up to ``max_frame_pixels`` pixels and scoring its
    sampled frames with ``concurrency`` requests in flight: the figure each video upload reserves.

    Fixed per app, not per video: the frame size is only known once FFmpeg has opened the stream, which
    already decodes. Measured figures and how: the comment on :data:`VIDEO_DECODE_BYTES_PER_PIXEL`.
    """
    decoding = max_frame_pixels * VIDEO_DECODE_BYTES_PER_PIXEL + VIDEO_DECODE_SLACK_BYTES
    return decoding + (concurrency + _VIDEO_FRAMES_BESIDES_IN_FLIGHT) * VIDEO_FRAME_SCORING_BYTES


class DecodeBudget:
    """At most ``capacity`` bytes reserved at once; reservations are granted in the order they are asked.

    First come, first served, so a large image is not starved by a stream of small ones (it holds the
    smaller ones behind it back instead, for at most their wait).
    """

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, not {capacity}")
        self.capacity = capacity
        self._reserved = 0
        self._waiting: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def reserved(self) -> int:
        """Bytes reserved right now."""
        with self._changed:
            return self._reserved

    @contextmanager
    def reserve(self, size: int, wait_s: float) -> Iterator[None]:
        """Hold ``size`` bytes of the budget for the ``with`` block.

        Raises :class:`BudgetExceededError` at once if ``size`` exceeds the capacity, and
        :class:`BudgetBusyError` if it is not granted within ``wait_s`` seconds.
        """
        if size > self.capacity:
            raise BudgetExceededError(f"{size:,} bytes asked of a budget of {self.capacity:,}")
        self._acquire(size, time.monotonic() + wait_s)
        try:
            yield
        finally:
            with self._changed:
                self._reserved -= size
                self._changed.notify_all()

    def _acquire(self, size: int, deadline: float) -> None:
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            try:
                while self._waiting[0] is not ticket or self._reserved + size > self.capacity:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise BudgetBusyError(f"{size:,} bytes not free within the time allowed")
                    self._changed.wait(remaining)
                self._reserved += size
            finally:
                # Granted or given up: either way the next in line may now fit.
                self._waiting.remove(ticket)
                self._changed.notify_all()
