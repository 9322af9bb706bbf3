"""``deepfake-edge soak``: load and soak the real service with valid and malformed requests mixed."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from deepfake_edge.cli import CommandError, add_verb


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_verb(
        subparsers, "soak", "soak the real service (Triton + web app) with valid and malformed requests mixed",
        "Start 'deepfake-edge serve' on free 127.0.0.1 ports, send REQUESTS requests from CONCURRENCY "
        "threads (90% real photographs over gRPC, HTTP and the web API; 10% malformed: truncated, empty, non-image, "
        "decompression bomb and oversized uploads, wrong dtype/shape/batch straight to Triton), sample the RSS of "
        "every process, then stop everything. Writes soak.json, soak.md, soak.png to --out. Exit code 0 when every "
        "target is met (no crash, no 5xx, no unexpected outcome, RSS growth < 10%, nothing left behind), 1 if not.",
        func=run,
    )
    parser.add_argument("--requests", type=_positive, default=10_000, help="requests to send (default 10000)")
    parser.add_argument("--concurrency", type=_positive, default=16, help="requests in flight (default 16)")
    parser.add_argument("--out", type=Path, default=Path("runs/soak"), help="output directory (default runs/soak)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository/embedded"),
                        help="embedded Triton model repository (default model_repository/embedded)")
    parser.add_argument("--warmup", type=int, default=200, help="valid requests before the RSS baseline (default 200)")
    parser.add_argument("--max-seconds", type=float, default=1800.0,
                        help="stop sending after this long even if requests remain (default 1800)")
    parser.add_argument("--malformed-fraction", type=float, default=0.10, help="share of malformed requests (0.10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request order (default 0)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from deepfake_edge.benchmarks.soak import SoakSettings, run_soak
    from deepfake_edge.benchmarks.soak_report import write_report
    from deepfake_edge.benchmarks.soak_service import ServiceError

    if not 0.0 <= args.malformed_fraction < 1.0:
        raise CommandError("--malformed-fraction must be in [0, 1)")
    settings = SoakSettings(repository=args.repository, out=args.out, requests=args.requests,
                            concurrency=args.concurrency, malformed_fraction=args.malformed_fraction,
                            warmup_requests=args.warmup, max_seconds=args.max_seconds, seed=args.seed)
    try:
        results = run_soak(settings)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from error
    except ServiceError as error:
        raise CommandError(f"the service did not start: {error}", exit_code=1) from error
    except KeyboardInterrupt:
        print("interrupted; the service was stopped and nothing was written", file=sys.stderr)
        return 130
    command = "deepfake-edge " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["soak"] else "deepfake-edge soak"
    paths = write_report(results, args.out, command)
    latency = results["latency_ms"]["all_valid"]
    print(f"served {results['served']:,} of {results['requests']['valid_sent']:,} valid requests; "
          f"{sum(results['expected_rejections'].values()):,} malformed rejected as expected; "
          f"unexpected {sum(results['unexpected'].values())}; crashes {len(results['crash_events'])}; "
          f"web 5xx {results['web_5xx']}; p99 {latency.get('p99')} ms")
    for name, met in results["targets"].items():
        print(f"  {'ok ' if met else 'FAIL'} {name.replace('_', ' ')}")
    print("wrote " + ", ".join(str(path) for path in paths))
    return 0 if results["passed"] else 1
