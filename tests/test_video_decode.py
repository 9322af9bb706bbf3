"""deepfake_edge.video (issue 23, "Decoding" and "Bad input"): sampling times on real footage and variable
frame rate, rotation, every bad input a person uploads, bounded memory on 8K, every kind of source.

The videos are made offline by tests/video_samples.py; the real footage is OpenCV's vtest.avi from
Debian's opencv-doc package (the tests cut from it skip without it)."""

from __future__ import annotations

import io
import json
import math
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import video_samples as samples
from deepfake_edge.preprocessing import BadImageError
from deepfake_edge.serving_contract import is_image_file, is_video_path
from deepfake_edge.video import (BadVideoError, SampledFrame, VideoLimits, VideoReader, name_note, probe,
                                 sniff_kind)

needs_vtest = pytest.mark.skipif(not samples.VTEST.exists(),
                                 reason=f"{samples.VTEST} missing (Debian package opencv-doc)")
pytestmark = pytest.mark.timeout(60)  # a decoder that hangs fails the test instead of the run


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


def sampled(source, limits: VideoLimits = VideoLimits()) -> tuple[VideoReader, list[SampledFrame]]:
    with VideoReader(source, limits) as reader:
        return reader, list(reader.frames())


def band_contrast(image: Image.Image) -> float:
    """Mean brightness of the top eighth minus that of the bottom eighth."""
    grey = np.asarray(image.convert("L"), dtype=float)
    band = max(1, grey.shape[0] // 8)
    return grey[:band].mean() - grey[-band:].mean()


# --- sampling -----------------------------------------------------------------------------------------------
@needs_vtest
def test_vtest_is_sampled_by_timestamp_and_capped_at_max_frames():
    """79.5 s at 2 fps would be 159 frames: the rate drops to 120 / 79.5 s and a note says so. Sample k is
    the first 10 fps frame at or after k / rate, and its pixels are that frame's (checked against OpenCV)."""
    import cv2

    reader, frames = sampled(samples.VTEST)
    assert (reader.info.width, reader.info.height) == (768, 576)
    assert (reader.info.duration_s, reader.info.fps, reader.info.codec, reader.info.container,
            reader.info.rotation) == (samples.VTEST_DURATION_S, 10.0, "msmpeg4", "avi", 0)
    rate = 120 / samples.VTEST_DURATION_S
    assert reader.sample_fps == pytest.approx(rate)
    assert any(re.search(r"sampled at 1\.51 fps instead of 2: at most 120 frames", note) for note in reader.notes)
    expected = [math.ceil(k / rate * 10 - 1e-9) / 10 for k in range(120)]
    assert [frame.index for frame in frames] == list(range(120))
    assert [frame.time_s for frame in frames] == pytest.approx(expected, abs=1e-6)
    assert {(frame.image.size, frame.image.mode, frame.scale) for frame in frames} == {((768, 576), "RGB", 1.0)}
    capture = cv2.VideoCapture(str(samples.VTEST))
    for frame in (frames[0], frames[1], frames[60], frames[119]):
        capture.set(cv2.CAP_PROP_POS_FRAMES, round(frame.time_s * 10))
        reference = cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB).astype(float)
        assert np.abs(np.asarray(frame.image, dtype=float) - reference).mean() < 4, frame.time_s
    capture.release()


@needs_vtest
def test_vtest_at_2_fps_without_the_cap_takes_every_fifth_frame():
    reader, frames = sampled(samples.VTEST, VideoLimits(max_frames=1000))
    assert reader.notes == [] and reader.sample_fps == 2.0
    assert [frame.time_s for frame in frames] == pytest.approx([k / 2 for k in range(159)], abs=1e-6)


@needs_vtest
def test_frames_are_decoded_lazily():
    """The first sample of 79.5 s comes after reading a sliver of the file, not all of it."""
    with open(samples.VTEST, "rb") as file, VideoReader(file) as reader:
        next(reader.frames())
        assert file.tell() < samples.VTEST.stat().st_size / 10


