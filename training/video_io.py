"""Video files of the test videos (training/video_synth.py): H.264 MP4 written frame by frame and read back,
and camera footage read at a constant frame rate.

Encoding: H.264 (libx264, CRF 23, preset veryfast, yuv420p) in MP4 with 2 encoder threads: x264's output
depends on its thread count, so the count is fixed. Even so, identical frames did not always encode to
identical bytes from run to run (the 2-core build VM, PyAV 18.1, 2026-12-07): what the same arguments
reproduce is the frames, exactly so when encoded losslessly (``crf`` 0).
("veryfast" encodes 720p about 4x faster than "medium" at the same CRF, which keeps 24 pairs a split to a
few minutes on two cores.)
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

CODEC, CRF, PRESET, PIX_FMT, ENCODER_THREADS = "libx264", 23, "veryfast", "yuv420p", 2


class VideoWriter:
    """An H.264 MP4 written frame by frame (uint8 RGB (H, W, 3) arrays, even sides), at ``fps``; ``crf`` 0 is
    lossless (of the yuv420p frames)."""

    def __init__(self, path: Path, width: int, height: int, fps: int, crf: int = CRF) -> None:
        import av

        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even sides, got {width}x{height}")
        self._av = av
        self.fps = fps
        self.count = 0
        self._container = av.open(str(path), "w", format="mp4")
        self._stream = self._container.add_stream(CODEC, rate=Fraction(fps))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = PIX_FMT
        self._stream.options = {"crf": str(crf), "preset": PRESET}
        self._stream.codec_context.thread_count = ENCODER_THREADS

    def write(self, frame: np.ndarray) -> None:
        video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.count
        video_frame.time_base = Fraction(1, self.fps)
        self.count += 1
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_video(path: Path | str) -> tuple[list[np.ndarray], float]:
    """Every frame of a video file as RGB arrays, and its average frame rate (for tests and checks)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else float("nan")
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)], fps


def footage_frames(path: Path, start_s: float, n_frames: int, fps: float) -> Iterator[np.ndarray]:
    """``n_frames`` RGB frames at ``start_s + i / fps``: each the latest decoded frame shown by then (the
    footage resampled to a constant rate, holding frames of a sparse or variable-rate file)."""
    import av

    times = start_s + np.arange(n_frames) / fps
    emitted = 0
    held, held_array = None, None  # the latest decoded frame, converted only when it is shown
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            shown = float(frame.time) if frame.time is not None else 0.0
            while emitted < n_frames and held is not None and shown > times[emitted] + 1e-6:
                if held_array is None:
                    held_array = held.to_ndarray(format="rgb24")
                yield held_array
                emitted += 1
            if emitted >= n_frames:
                return
            held, held_array = frame, None
    while emitted < n_frames and held is not None:  # past the last frame: it stays on screen
        if held_array is None:
            held_array = held.to_ndarray(format="rgb24")
        yield held_array
        emitted += 1
