"""``deepfake-edge detect``: classify image and video files and folders with a running deepfake-edge Triton server.

What a file is (image or video) is decided by its content, not its name. Images go to the server in
batches (``iter_detect``); each video is sampled and analysed frame by frame (client/video.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from deepfake_edge.cli import CommandError, add_triton_address, add_verb, log_to_terminal
from deepfake_edge.serving_contract import DEFAULT_MODEL

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_UNREACHABLE = 3
EXIT_SERVER_ERROR = 4
EXIT_OUTPUT_ERROR = 5
EXIT_INTERRUPTED = 130  # the shell convention for Ctrl+C

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}  every image and video was classified
  {EXIT_BAD_INPUT}  some inputs were not usable images or videos (missing, empty, corrupt, not an image or
     video, too large or too long, no decodable frame) or none was found; the others were classified
  {EXIT_USAGE}  bad command line
  {EXIT_UNREACHABLE}  the Triton server could not be reached (or stopped answering during the run)
  {EXIT_SERVER_ERROR}  the model is not ready on the server, or the server returned errors
  {EXIT_OUTPUT_ERROR}  some heatmaps could not be written (--heatmaps: unwritable, full, or a symbolic link
     in the way: heatmaps are never written through links)
  {EXIT_INTERRUPTED}  interrupted (Ctrl+C)

examples:
  deepfake-edge detect photo.jpg
  deepfake-edge detect --json clip.mp4          # verdict, peak frame and per-frame timeline
  deepfake-edge detect --recursive --json photos/ > results.jsonl
  deepfake-edge detect --heatmaps heatmaps/ --protocol http --url 127.0.0.1:8000 photos/
  deepfake-edge detect --url 10.0.0.5:8001 --url 10.0.0.6:8001 photos/   # failover between two servers
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from deepfake_edge.regions import DEFAULT_MODE, MODES
    from deepfake_edge.video import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_FRAMES, DEFAULT_SAMPLE_FPS

    parser = add_verb(
        subparsers, "detect", "classify images and videos as Real or Fake with a running server",
        "Classify image and video files (and the images and videos in folders) with a deepfake-edge model "
        "served by Triton. Prints one line per file, e.g. 'photo.jpg  Fake – 97.3%', in input order; a video "
        "is sampled at --sample-fps and gets one verdict, its peak frame and a per-frame timeline (--json). "
        "Under each verdict, what the file itself says about its origin, read beside the model and never part "
        "of its score: its Content Credentials (C2PA: the tool that made it, who signed it, whether the "
        "signature is valid, AI-generated) and EXIF/XMP metadata (docs/provenance.md). "
        "Inputs that are not usable images or videos are reported with the reason and do not stop the run.",
        func=run_detect, epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image or video files, or folders")
    add_triton_address(parser, repeatable=True)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"served model name (default {DEFAULT_MODEL})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file (JSON Lines)")
    parser.add_argument("--heatmaps", type=Path, metavar="DIR",
                        help="write heatmap overlays as PNG files to DIR (created if missing); for a video, the "
                             "overlay on its peak frame")
    parser.add_argument("-r", "--recursive", action="store_true", help="also classify files in subfolders")
    parser.add_argument("--concurrency", type=_positive_int, default=4, help="requests in flight (default 4)")
    parser.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                        help=f"whole: every face, native-resolution tiles over the whole frame and the global view, "
                             f"one request per image; fast: the global view alone, for throughput "
                             f"(default {DEFAULT_MODE})")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="images per request, capped by the model's max_batch_size "
                             "(default 8 in fast mode, 1 in whole mode)")
    parser.add_argument("--timeout", type=_positive_float, default=30.0,
                        help="seconds allowed per request (default 30)")
    parser.add_argument("--shared-memory", action="store_true",
                        help="pass images through system shared memory (server on this machine only)")
    parser.add_argument("--no-copy-move", dest="copy_move", action="store_false",
                        help="whole mode: leave out the copy-move check (SIFT matched with itself, ~0.1 s a photo) "
                             "that runs when the served card is calibrated for it, as the demo B0's is")
    parser.add_argument("--no-provenance", dest="provenance", action="store_false",
                        help="do not read the files' Content Credentials (C2PA) and EXIF/XMP metadata "
                             "(\"provenance\": null in --json)")
    parser.add_argument("--sample-fps", type=_positive_float, default=DEFAULT_SAMPLE_FPS,
                        help=f"video frames analysed per second of footage (default {DEFAULT_SAMPLE_FPS:g})")
    parser.add_argument("--max-frames", type=_positive_int, default=DEFAULT_MAX_FRAMES,
                        help=f"frames analysed per video at most; a longer video is sampled more sparsely "
                             f"(default {DEFAULT_MAX_FRAMES})")
    parser.add_argument("--max-video-seconds", type=_positive_float, default=DEFAULT_MAX_DURATION_S,
                        help=f"longer videos are refused (default {DEFAULT_MAX_DURATION_S:g})")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def run_detect(args: argparse.Namespace) -> int:
    log_to_terminal()
    try:
        return _detect(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _detect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from deepfake_edge.client import DeepfakeClient, DeepfakeClientError, ServerUnreachableError
    from deepfake_edge.client.heatmap_files import HeatmapDirectory, HeatmapWriteError
    from deepfake_edge.client.sources import iter_media_paths, subfolders_skipped
    from deepfake_edge.server.admin_key import AdminKeyError

    paths = list(iter_media_paths(args.paths, recursive=args.recursive))
    skipped = [] if args.recursive else subfolders_skipped(args.paths)
    if paths and skipped:
        names = ", ".join(str(folder) for folder in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        print(f"note: {len(skipped)} subfolder(s) not searched ({names}); use --recursive to include them",
              file=sys.stderr)
    if not paths:
        raise CommandError(f"no image or video files found in {', '.join(args.paths)}"
                           + ("" if args.recursive else " (use --recursive for subfolders)"), EXIT_BAD_INPUT)
    try:
        heatmap_dir = HeatmapDirectory(args.heatmaps) if args.heatmaps else None
        client = DeepfakeClient(urls=args.url, protocol=args.protocol, model=args.model, timeout_s=args.timeout,
                                shared_memory=args.shared_memory, provenance=args.provenance)
    except (HeatmapWriteError, AdminKeyError) as error:
        raise CommandError(str(error), EXIT_USAGE) from error
    with client, heatmap_dir or nullcontext():
        try:
            client.model_info()
        except ServerUnreachableError as error:
            raise CommandError(f"{error}\n(is the server running? start it with 'deepfake-edge serve')",
                               EXIT_UNREACHABLE) from error
        except DeepfakeClientError as error:
            raise CommandError(str(error), EXIT_SERVER_ERROR) from error
        heatmaps = _HeatmapWriter(heatmap_dir) if heatmap_dir else None
        failures: Counter[str] = Counter()
        labels: Counter[str] = Counter()
        with tqdm(total=len(paths), unit="file", file=sys.stderr, disable=None if len(paths) > 1 else True) as bar:
            for item, result in _results(client, paths, args, heatmap=heatmaps is not None):
                heatmap_file = None
                if result.ok:
                    labels[result.label] += 1
                    if heatmaps is not None:
                        heatmap_file = heatmaps.write(item.relative, result.source, _overlay_maker(result))
                        failures["heatmap not written"] += heatmap_file is None
                else:
                    failures[_failure_class(result.error, ServerUnreachableError)] += 1
                line = json.dumps(result_record(result, heatmap_file)) if args.json else _line(result, heatmap_file)
                bar.write(line, file=sys.stdout)
                bar.update()
    if len(paths) > 1:
        summary = ", ".join(f"{n} {label}" for label, n in sorted(labels.items())) or "none"
        problems = ", ".join(f"{n} {kind}" for kind, n in failures.items())
        print(f"{sum(labels.values())} of {len(paths)} classified ({summary})"
              + (f"; not classified: {problems}" if problems else ""), file=sys.stderr)
    if failures["server unreachable"]:
        return EXIT_UNREACHABLE
    if failures["server error"]:
        return EXIT_SERVER_ERROR
    if failures["bad input"]:
        return EXIT_BAD_INPUT
    return EXIT_OUTPUT_ERROR if failures["heatmap not written"] else EXIT_OK


def _results(client: Any, paths: list, args: argparse.Namespace, heatmap: bool) -> Iterator[tuple[Any, Any]]:
    """(path item, Detection | VideoDetection | Failure) per path, in input order: consecutive images go to the
    server in batches, each video on its own; a name that disagrees with the content adds a note."""
    from deepfake_edge.video import name_note, sniff_kind

    def kind(item: Any) -> str:
        try:
            return sniff_kind(item.path)
        except OSError:
            return "image"  # missing or unreadable: the image path reports it like any other bad input

    kinds = [(item, kind(item)) for item in paths]
    for is_video, run in itertools.groupby(kinds, key=lambda pair: pair[1] == "video"):
        items = [item for item, _ in run]
        if is_video:
            results: Iterator[Any] = (_detect_video(client, item, args, heatmap) for item in items)
        else:
            results = client.iter_detect((str(item.path) for item in items), concurrency=args.concurrency,
                                         heatmap=heatmap, batch_size=args.batch_size, mode=args.mode,
                                         copy_move=args.copy_move)
        for item, result in zip(items, results):
            note = name_note(item.path, "video" if is_video else "image") if result.ok else None
            yield item, dataclasses.replace(result, notes=(*result.notes, note)) if note else result


def _detect_video(client: Any, item: Any, args: argparse.Namespace, heatmap: bool) -> Any:
    from deepfake_edge.client import DeepfakeClientError, Failure
    from deepfake_edge.client.video import detect_video
    from deepfake_edge.preprocessing import BadImageError
    from deepfake_edge.video import VideoLimits

    limits = VideoLimits(sample_fps=args.sample_fps, max_frames=args.max_frames,
                         max_duration_s=args.max_video_seconds)
    try:
        return detect_video(client, str(item.path), limits, heatmap=heatmap, mode=args.mode)
    except (BadImageError, DeepfakeClientError) as error:
        return Failure(str(item.path), error)


def _overlay_maker(result: Any) -> Callable[[], Any]:
    """How to draw ``result``'s heatmap overlay: a video's on its peak frame, an image's on the image."""
    if result.kind == "video":
        return result.peak_overlay
    from deepfake_edge.heatmap import overlay_heatmap

    return lambda: overlay_heatmap(result.source, result.heatmap, result.heatmap_box)


