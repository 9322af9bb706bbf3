"""Video files for the video tests and benchmarks/video_decoders.py, made offline with PyAV: a clip of real
footage (cut from OpenCV's vtest.avi, Debian's opencv-doc package) and the bad or odd videos users upload.

Every maker writes one small file into ``folder`` (in well under a second, the 8K one in ~3 s) and returns
its path. :data:`BAD_VIDEOS` lists the makers of the inputs that must be refused or noted, with what the
reader must say (a regular expression).
"""

from __future__ import annotations

import random
import shutil
import struct
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")  # 768x576, 10 fps, 79.5 s of a street
VTEST_DURATION_S = 79.5
VFR_TIMES = (0.0, 0.1, 0.15, 0.9, 1.0, 1.7, 1.72, 1.74, 2.5, 3.1)  # irregular presentation times, s
_TIME_BASE = Fraction(1, 1000)


def encode(path: Path, frames: Iterable[tuple[np.ndarray, float]], codec: str = "libx264",
           container: str | None = None, rotation: int | None = None, container_options: dict | None = None) -> Path:
    """Write RGB (H, W, 3) uint8 ``frames``, each shown from its time in seconds. ``rotation`` sets the
    display matrix, counter-clockwise as PyAV states it (a portrait phone video is -90)."""
    frames = iter(frames)
    first, first_time = next(frames)
    with av.open(str(path), "w", format=container, options=container_options or {}) as output:
        stream = output.add_stream(codec, rate=10)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = _TIME_BASE
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for array, time in [(first, first_time), *frames]:
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = round(time / _TIME_BASE), _TIME_BASE
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def flat(value: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A uniform RGB frame of grey ``value``."""
    return np.full((size[1], size[0], 3), value, np.uint8)


def vtest_frames(seconds: float, size: tuple[int, int] = (384, 288)) -> list[np.ndarray]:
    """The first ``seconds`` of vtest.avi (10 fps) as RGB arrays of ``size``."""
    with av.open(str(VTEST)) as source:
        return [frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
                for _, frame in zip(range(round(seconds * 10)), source.decode(video=0))]


def real_clip(folder: Path, name: str = "clip.mp4", seconds: float = 3.0, faststart: bool = True) -> Path:
    """``seconds`` of vtest.avi at 10 fps, 384x288 H.264 in MP4 (index first when ``faststart``): ~100 KB."""
    frames = vtest_frames(seconds)
    return encode(folder / name, ((array, number / 10) for number, array in enumerate(frames)),
                  container_options={"movflags": "faststart"} if faststart else None)


COPY_CLIP_MARGIN = 24  # px between copy_moved_clip's frame edge and its photo at time 0
COPY_CLIP_STEP = 4  # px the photo moves right per frame (10 fps)


def copy_moved_clip(folder: Path, name: str = "copied.mp4") -> Path:
    """2 s at 10 fps of a 640x560 frame in which scikit-image's astronaut, a patch of it copied elsewhere
    (client_samples.copied_astronaut), slides right :data:`COPY_CLIP_STEP` px a frame from
    :data:`COPY_CLIP_MARGIN`: a copy-move that moves with the scene, as in every frame of an edited video."""
    from client_samples import copied_astronaut

    photo = copied_astronaut()
    height, width = photo.shape[:2]

    def frame(k: int) -> np.ndarray:
        canvas = np.full((560, 640, 3), 90, np.uint8)
        left = COPY_CLIP_MARGIN + COPY_CLIP_STEP * k
        canvas[COPY_CLIP_MARGIN:COPY_CLIP_MARGIN + height, left:left + width] = photo
        return canvas

    return encode(folder / name, ((frame(k), k / 10) for k in range(20)))


def hd_clip(folder: Path) -> Path:
    """10 s of 1280x720 H.264 at 25 fps made from vtest.avi's first 250 frames (benchmark input, ~10 s to make):
    the clip of ``bench --only video``, made by the same maker (benchmarks/video.py)."""
    from deepfake_edge.benchmarks.video import make_clip

    return make_clip(folder / "hd_10s.mp4", seconds=10.0, size=(1280, 720), fps=25, source=VTEST)


def truncated(folder: Path) -> Path:
    """A 3 s clip whose index comes first, cut at 60 % of its bytes: frames stop at ~1.2 s."""
    data = real_clip(folder, "whole.mp4").read_bytes()
    path = folder / "truncated.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def truncated_index(folder: Path) -> Path:
    """A 3 s clip with its index at the end (FFmpeg's default), cut at 60 %: the index is gone."""
    data = real_clip(folder, "whole_index_last.mp4", faststart=False).read_bytes()
    path = folder / "truncated_index.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def corrupt_middle(folder: Path) -> Path:
    """A 3 s clip whose middle third of bytes is random (header intact)."""
    data = bytearray(real_clip(folder, "whole.mp4").read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = random.Random(23).randbytes(third)
    path = folder / "corrupt_middle.mp4"
    path.write_bytes(bytes(data))
    return path


def unknown_codec(folder: Path) -> Path:
    """An AVI of three MPEG-4 frames whose codec tag says ZZZZ, a codec FFmpeg does not know."""
    clip = encode(folder / "mpeg4.avi", [(flat(90), number / 10) for number in range(3)], codec="mpeg4")
    path = folder / "unknown_codec.avi"
    path.write_bytes(clip.read_bytes().replace(b"FMP4", b"ZZZZ"))
    return path


def no_decodable_frames(folder: Path) -> Path:
    """A 3 s clip whose header is intact and whose media data (the mdat box) is all zeros."""
    data = bytearray(real_clip(folder, "whole.mp4").read_bytes())
    start = data.index(b"mdat") + 4
    data[start:] = bytes(len(data) - start)
    path = folder / "no_frames.mp4"
    path.write_bytes(bytes(data))
    return path


def video_named_jpg(folder: Path) -> Path:
    """A real MP4 clip named .jpg."""
    return copy_as(real_clip(folder, "holiday.mp4", seconds=1.0), "holiday.jpg")


def jpeg_named_mp4(folder: Path) -> Path:
    """A JPEG photo (a vtest frame) named .mp4."""
    from PIL import Image

    path = folder / "photo.mp4"
    Image.fromarray(vtest_frames(0.1, size=(768, 576))[0]).save(path, format="JPEG", quality=90)
    return path


def audio_only(folder: Path) -> Path:
    """One second of AAC silence in an .m4a (an MP4 container without video)."""
    path = folder / "voice.m4a"
    with av.open(str(path), "w", format="ipod") as output:
        stream = output.add_stream("aac", rate=44100)
        for number in range(44):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, number * 1024
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def eight_k(folder: Path) -> Path:
    """Two 7680x4320 H.264 frames, grey with a bright band over the top 400 rows (~100 KB: uniform)."""
    path = folder / "8k.mp4"
    planes = np.full((4320 * 3 // 2, 7680), 128, np.uint8)  # yuv420p directly: no 100 MB RGB frame to convert
    planes[:400] = 235
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 7680, 4320, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for number in range(2):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = number
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def ten_hours(folder: Path) -> Path:
    """Two frames, at 0 s and 36000 s: the MP4 header truthfully declares a 10-hour video (~1.5 KB)."""
    return encode(folder / "ten_hours.mp4", [(flat(0), 0.0), (flat(255), 36000.0)])


def lying_header(folder: Path) -> Path:
    """Matroska with frames at 0 s and 36000 s whose header (segment duration, DURATION tag) says 2 s."""
    data = bytearray(encode(folder / "long.mkv", [(flat(0), 0.0), (flat(255), 36000.0)],
                            container="matroska").read_bytes())
    duration = data.index(b"\x44\x89\x88")  # EBML Duration element, an 8-byte float in milliseconds
    data[duration + 3 : duration + 11] = struct.pack(">d", 2000.0)
    tag = data.index(b"10:00:00.1")
    data[tag : tag + 10] = b"00:00:02.0"
    path = folder / "lying_header.mkv"
    path.write_bytes(bytes(data))
    return path


def variable_rate(folder: Path) -> Path:
    """Ten frames at :data:`VFR_TIMES`; frame i is grey level 20 * i, so a sample tells which frame it is."""
    return encode(folder / "vfr.mp4", [(flat(20 * number), time) for number, time in enumerate(VFR_TIMES)])


def rotated_phone(folder: Path, rotation: int = -90) -> Path:
    """A portrait scene (48x64, white band on top, dark below) stored the way a phone stores it: turned so
    the display matrix ``rotation`` (counter-clockwise, PyAV's sign) brings it back upright. -90 is a phone
    held upright (tkhd matrix 0,1,-1,0; ``rotate`` tag 90; OpenCV's ORIENTATION_META 90)."""
    upright = np.full((64, 48, 3), 30, np.uint8)
    upright[:10] = 255
    stored = np.ascontiguousarray(np.rot90(upright, k=-rotation // 90))  # undone by turning it `rotation` ccw
    return encode(folder / f"phone_rot{rotation}.mp4", [(stored, number / 10) for number in range(5)],
                  rotation=rotation)


def animated_gif(folder: Path) -> Path:
    """A four-frame GIF (100, 200, 300, 400 ms), red rising, with a transparent left half on frame 0."""
    from PIL import Image

    frames = [Image.new("RGBA", (40, 30), (60 * number, 0, 0, 255)) for number in range(4)]
    frames[0].paste((0, 0, 0, 0), (0, 0, 20, 30))
    path = folder / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[100, 200, 300, 400], loop=0,
                   disposal=2)
    return path


def still_gif(folder: Path) -> Path:
    """A one-frame GIF: an image, not a video."""
    from PIL import Image

    path = folder / "still.gif"
    Image.new("RGB", (40, 30), "blue").save(path)
    return path


def copy_as(path: Path, name: str) -> Path:
    """A copy of ``path`` under another name beside it."""
    return Path(shutil.copyfile(path, path.with_name(name)))


# maker -> what VideoReader must say: (raised BadVideoError message or None, note or None), regular expressions
BAD_VIDEOS: dict[str, tuple[Callable[[Path], Path], str | None, str | None]] = {
    "truncated": (truncated, None, r"stopped at 1\.\d s of the declared 3\.0 s"),
    "truncated_index": (truncated_index, r"damaged or truncated", None),
    "corrupt_middle": (corrupt_middle, None, r"damaged packet"),
    "unknown_codec": (unknown_codec, r"codec is not supported", None),
    "no_decodable_frames": (no_decodable_frames, r"no frame of this video could be decoded", None),
    "jpeg_named_mp4": (jpeg_named_mp4, r"not a video", None),
    "audio_only": (audio_only, r"only audio", None),
    "ten_hours": (ten_hours, r"declares 36000 s; the limit is 600 s", None),
    "lying_header": (lying_header, None, r"timed at 36000 s, past the 600 s limit \(the header declares 2\.0 s\)"),
    "video_named_jpg": (video_named_jpg, None, r"named \.jpg but the content is a video"),
}