def test_max_frames_spread_over_the_declared_duration_or_stopped_with_a_note(folder):
    """Within a truthful duration the lowered rate spreads max_frames over it (no stop note); frames past a
    header that claims 2 s are cut at max_frames, with a note."""
    reader, frames = sampled(samples.variable_rate(folder), VideoLimits(max_frames=2))
    assert reader.sample_fps == pytest.approx(2 / 3.2)
    assert [frame.time_s for frame in frames] == pytest.approx([0.0, 1.7], abs=1e-3)
    assert len(reader.notes) == 1 and "sampled at 0.62 fps instead of 2" in reader.notes[0]
    reader, frames = sampled(samples.lying_header(folder), VideoLimits(max_frames=1, max_duration_s=1e6))
    assert len(frames) == 1
    assert reader.notes[-1] == "stopped at 36000.0 s: at most 1 frames are analysed per video"


def test_variable_frame_rate_follows_presentation_timestamps(folder):
    """Frames at 0, .1, .15, .9, 1, 1.7, 1.72, 1.74, 2.5, 3.1 s (frame i is grey 20 i): at 2 fps the
    samples are the first frames at or after 0, .5, 1, 1.5, 2, 3 s, each taken once."""
    reader, frames = sampled(samples.variable_rate(folder))
    assert [frame.time_s for frame in frames] == pytest.approx([0.0, 0.9, 1.0, 1.7, 2.5, 3.1], abs=1e-3)
    levels = [np.asarray(frame.image, dtype=float).mean() for frame in frames]
    assert levels == pytest.approx([20 * i for i in (0, 3, 4, 5, 8, 9)], abs=4)
    assert reader.notes == []


def test_animated_gif_is_a_video_with_transparency_on_white(folder):
    path = samples.animated_gif(folder)
    assert sniff_kind(path) == "video" and name_note(path, "video") is None
    reader, frames = sampled(path)
    assert (reader.info.container, reader.info.codec, reader.info.duration_s) == ("gif", "gif", 1.0)
    assert [frame.time_s for frame in frames] == pytest.approx([0.0, 0.6])
    first = frames[0].image
    assert first.getpixel((2, 15)) == (255, 255, 255)  # transparent half
    assert first.getpixel((35, 15)) == (0, 0, 0)
    assert frames[1].image.getpixel((20, 15))[0] == pytest.approx(180, abs=3)


# --- rotation -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rotation, clockwise", [(-90, 90), (90, 270), (180, 180)])
def test_rotated_phone_video_comes_out_upright(folder, rotation, clockwise):
    """A portrait scene (white band on top) stored turned, with a display matrix: decoded upright."""
    path = samples.rotated_phone(folder, rotation)
    reader, frames = sampled(path)
    assert (reader.info.width, reader.info.height, reader.info.rotation) == (48, 64, clockwise)
    assert frames[0].image.size == (48, 64)
    assert band_contrast(frames[0].image) > 150


def test_phone_sample_carries_the_display_matrix_a_phone_writes(folder):
    """The sign convention checked against the file, not against PyAV: the -90 sample's track header holds
    QuickTime's portrait matrix (a, b, c, d) = (0, 1, -1, 0), which maps the stored frame's left edge to
    the top; the stored frame has its white band on the left."""
    path = samples.rotated_phone(folder, -90)
    data = path.read_bytes()
    tkhd = data.index(b"tkhd") + 4
    matrix = struct.unpack(">9i", data[tkhd + 40 : tkhd + 76])  # version 0 tkhd: the matrix after 40 bytes
    assert [value / 65536 for value in (matrix[0], matrix[1], matrix[3], matrix[4])] == [0, 1, -1, 0]
    import av

    with av.open(str(path)) as container:
        stored = next(container.decode(video=0)).to_ndarray(format="gray")
    assert stored.shape == (48, 64) and stored[:, :8].mean() - stored[:, -8:].mean() > 150


