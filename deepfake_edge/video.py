"""Video input: what an upload is (:func:`sniff_kind`) and a video's frames sampled in time (:class:`VideoReader`).

A video is analysed as frames sampled at ``sample_fps`` by presentation timestamp (so variable frame rate
is timed right), at most ``max_frames`` of them, each shrunk to ``max_side`` by swscale as it is converted
to RGB (an 8K frame is never held in RGB) and turned upright by the stream's display matrix. Decoding is
PyAV (FFmpeg), chosen by measurement over OpenCV's FFmpeg backend: docs/video.md.

What FFmpeg is allowed to touch is kept small: the container is recognised here from its first bytes and
its demuxer is named (MP4/MOV, AVI, Matroska/WebM, GIF), never guessed, so none of FFmpeg's other
demuxers (playlists, concat lists, image sequences) is reached; and bytes always come through a Python
file object, so FFmpeg never opens a path or URL itself.

``av`` is imported inside the functions that decode, so importing this module (``deepfake-edge --help``)
stays fast.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal, Union

from PIL import Image

from deepfake_edge.preprocessing import DEFAULT_MAX_PIXELS, BadImageError
from deepfake_edge.regions import MAX_ANALYSED_SIDE
from deepfake_edge.serving_contract import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

if TYPE_CHECKING:
    import av.video.frame

VideoSource = Union[str, os.PathLike, bytes, BinaryIO]
Kind = Literal["image", "video"]

DEFAULT_SAMPLE_FPS = 2.0
DEFAULT_MAX_FRAMES = 120  # frames analysed per video at most; beyond it the rate is lowered to spread them
DEFAULT_MAX_DURATION_S = 600.0  # the CLI's default; the web app passes 60
# Decoder threads per open video: the web app decodes several uploads at once on 2 cores.
DECODER_THREADS = 2
SNIFF_BYTES = 64  # every signature sniff_kind knows sits in the first 64 bytes
# Damaged packets in a row after which the rest of a stream is given up: a file of garbage behind a valid
# header would otherwise be fed to the decoder packet by packet to its end.
MAX_BAD_PACKETS_IN_A_ROW = 64
# A stream whose frames end this much before its declared duration is reported as cut short.
TRUNCATION_TOLERANCE_S = 1.0
_EPSILON_S = 1e-6  # 10 fps timestamps are not exact in binary; sampling instants allow this slack
# ftyp major brands of still images (HEIF, AVIF): ISO-BMFF like MP4, but photos (the image path refuses them).
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"avif"}
_DEMUXERS = {"mp4": "mov", "mov": "mov", "avi": "avi", "matroska": "matroska", "webm": "matroska", "gif": "gif"}
_CONTAINERS_READ = "MP4/MOV, AVI, Matroska/WebM or animated GIF"
# Decoded formats with transparency (GIF decodes to bgra): composited on white, as load_image does for images.
_ALPHA_FORMATS = {"bgra", "rgba", "argb", "abgr", "pal8", "ya8", "yuva420p", "yuva422p", "yuva444p"}
# Display-matrix rotation (degrees counter-clockwise, PyAV's VideoFrame.rotation) -> the turn that undoes it.
_UPRIGHT = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


class BadVideoError(BadImageError):
    """The input is not a decodable video within limits; the message says why, for a person.

    A subclass of BadImageError, so every "bad input" path (the CLI's exit code, the web app's 4xx) covers it.
    ``over_limit`` names the limit a usable video broke ("bytes", "frame_pixels", "duration"; None when the
    file itself is unusable), so a server can answer 413 instead of 400 without parsing the message.
    """

    def __init__(self, message: str, over_limit: str | None = None):
        super().__init__(message)
        self.over_limit = over_limit


@dataclass(frozen=True)
class VideoLimits:
    """What a video may be: checked on its header (duration, size, frame pixels) and while decoding."""

    sample_fps: float = DEFAULT_SAMPLE_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    max_bytes: int | None = None
    max_frame_pixels: int = DEFAULT_MAX_PIXELS  # 40 MP: an 8K frame (33 MP) is decoded, then shrunk
    max_side: int = MAX_ANALYSED_SIDE  # sampled frames are shrunk to this at decode time

    def __post_init__(self) -> None:
        if not (self.sample_fps > 0 and self.max_frames >= 1 and self.max_side >= 1):
            raise ValueError(f"sample_fps must be > 0, max_frames and max_side >= 1: {self}")


@dataclass(frozen=True)
class VideoInfo:
    """What a video is, from its header and first frame. ``width``/``height`` are upright (rotation
    applied) at original resolution; ``rotation`` is the clockwise turn applied to the stored frames
    (0, 90, 180, 270: a portrait phone video is 90, as its ``rotate`` tag says)."""

    width: int
    height: int
    duration_s: float | None
    fps: float | None
    rotation: int
    codec: str
    container: str


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame: ``image`` is RGB, upright, longer side <= ``max_side``; ``scale`` (>= 1) is
    original pixels per ``image`` pixel (multiply a box in ``image`` by it for video pixels)."""

    index: int  # 0-based sample number
    time_s: float  # presentation time, seconds from the first frame
    image: Image.Image
    scale: float


