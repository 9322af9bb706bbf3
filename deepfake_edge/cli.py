"""``deepfake-edge``: one command-line tool, one subcommand per verb.

Each area registers its own verbs through ``register(subparsers)`` in its ``commands`` module, so
this file only wires them together. Heavy imports (torch, onnxruntime) happen inside the verbs,
which keeps ``deepfake-edge --help`` instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from deepfake_edge import __version__

_COMMAND_MODULES = (
    "deepfake_edge.training.commands",  # data, train, evaluate
    "deepfake_edge.export.commands",  # export
    "deepfake_edge.server.commands",  # serve, perf
    "deepfake_edge.client.commands",  # detect
    "deepfake_edge.webapp.commands",  # web
    "deepfake_edge.benchmarks.commands",  # bench
    "deepfake_edge.benchmarks.soak_commands",  # soak
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfake-edge",
        description="Train, export, serve and query an EfficientNet-B0 deepfake image detector.",
        epilog="Run 'deepfake-edge VERB --help' for the options of each verb.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