# --- bad input ----------------------------------------------------------------------------------------------
# The bad inputs cut from real footage need vtest.avi; the others are synthetic.
_SYNTHETIC = {"audio_only", "ten_hours", "lying_header", "unknown_codec"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=() if name in _SYNTHETIC else needs_vtest)
                                  for name in sorted(samples.BAD_VIDEOS)])
def test_bad_input_is_refused_or_noted_clearly(folder, name):
    maker, error, note = samples.BAD_VIDEOS[name]
    path = maker(folder)
    if error is not None:
        with pytest.raises(BadVideoError, match=error) as raised:
            sampled(path)
        assert isinstance(raised.value, BadImageError)  # every bad-input path of the CLI and web app covers it
        print(f"{name}: BadVideoError: {raised.value}")
    else:
        reader, frames = sampled(path)
        assert frames, name
        assert any(re.search(note, line) for line in reader.notes), reader.notes
        print(f"{name}: {len(frames)} frames; notes: {reader.notes}")


@needs_vtest
def test_truncated_and_corrupt_videos_keep_the_frames_before_the_damage(folder):
    _, frames = sampled(samples.truncated(folder))
    assert [frame.time_s for frame in frames] == pytest.approx([0.0, 0.5, 1.0])
    reader, frames = sampled(samples.corrupt_middle(folder))
    assert frames[0].time_s == 0.0 and frames[-1].time_s == pytest.approx(2.5)


def test_limits_are_checked_on_the_header(folder):
    clip = samples.variable_rate(folder)
    with pytest.raises(BadVideoError, match=r"video too large: [\d,]+ bytes \(limit 100\)"):
        VideoReader(clip, VideoLimits(max_bytes=100))
    with pytest.raises(BadVideoError, match=r"frames too large: 64x48 = 3,072 pixels \(limit 3,000\)"):
        VideoReader(clip, VideoLimits(max_frame_pixels=3000))
    with pytest.raises(BadVideoError, match=r"declares 3 s; the limit is 2 s"):
        VideoReader(clip, VideoLimits(max_duration_s=2))
    with pytest.raises(ValueError, match="sample_fps must be > 0"):
        VideoLimits(sample_fps=0)
    with pytest.raises(BadVideoError, match="empty file"):
        VideoReader(b"")
    with pytest.raises(BadVideoError, match="not a video"):
        VideoReader(samples.still_gif(folder))


@pytest.mark.timeout(120)
def test_8k_video_is_shrunk_at_decode_time_within_bounded_memory(folder):
    """Both 7680x4320 frames come out 1280x720 (scale 6), band on top, in a child process whose peak RSS
    grows by far less than two full RGB frames (100 MB each) beside the decoder's own (measured ~180 MB)."""
    path = samples.eight_k(folder)
    script = textwrap.dedent("""
        import json, sys
        import av
        from deepfake_edge.video import VideoLimits, VideoReader
        def peak_mb():  # VmHWM: getrusage's ru_maxrss keeps the parent's peak across exec
            with open("/proc/self/status") as status:
                return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
        before = peak_mb()
        with VideoReader(sys.argv[1], VideoLimits(sample_fps=10)) as reader:
            frames = [(f.image.size, f.scale, f.time_s) for f in reader.frames()]
            top = reader.info.width, reader.info.height
        print(json.dumps({"growth_mb": peak_mb() - before, "frames": frames, "size": top}))
    """)
    child = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=100)
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout)
    print(f"8K: peak RSS grew by {result['growth_mb']:.0f} MB decoding {len(result['frames'])} frames")
    assert result["size"] == [7680, 4320]
    assert result["frames"] == [[[1280, 720], 6.0, 0.0], [[1280, 720], 6.0, pytest.approx(0.1)]]
    assert result["growth_mb"] < 350
    with pytest.raises(BadVideoError, match=r"7680x4320 = 33,177,600 pixels \(limit 30,000,000\)"):
        VideoReader(path, VideoLimits(max_frame_pixels=30_000_000))
    _, frames = sampled(path)
    assert band_contrast(frames[0].image) > 80


