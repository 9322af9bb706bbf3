"""``deepfake-edge serve`` (Triton + web page) and ``deepfake-edge perf`` (Triton's perf_analyzer)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

from deepfake_edge.cli import CommandError, add_triton_address, add_verb
from deepfake_edge.server.http_gateway import DEFAULT_MAX_BODY_BYTES
from deepfake_edge.serving_contract import (
    DEFAULT_MODEL,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    ModelConfigError,
    default_url,
)

DEFAULT_REPOSITORY = Path("model_repository") / "embedded"


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = add_verb(
        subparsers, "serve", "run the real Triton Inference Server on the model repository, plus the web page",
        "Start the tritonserver binary from the nvidia-pytriton wheel on a Python-backend model "
        "repository (onnxruntime inside; CUDA when a GPU and onnxruntime-gpu are present), wait until "
        "every model is ready, then serve the web page from this process. Triton is restarted when it "
        "dies (backoff 1-30 s; the web page answers 503 meanwhile). Its admin APIs (shared memory, "
        "model repository, logging, trace, statistics) need the admin key: taken from "
        "DEEPFAKE_EDGE_ADMIN_KEY, else made anew and written to a file only this user can read "
        "(the path is printed). Ctrl+C or SIGTERM stops everything.",
        func=run_serve,
    )
    _add_server_arguments(serve)
    serve.add_argument("--web-port", type=int, default=8080, help="port of the web page (default 8080)")
    serve.add_argument("--web-protocol", choices=("grpc", "http"), default="grpc",
                       help="how the web page talks to Triton (default grpc)")
    serve.add_argument("--no-web", action="store_true", help="serve Triton only")
    serve.add_argument("--http-gateway", choices=("nginx", "none"), default="nginx",
                       help="what answers on --http-port: nginx in front of Triton, bounding request bodies and "
                            "cutting slow clients (Debian's nginx-light; 'make serve' installs it), or Triton "
                            "itself (none) (default nginx)")
    serve.add_argument("--max-http-body-mb", type=float, default=DEFAULT_MAX_BODY_BYTES / 2**20, metavar="MB",
                       help="largest HTTP request body nginx passes to Triton; larger ones get 413 "
                            f"(default {DEFAULT_MAX_BODY_BYTES / 2**20:g}: a batch of 32 images at 224 px is 4.6)")
    serve.add_argument("--max-restarts", type=int, default=5, metavar="N",
                       help="restart a crashed Triton at most N times within 10 minutes, then give up (default 5; "
                            "per replica with --replicas)")
    serve.add_argument("--replicas", type=_at_least_one, default=1, metavar="N",
                       help="run N tritonservers on private loopback ports behind HAProxy (Debian's haproxy; "
                            "'make serve' installs it), which health-checks them and routes around a dead one "
                            "while it restarts; HAProxy then serves --grpc-port and --metrics-port (its own "
                            "metrics) and --http-port behind nginx (docs/replicas.md) (default 1: one Triton, "
                            "no HAProxy)")

    perf = add_verb(
        subparsers, "perf", "measure a served model with Triton's perf_analyzer",
        "Run Triton's own perf_analyzer (from the tritonclient wheel, unmodified) against a served model "
        "with real preprocessed photographs as input, and print throughput and latency percentiles per "
        "concurrency level. Targets --url, or a server it starts itself with --start-server.",
        func=run_perf,
    )
    perf.add_argument("--model", default=DEFAULT_MODEL, help=f"served model (default {DEFAULT_MODEL})")
    add_triton_address(perf, url_help="host:port of a running Triton server")
    perf.add_argument("--start-server", action="store_true",
                      help="start Triton on --model-repository on free loopback ports for this run")
    perf.add_argument("--model-repository", type=Path, default=DEFAULT_REPOSITORY,
                      help=f"repository for --start-server (default {DEFAULT_REPOSITORY})")
    perf.add_argument("--startup-timeout", type=float, default=300.0,
                      help="seconds --start-server waits for ready (default 300)")
    perf.add_argument("--concurrency-range", type=_concurrency_range, default=(1, 8, 2), metavar="START:END:STEP",
                      help="concurrency levels as perf_analyzer takes them (default 1:8:2)")
    perf.add_argument("--batch-size", type=int, default=1, help="images per request (default 1)")
    perf.add_argument("--measurement-interval-ms", type=int, default=2000, help="window length (default 2000)")
    perf.add_argument("--measurement-request-count", type=int, metavar="N",
                      help="measure in windows of at least N requests instead of fixed time (busy machines)")
    perf.add_argument("--max-trials", type=int, default=6, help="windows per level before giving up (default 6)")
    perf.add_argument("--stability-percentage", type=float, default=20.0,
                      help="how far three windows may disagree (default 20)")
    perf.add_argument("--shared-memory", choices=("none", "system"), default="none",
                      help="send inputs through system shared memory (server on this machine only)")
    perf.add_argument("--json", type=Path, help="also write the figures to this JSON file")


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_REPOSITORY,
                        help=f"Triton model repository (default {DEFAULT_REPOSITORY}; "
                             "'deepfake-edge export' writes it)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address every endpoint binds (default 127.0.0.1: this machine only)")
    parser.add_argument("--http-port", type=int, default=HTTP_PORT, help=f"Triton HTTP/REST port (default {HTTP_PORT})")
    parser.add_argument("--grpc-port", type=int, default=GRPC_PORT, help=f"Triton gRPC port (default {GRPC_PORT})")
    parser.add_argument("--metrics-port", type=int, default=METRICS_PORT,
                        help=f"Prometheus metrics port (default {METRICS_PORT})")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for ready (default 120)")
    parser.add_argument("--log-file", type=Path, help="keep Triton's log here (default: a temporary file)")
    parser.add_argument("--triton-arg", action="append", default=[], metavar="FLAG",
                        help="extra tritonserver flag, repeatable (e.g. --triton-arg=--log-verbose=1)")


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _concurrency_range(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START[:END[:STEP]] integers, got {text!r}") from None
    if not 1 <= len(values) <= 3:
        raise argparse.ArgumentTypeError(f"expected START[:END[:STEP]], got {text!r}")
    start, end, step = values[0], values[1] if len(values) > 1 else values[0], values[2] if len(values) > 2 else 1
    if not 1 <= start <= end or step < 1:
        raise argparse.ArgumentTypeError(f"need 1 <= START <= END and STEP >= 1, got {text!r}")
    return start, end, step


def _stop_on_signals() -> None:
    """Make SIGINT (Ctrl+C) and SIGTERM raise KeyboardInterrupt once, so context managers stop everything.

    Further signals are ignored: a second Ctrl+C must not cut the shutdown short and orphan the server.
    SIGINT is set explicitly because a shell that starts us in the background leaves it ignored.
    """

    def request_stop(signum: int, frame: object) -> None:
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, signal.SIG_IGN)
        raise KeyboardInterrupt

    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, request_stop)


def run_serve(args: argparse.Namespace) -> int:
    from deepfake_edge.server.service import TritonService
    from deepfake_edge.server.supervisor import RestartPolicy, TritonSupervisor
    from deepfake_edge.server.triton import TritonServerError, check_port_free, reserve_ports

    if not args.model_repository.is_dir():
        raise CommandError(f"model repository {args.model_repository} does not exist; build it with "
                           f"'deepfake-edge export --if-missing' (what 'make serve' runs first)")
    if not args.no_web:
        try:
            importlib.import_module("deepfake_edge.webapp.app")  # fails here, before any server starts
        except ImportError as error:
            raise CommandError(f"the web page cannot be loaded ({error}); run with --no-web to serve Triton only"
                               ) from error
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    _stop_on_signals()
    try:
        with ExitStack() as stack:
            if not args.no_web:
                check_port_free(args.host, args.web_port, "web")
                reserve_ports(args.web_port)  # no private port of the servers below may take it
            admin_key, key_note = _admin_key_for_serve(stack)
            if args.replicas > 1:
                return _serve_replicas(args, stack, admin_key, key_note)

            def make_server() -> TritonService:
                return TritonService(
                    args.model_repository, http_gateway=args.http_gateway == "nginx",
                    max_body_bytes=int(args.max_http_body_mb * 2**20), host=args.host, http_port=args.http_port,
                    grpc_port=args.grpc_port, metrics_port=args.metrics_port, startup_timeout_s=args.startup_timeout,
                    log_file=args.log_file, extra_args=args.triton_arg, admin_key=admin_key)

            supervisor = stack.enter_context(TritonSupervisor(make_server, RestartPolicy(args.max_restarts)))
            server = supervisor.server
            assert server is not None
            print(f"Triton Inference Server ready (pid {server.pid}, repository {server.model_repository})")
            print(f"  models:  {', '.join(sorted({m['name'] for m in server.repository_index()}))}")
            gateway = " through nginx" if args.http_gateway == "nginx" else ""
            print(f"  HTTP:    http://{server.http_url}{gateway}   (health: /v2/health/ready)")
            print(f"  gRPC:    {server.grpc_url}")
            print(f"  metrics: {server.metrics_url}")
            print(f"  log:     {server.log_file}")
            print(f"  admin:   {key_note}")
            _start_web(args, stack, server.grpc_url, server.http_url, lambda: supervisor.outage)
            print("Ctrl+C stops everything.", flush=True)
            supervisor.watch()
            return 0
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0
    except TritonServerError as error:  # also nginx's GatewayError and an exhausted restart budget
        raise CommandError(str(error), exit_code=1) from error


def _start_web(args: argparse.Namespace, stack: ExitStack, grpc_url: str, http_url: str, outage) -> None:
    """The web page on a thread of this process, talking to Triton (or the balancer) at the given address;
    stopped by ``stack``."""
    if args.no_web:
        return
    from deepfake_edge.webapp.app import create_app, make_web_server

    triton_url = grpc_url if args.web_protocol == "grpc" else http_url
    app = create_app(triton_url, protocol=args.web_protocol, triton_outage=outage)
    web = make_web_server(app, args.host, args.web_port)
    stack.callback(web.server_close)
    thread = threading.Thread(target=web.serve_forever, name="web", daemon=True)
    thread.start()
    stack.callback(thread.join, 5.0)
    stack.callback(web.shutdown)
    print(f"  web:     http://{args.host}:{web.server_port}/")


def _serve_replicas(args: argparse.Namespace, stack: ExitStack, admin_key: str, key_note: str) -> int:
    """``serve --replicas N``: N tritonservers behind HAProxy (server/replicas.py), watched until a signal."""
    from deepfake_edge.server.replicas import ReplicaSet
    from deepfake_edge.server.supervisor import RestartPolicy

    replicas = stack.enter_context(ReplicaSet(
        args.model_repository, args.replicas, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, http_gateway=args.http_gateway == "nginx",
        max_body_bytes=int(args.max_http_body_mb * 2**20), startup_timeout_s=args.startup_timeout,
        log_file=args.log_file, extra_args=args.triton_arg, admin_key=admin_key,
        policy=RestartPolicy(args.max_restarts)))
    described = replicas.describe()
    print(f"Triton Inference Server ready: {args.replicas} replicas behind HAProxy "
          f"(pids {', '.join(str(r['pid']) for r in described)}, repository {replicas.model_repository})")
    print(f"  models:  {', '.join(sorted({m['name'] for m in replicas.repository_index()}))}")
    gateway = "nginx, then HAProxy" if args.http_gateway == "nginx" else "HAProxy"
    print(f"  HTTP:    http://{replicas.http_url}   through {gateway}   (health: /v2/health/ready)")
    print(f"  gRPC:    {replicas.grpc_url}   through HAProxy")
    print(f"  metrics: {replicas.metrics_url}   (HAProxy's; each replica's Triton metrics below)")
    for replica in described:
        print(f"  replica {replica['name']}: pid {replica['pid']}, HTTP {replica['http']}, gRPC {replica['grpc']}, "
              f"metrics {replica['metrics']}, log {replica['log']}")
    assert replicas.balancer is not None
    print(f"  HAProxy: pid {replicas.balancer.pid}, config {replicas.balancer.config_path}")
    print(f"  admin:   {key_note}")
    _start_web(args, stack, replicas.grpc_url, replicas.http_url, lambda: replicas.outage)
    print("Ctrl+C stops everything.", flush=True)
    replicas.watch()
    return 0


def _admin_key_for_serve(stack: ExitStack) -> tuple[str, str]:
    """The admin key (from the environment, else a new one written to the key file, removed on exit)
    and a line saying where it comes from; the key itself is never printed."""
    from deepfake_edge.server.admin_key import KEY_ENVIRONMENT_VARIABLE, generate_admin_key, write_key_file

    key = os.environ.get(KEY_ENVIRONMENT_VARIABLE, "").strip()
    if key:
        return key, f"admin APIs need the key in {KEY_ENVIRONMENT_VARIABLE} (header 'admin-key')"
    key = generate_admin_key()
    path = write_key_file(key)

    def remove_if_ours() -> None:
        try:
            if path.read_text() == key:
                path.unlink()
        except OSError:
            pass

    stack.callback(remove_if_ours)
    return key, f"admin APIs need the key in {path} (header 'admin-key'; made for this run)"


def fetch_model_card(url: str, protocol: str, model: str):
    """The ``ModelCard`` a served model carries in its config, read by the serving contract's ``ModelInfo``."""
    from deepfake_edge.serving_contract import config_as_dict, parse_model_config

    if protocol == "grpc":
        import tritonclient.grpc as triton_client

        config = triton_client.InferenceServerClient(url).get_model_config(model, as_json=True)
    else:
        import tritonclient.http as triton_client

        config = triton_client.InferenceServerClient(url).get_model_config(model)
    return parse_model_config(model, config_as_dict(config)).card


