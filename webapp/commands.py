"""``deepfake-edge web``: the web page alone, in front of a Triton server that is already running."""

from __future__ import annotations

import argparse
import signal

from deepfake_edge.cli import CommandError, add_triton_address, add_verb
from deepfake_edge.serving_contract import default_url
from deepfake_edge.webapp.limits import (DEFAULT_MAX_VIDEO_BYTES, DEFAULT_MAX_VIDEO_PIXELS, DEFAULT_MAX_VIDEO_SECONDS,
                                         DEFAULT_VIDEO_TIMEOUT_S)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers, "web", "run the web page against a running Triton server",
        "Serve the upload page and its JSON API (POST /api/detect, GET /api/openapi.json, "
        "GET /api/health). Needs a Triton server with the deepfake models, e.g. from "
        "'deepfake-edge serve' (which starts both). Uploads stay in memory and are never stored.",
        func=run_web,
    )
    add_triton_address(parser, "--triton-url", "Triton address host:port")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: only this machine)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port of the web page (default 8080)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=10.0, help="largest accepted upload in MB (default 10)"
    )
    parser.add_argument("--max-pixels", type=int,
                        help="largest declared image size in pixels, checked before decoding "
                        "(default: preprocessing's DEFAULT_MAX_PIXELS, 40 M)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds allowed per call to Triton (default 10)")
    parser.add_argument("--max-decode-mb", type=float, default=256.0,
                        help="memory that uploads being decoded and scored may take at once, in MB; each reserves "
                        "its peak from its header, larger ones are refused (default 256)")
    parser.add_argument("--max-video-mb", type=float, default=DEFAULT_MAX_VIDEO_BYTES / 2**20,
                        help=f"largest accepted video upload in MB (default {DEFAULT_MAX_VIDEO_BYTES / 2**20:g}); "
                        "--max-upload-mb bounds images")
    parser.add_argument("--max-video-seconds", type=float, default=DEFAULT_MAX_VIDEO_SECONDS,
                        help=f"longest accepted video, by its declared duration (default {DEFAULT_MAX_VIDEO_SECONDS:g})")
    parser.add_argument("--max-video-pixels", type=int, default=DEFAULT_MAX_VIDEO_PIXELS,
                        help=f"largest accepted video frame in pixels (default {DEFAULT_MAX_VIDEO_PIXELS:,}: 1080p; "
                        "each video reserves its decode peak from this, so 4K needs a larger --max-decode-mb)")
    parser.add_argument("--video-timeout", type=float, default=DEFAULT_VIDEO_TIMEOUT_S,
                        help=f"seconds allowed to analyse one whole video (default {DEFAULT_VIDEO_TIMEOUT_S:g})")
    parser.add_argument("--no-provenance", dest="provenance", action="store_false",
                        help="do not read uploads' Content Credentials (C2PA) and EXIF/XMP metadata "
                        "(\"provenance\": null in answers; the page shows no Content Credentials panel)")


def run_web(args: argparse.Namespace) -> int:
    from deepfake_edge.preprocessing import DEFAULT_MAX_PIXELS
    from deepfake_edge.webapp.app import create_app, make_web_server

    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    limits = (args.max_upload_mb, max_pixels, args.timeout, args.max_decode_mb, args.max_video_mb,
              args.max_video_seconds, args.max_video_pixels, args.video_timeout)
    if min(limits) <= 0:
        raise CommandError("--max-upload-mb, --max-pixels, --timeout, --max-decode-mb and the --max-video-* and "
                           "--video-timeout limits must be positive")
    triton_url = args.triton_url or default_url(args.protocol)
    app = create_app(triton_url, protocol=args.protocol, max_upload_bytes=int(args.max_upload_mb * 2**20),
                     max_pixels=max_pixels, timeout_s=args.timeout, max_decode_bytes=int(args.max_decode_mb * 2**20),
                     max_video_bytes=int(args.max_video_mb * 2**20), max_video_seconds=args.max_video_seconds,
                     max_video_pixels=args.max_video_pixels, video_timeout_s=args.video_timeout,
                     provenance=args.provenance)
    try:
        server = make_web_server(app, host=args.host, port=args.port)
    except OSError as error:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from error
    print(f"Web page: http://{args.host}:{server.server_port}  (Triton {args.protocol} at {triton_url}; Ctrl+C stops)")
    # SIGTERM stops as cleanly as Ctrl+C; SIGINT is set too since a shell leaves it ignored in background jobs.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