def _failure_class(error: Exception, unreachable: type) -> str:
    from deepfake_edge.preprocessing import BadImageError

    if isinstance(error, BadImageError):
        return "bad input"
    return "server unreachable" if isinstance(error, unreachable) else "server error"


def _line(result: Any, heatmap_file: Optional[Path]) -> str:
    from deepfake_edge.client.results import format_confidence, format_verdict

    if not result.ok:
        return f"{result.source}  error: {result.reason}"
    line = f"{result.source}  {format_verdict(result.label, result.confidence)}"
    if result.kind == "video":
        line += (f"  [video: {len(result.frames)} frames, peak {result.peak_time_s:.1f} s at "
                 f"{format_confidence(result.peak.fake_probability)}, {len(result.tracks)} face track(s), "
                 f"rule {result.rule}]")
    elif result.regions:
        decider = max(result.regions, key=lambda region: region.fake_probability)
        faces = sum(region.kind == "face" for region in result.regions)
        line += (f"  [{len(result.regions)} regions, {faces} face(s); highest: {decider.kind} "
                 f"{','.join(map(str, decider.box))} at {format_confidence(decider.fake_probability)}]")
    line += "".join(f"  ({note})" for note in result.notes)
    line = f"{line}  (heatmap: {heatmap_file})" if heatmap_file else line
    return line + "".join(f"\n  {text}" for text in _provenance_lines(result.provenance))