def run_perf(args: argparse.Namespace) -> int:
    from tritonclient.utils import InferenceServerException

    from deepfake_edge.benchmarks.workload import build_workload
    from deepfake_edge.server.admin_key import AdminKeyError
    from deepfake_edge.server.perf import PerfAnalyzerError, run_perf_analyzer
    from deepfake_edge.server.triton import TritonServer, TritonServerError, free_port

    _stop_on_signals()
    try:
        with ExitStack() as stack:
            url = args.url or default_url(args.protocol)
            admin_key = None
            if args.start_server:
                server = stack.enter_context(TritonServer(
                    args.model_repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                    startup_timeout_s=args.startup_timeout))
                url = server.grpc_url if args.protocol == "grpc" else server.http_url
                admin_key = server.admin_key
            try:
                card = fetch_model_card(url, args.protocol, args.model)
            except (InferenceServerException, OSError, ModelConfigError) as error:
                raise CommandError(f"cannot read model {args.model!r} from {args.protocol} server {url} ({error}); "
                                   f"start one with 'deepfake-edge serve' or pass --start-server") from error
            images = build_workload(card).tensors
            print(f"perf_analyzer: {args.model} over {args.protocol} at {url}, {len(images)} real images "
                  f"{card.input_size}x{card.input_size} UINT8, batch {args.batch_size}, "
                  f"concurrency {':'.join(map(str, args.concurrency_range))}", flush=True)
            rows = run_perf_analyzer(
                url, images, model=args.model, protocol=args.protocol, concurrency_range=args.concurrency_range,
                batch_size=args.batch_size, measurement_interval_ms=args.measurement_interval_ms,
                measurement_request_count=args.measurement_request_count,
                max_trials=args.max_trials, stability_percentage=args.stability_percentage,
                shared_memory=args.shared_memory, admin_key=admin_key,
            )
    except (AdminKeyError, PerfAnalyzerError, TritonServerError) as error:
        raise CommandError(str(error), exit_code=1) from error
    except KeyboardInterrupt:
        return 130
    print(f"{'concurrency':>11} {'images/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'queue ms':>8} {'infer ms':>8}")
    for row in rows:
        print(f"{row['concurrency']:>11} {row['throughput_per_s']:>9.1f} {row['p50_ms']:>8.2f} {row['p90_ms']:>8.2f} "
              f"{row['p95_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['server_queue_ms']:>8.2f} "
              f"{row['server_compute_infer_ms']:>8.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")
    return 0