def sniff_kind(source: VideoSource) -> Kind:
    """Whether ``source`` is a "video" (MP4/MOV, AVI, Matroska/WebM, a GIF of more than one frame) or an "image".

    Decided by content, not name, from the first bytes (a GIF's blocks are walked to its second frame).
    A file object is read from its start and left at the position it had.
    """
    with _binary(source) as file:
        return "image" if _container(file) is None else "video"


def name_note(name: str | os.PathLike, kind: Kind) -> str | None:
    """The note for a file whose extension says the other kind than its content: a video named .jpg, an
    image named .mp4 (an animated .gif is a video by right). None when the name agrees or says nothing."""
    suffix = Path(name).suffix.lower()
    if kind == "video" and suffix in IMAGE_EXTENSIONS and suffix != ".gif":
        return f"named {suffix} but the content is a video: analysed as a video"
    if kind == "image" and suffix in VIDEO_EXTENSIONS:
        return f"named {suffix} but the content is an image: analysed as an image"
    return None


def probe(source: VideoSource, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """``source``'s :class:`VideoInfo` (one frame is decoded, for its rotation); raises as :class:`VideoReader`."""
    with VideoReader(source, limits) as reader:
        return reader.info


class VideoReader:
    """One open video: :attr:`info` and :attr:`notes` on opening, then :meth:`frames`, once. A context manager.

    ``source`` is a path, bytes or a seekable binary file object (read from its start, left open). Raises
    :class:`BadVideoError` when the content is not a video container read here, has no video stream
    (audio only), declares a duration over ``max_duration_s`` or frames over ``max_frame_pixels``, is
    over ``max_bytes``, or when no frame decodes. Damage after the first frame only adds notes.
    """

    def __init__(self, source: VideoSource, limits: VideoLimits = VideoLimits()) -> None:
        self.limits = limits
        self.notes: list[str] = []
        self._stack = ExitStack()
        try:
            self._open(self._stack.enter_context(_binary(source)), source)
        except BaseException:
            self._stack.close()
            raise

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the decoder and close a file opened here."""
        self._stack.close()

    def _open(self, file: BinaryIO, source: VideoSource) -> None:
        import av

        size = file.seek(0, io.SEEK_END)
        file.seek(0)
        if size == 0:
            raise BadVideoError("empty file (0 bytes)")
        if self.limits.max_bytes is not None and size > self.limits.max_bytes:
            raise BadVideoError(f"video too large: {size:,} bytes (limit {self.limits.max_bytes:,})", "bytes")
        container_name = _container(file)
        if container_name is None:
            raise BadVideoError(f"not a video: the content is not {_CONTAINERS_READ}")
        if isinstance(source, (str, os.PathLike)) and (note := name_note(source, "video")):
            self.notes.append(note)
        try:
            # metadata_errors: tags are not used here, and invalid UTF-8 in one must not fail the open (fuzzed).
            container = self._stack.enter_context(_open_container(file, container_name, self.limits))
        except av.FFmpegError as error:
            raise BadVideoError(f"cannot read this {container_name.upper()} file, it is damaged or "
                                f"truncated ({error.strerror})") from None
        streams = [stream for stream in container.streams.video
                   if not stream.disposition & av.stream.Disposition.attached_pic]  # cover art is no video
        if not streams:
            raise BadVideoError("no video stream: the file holds only audio" if container.streams.audio
                                else "no video stream in the file")
        stream = self._stream = streams[0]
        decoder = stream.codec_context
        if decoder is None:  # PyAV makes no codec context for a codec its FFmpeg cannot decode
            raise BadVideoError("cannot decode this video: its codec is not supported")
        if decoder.width * decoder.height > self.limits.max_frame_pixels:
            raise BadVideoError(f"video frames too large: {decoder.width}x{decoder.height} = "
                                f"{decoder.width * decoder.height:,} pixels (limit {self.limits.max_frame_pixels:,})",
                                "frame_pixels")
        duration = self._declared_duration = _duration(container, stream)
        if duration is not None and duration > self.limits.max_duration_s:
            raise BadVideoError(f"video too long: it declares {duration:.0f} s; the limit is "
                                f"{self.limits.max_duration_s:.0f} s", "duration")
        # max_pixels: the decoder itself refuses a frame that grows past the limit mid-stream.
        decoder.options = {"max_pixels": str(self.limits.max_frame_pixels)}
        decoder.thread_count, decoder.thread_type = DECODER_THREADS, "AUTO"
        try:
            decoder.open()
        except av.FFmpegError as error:
            raise BadVideoError(f"cannot decode this video's {decoder.name} stream ({error.strerror})") from None
        self._bad_packets, self._first_bad_s, self._stopped, self._iterated = 0, None, False, False
        self._reformatter = av.video.reformatter.VideoReformatter()  # one, so swscale's context is reused
        self._origin: float | None = None
        self._decoded = self._decode()
        first = next(self._decoded, None)
        if first is None:
            damage = f" ({self._bad_packets} damaged packets)" if self._bad_packets else ""
            raise BadVideoError(f"no frame of this video could be decoded{damage}")
        self._first = first
        turn = round(first[0].rotation / 90) % 4 * 90  # counter-clockwise, as the display matrix states it
        self._upright = _UPRIGHT.get(turn)
        width, height = first[0].width, first[0].height
        rate = stream.average_rate or stream.guessed_rate
        self.info = VideoInfo(width=height if turn % 180 else width, height=width if turn % 180 else height,
                              duration_s=duration, fps=float(rate) if rate else None, rotation=(360 - turn) % 360,
                              codec=decoder.name, container=container_name)
        self.sample_fps = self.limits.sample_fps
        if duration is not None and duration * self.sample_fps > self.limits.max_frames:
            self.sample_fps = self.limits.max_frames / duration
            self.notes.append(f"sampled at {self.sample_fps:.2f} fps instead of {self.limits.sample_fps:g}: at "
                              f"most {self.limits.max_frames} frames are analysed per video ({duration:.1f} s long)")

    def frames(self) -> Iterator[SampledFrame]:
        """The sampled frames in time order, decoded packet by packet (memory flat in the video's length).

        Sample k is the first frame presented at or after k / :attr:`sample_fps` seconds (a frame is
        taken at most once: a frame-rate gap skips instants). Stops, with a note, at ``max_frames``
        samples, at a timestamp past ``max_duration_s`` or at damage the decoder cannot get past; the
        notes on how the stream ended are in :attr:`notes` once the iteration ends.
        """
        if self._iterated:
            raise RuntimeError("VideoReader.frames() can be iterated once")
        self._iterated = True
        limits, declared, count, instant = self.limits, self._declared_duration, 0, 0
        last_time, last_end = 0.0, 0.0
        for frame, time in itertools.chain([self._first], self._decoded):
            if time > limits.max_duration_s:
                self._stop(f"stopped at {last_time:.1f} s: the next frame is timed at {time:.0f} s, past the "
                           f"{limits.max_duration_s:.0f} s limit (the header declares "
                           f"{'no duration' if declared is None else f'{declared:.1f} s'})")
                break
            last_time, last_end = time, time + (float(frame.duration * frame.time_base) if frame.duration
                                                 and frame.time_base else 0.0)
            if time + _EPSILON_S < instant / self.sample_fps:
                continue
            # Reached only by a frame past the declared duration: with a truthful one the rate was lowered
            # so that max_frames samples cover it (at most one sampling period is decoded for nothing).
            if count == limits.max_frames:
                self._stop(f"stopped at {time:.1f} s: at most {limits.max_frames} frames are analysed per video")
                break
            yield SampledFrame(count, time, *self._picture(frame))
            count += 1
            instant = math.floor(time * self.sample_fps + _EPSILON_S) + 1
        else:
            if not self._stopped and declared is not None and declared - last_end > TRUNCATION_TOLERANCE_S:
                self._stop(f"stopped at {last_time:.1f} s of the declared {declared:.1f} s: the rest is "
                           "missing or could not be decoded")
        if self._bad_packets:
            self.notes.append(f"{self._bad_packets} damaged packet(s) could not be decoded, the first at "
                              f"{self._first_bad_s:.1f} s: frames after it may show artefacts")

    def _stop(self, note: str) -> None:
        self._stopped = True
        self.notes.append(note)

    def _decode(self) -> Iterator[tuple[av.video.frame.VideoFrame, float]]:
        """Decoded frames with their time in seconds from the first; damaged packets are skipped and counted."""
        import av

        packets, bad_in_a_row, time, started = self._stream.container.demux(self._stream), 0, 0.0, False
        # A frame without a timestamp is taken to follow the previous one at the stream's nominal rate.
        rate = self._stream.average_rate or self._stream.guessed_rate
        step = float(1 / rate) if rate else 0.0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as error:
                self._stop(f"stopped at {time:.1f} s: the rest could not be read ({error.strerror})")
                return
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self._bad_packets += 1
                if self._first_bad_s is None:
                    self._first_bad_s = time
                bad_in_a_row += 1
                if bad_in_a_row == MAX_BAD_PACKETS_IN_A_ROW:
                    self._stop(f"stopped at {time:.1f} s: the rest could not be decoded")
                    return
                continue
            bad_in_a_row = 0
            for frame in frames:
                if frame.time is not None:
                    self._origin = frame.time if self._origin is None else self._origin
                    time = frame.time - self._origin
                elif started:
                    time += step
                started = True
                yield frame, time

    def _picture(self, frame: av.video.frame.VideoFrame) -> tuple[Image.Image, float]:
        """``frame`` as an upright RGB image shrunk to ``max_side`` by swscale, and its scale."""
        width, height = frame.width, frame.height
        shrink = min(1.0, self.limits.max_side / max(width, height))
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        # AREA: the downscale filter without aliasing; the range as the frame states it, out to full-range RGB.
        # to_ndarray, not to_image: PyAV's to_image copies row by row (measured 5 ms against 0.5 ms a 768x576 frame).
        alpha = frame.format.name in _ALPHA_FORMATS
        converted = self._reformatter.reformat(frame, *size, format="rgba" if alpha else "rgb24", interpolation="AREA",
                                               src_color_range=frame.color_range, dst_color_range="JPEG")
        image = Image.fromarray(converted.to_ndarray())
        if alpha:
            rgba, image = image, Image.new("RGB", size, "white")
            image.paste(rgba, mask=rgba.getchannel("A"))
        if self._upright is not None:
            image = image.transpose(self._upright)
        return image, max(width, height) / max(size)


def _open_container(file: BinaryIO, container_name: str, limits: VideoLimits) -> av.container.InputContainer:
    """``file`` opened with the named demuxer. FFmpeg's stream probe decodes a frame before VideoReader checks
    its size; the per-stream max_pixels makes it refuse an oversized one without allocating it (refusing an
    8K clip: 75 MB -> 10 MB). Containers whose streams appear only while probing (PyAV raises ValueError for
    per-stream options there) are opened without it and rely on the checks after the probe."""
    import av

    options = {"format": _DEMUXERS[container_name], "metadata_errors": "replace"}
    try:
        return av.open(file, stream_options=[{"max_pixels": str(limits.max_frame_pixels)}], **options)
    except ValueError:
        file.seek(0)
        return av.open(file, **options)


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """The video stream's declared duration, else the container's, in seconds; None when neither says."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration is not None else None


@contextmanager
def _binary(source: VideoSource) -> Iterator[BinaryIO]:
    """``source`` as a seekable binary file at its start; a caller's file object goes back to its position."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            yield file
    else:
        position = source.tell()
        source.seek(0)
        try:
            yield source
        finally:
            source.seek(position)


def _container(file: BinaryIO) -> str | None:
    """The container in ``file`` (read from, then put back at, its start), or None for anything else."""
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return None if brand in _IMAGE_BRANDS else "mov" if brand == b"qt  " else "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: the DocType says which
        return "webm" if b"webm" in head else "matroska"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        try:
            with Image.open(file, formats=["GIF"]) as gif:
                animated = gif.is_animated  # walks the blocks to a second frame; decodes no pixel
        except Exception:  # Pillow's GIF walk raises OSError, EOFError, IndexError, its bomb error... (fuzzed)
            animated = False  # a GIF it cannot walk is the image path's to report
        file.seek(0)
        return "gif" if animated else None
    return None