def _provenance_lines(provenance: Any) -> list[str]:
    """The lines under a verdict: its Content Credentials, and its metadata when it has any."""
    if provenance is None:
        return []
    lines = [f"Content Credentials: {provenance.credentials_text()}"]
    metadata = provenance.metadata_summary()
    return lines + [f"metadata: {metadata}"] if metadata else lines


def result_record(result: Any, heatmap_file: Optional[Path]) -> dict[str, Any]:
    """The JSON Lines schema: every key always present, null where it does not apply. A video's record is
    ``video_record``'s (timeline, peak, tracks) with the same path/heatmap/error keys."""
    from deepfake_edge.client.results import provenance_record, region_record
    from deepfake_edge.client.video import video_record

    ok = result.ok
    if ok and result.kind == "video":
        return {"path": str(result.source), **video_record(result), "heatmap": str(heatmap_file) if heatmap_file else None,
                "error": None, "error_type": None}
    return {
        "path": str(result.source),
        "kind": "image" if ok else None,
        "label": result.label if ok else None,
        "confidence": round(result.confidence, 6) if ok else None,
        "fake_probability": round(result.fake_probability, 6) if ok else None,
        "logit": round(result.logit, 6) if ok else None,
        "model": result.model if ok else None,
        "model_version": result.model_version if ok else None,
        "mode": result.mode if ok else None,
        "regions": [region_record(region) for region in result.regions] if ok else None,
        "notes": list(result.notes) if ok else None,
        "heatmap": str(heatmap_file) if heatmap_file else None,
        "provenance": provenance_record(result.provenance) if ok else None,
        "error": None if ok else result.reason,
        "error_type": None if ok else result.kind,
    }


class _HeatmapWriter:
    """Writes ``DIR/<path relative to its argument, suffix replaced>.heatmap.png``, never overwriting a file
    of this run (``a.jpg`` and ``a.png`` give ``a.heatmap.png`` and ``a.heatmap-1.png``)."""

    def __init__(self, directory: Any):
        self.directory = directory
        self._used: set[Path] = set()

    def write(self, relative: Path, source: Any, make_overlay: Callable[[], Any]) -> Optional[Path]:
        """The PNG written, or None (with a warning) if it could not be (full disk, file gone ...)."""
        from deepfake_edge.client.heatmap_files import HeatmapWriteError
        from deepfake_edge.preprocessing import BadImageError

        target = relative.with_name(f"{relative.stem}.heatmap.png")
        stem, counter = target.with_suffix(""), 1
        while target in self._used:
            target, counter = stem.with_name(f"{stem.name}-{counter}.png"), counter + 1
        self._used.add(target)
        try:
            overlay = make_overlay()
            with self.directory.open_for_writing(target) as handle:
                overlay.save(handle, format="PNG")
        except (BadImageError, HeatmapWriteError, OSError) as error:
            log.warning("heatmap for %s not written: %s", source, error)
            return None
        return self.directory.path / target