@pytest.mark.parametrize("name, codec, container, expected", [
    ("clip.mp4", "libx264", None, "mp4"), ("clip.m4v", "libx264", "mp4", "mp4"), ("clip.mov", "libx264", None, "mov"),
    ("clip.mkv", "libx264", None, "matroska"), ("clip.webm", "libvpx-vp9", None, "webm"),
    ("clip.avi", "mpeg4", None, "avi"),
])
def test_every_container_is_read(folder, name, codec, container, expected):
    path = samples.encode(folder / name, [(samples.flat(25 * i), i / 10) for i in range(10)], codec, container)
    assert sniff_kind(path) == "video"
    reader, frames = sampled(path)
    assert reader.info.container == expected and reader.notes == []
    assert [frame.time_s for frame in frames] == pytest.approx([0.0, 0.5])
    assert np.asarray(frames[1].image, dtype=float).mean() == pytest.approx(125, abs=4)


def test_mutated_videos_give_frames_or_bad_video_error_only(folder):
    """400 seeded mutations (bytes changed, tails cut) of an MP4, a Matroska, a WebM, an AVI and a GIF: each
    decodes or is a BadVideoError, never another exception, in bounded time. Found invalid UTF-8 in
    container tags and Pillow's IndexError on a cut GIF."""
    import random
    import time

    flats = [(samples.flat(25 * i), i / 10) for i in range(10)]
    originals = [samples.variable_rate(folder).read_bytes(), samples.animated_gif(folder).read_bytes()] + [
        samples.encode(folder / name, flats, codec, container).read_bytes()
        for name, codec, container in [("f.mkv", "libx264", None), ("f.webm", "libvpx-vp9", None),
                                       ("f.avi", "mpeg4", None)]]
    rng, outcomes, slowest = random.Random(1), {"frames": 0, "refused": 0}, 0.0
    for _ in range(400):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.choice([1, 4, 16, 64])):
            data[rng.randrange(min(len(data), rng.choice([200, 2000, len(data)])))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        started = time.perf_counter()
        try:
            sampled(bytes(data))
            outcomes["frames"] += 1
        except BadVideoError:
            outcomes["refused"] += 1
        slowest = max(slowest, time.perf_counter() - started)
    print(f"mutated videos: {outcomes}, slowest {slowest:.2f} s")
    assert min(outcomes.values()) > 50 and slowest < 5


# --- sources and kinds --------------------------------------------------------------------------------------
def test_path_bytes_and_file_objects_give_the_same_frames(folder):
    path = samples.variable_rate(folder)
    data = path.read_bytes()
    reference = [(frame.time_s, frame.image.tobytes()) for frame in sampled(path)[1]]
    upload = io.BytesIO(data)
    upload.seek(7)
    assert sniff_kind(upload) == "video" and upload.tell() == 7  # left where it was
    with open(path, "rb") as file:
        for source in (str(path), data, upload, file):
            assert [(frame.time_s, frame.image.tobytes()) for frame in sampled(source)[1]] == reference
    assert probe(data).width == 64


@needs_vtest
def test_kind_is_decided_by_content_and_a_disagreeing_name_is_noted(folder):
    assert sniff_kind(samples.video_named_jpg(folder)) == "video"
    photo = samples.jpeg_named_mp4(folder)
    assert sniff_kind(photo) == "image"
    assert name_note(photo, "image") == "named .mp4 but the content is an image: analysed as an image"
    assert sniff_kind(samples.still_gif(folder)) == "image"
    assert sniff_kind(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") == "image"  # a HEIF photo
    assert sniff_kind(bytes(range(256))) == "image"
    # A two-frame GIF declaring 65535x65535 (Pillow's bomb guard trips): the image path refuses it.
    image = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    assert sniff_kind(b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + image + image + b";") == "image"
    assert name_note("clip.mp4", "video") is None and name_note("x.bin", "video") is None
    assert is_video_path("A.MOV") and is_video_path(Path("b.webm")) and not is_video_path("c.gif")
    assert is_image_file("c.gif")
