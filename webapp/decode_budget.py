"""How much memory uploads being decoded and scored may take at once: a byte-weighted semaphore.

A count of concurrent decodes did not bound memory: a few KB of PNG can declare 40 M pixels, and eight of
them at once grew the web app by gigabytes. Each upload now reserves what decoding and scoring it takes at
its peak, computed from its header before any pixel is decoded (:func:`scoring_bytes`), and waits, first
come first served, until that much of the budget is free.
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
