"""``deepfake-edge``: one command-line tool, one subcommand per verb.

Each area registers its own verbs through ``register(subparsers)`` in its ``commands`` module, so
this file only wires them together. Heavy imports (torch, onnxruntime) happen inside the verbs,
which keeps ``deepfake-edge --help`` instant.

A verb reports a problem it cannot work around by raising :class:`CommandError` (exit code 2 unless it
says otherwise); :func:`main` prints it as ``deepfake-edge VERB: error: ...`` on stderr, so every verb
reports usage and input errors the same way and no library function prints to the terminal.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from deepfake_edge import __version__


class CommandError(Exception):
    """A verb's user-facing failure: ``message`` is printed as-is, ``exit_code`` ends the process."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def add_verb(subparsers: argparse._SubParsersAction, name: str, help: str, description: str,
             func: Callable[[argparse.Namespace], int] | None = None, **options: Any) -> argparse.ArgumentParser:
    """Register verb ``name``: ``help`` is its line in the verb list, ``description`` opens its ``--help``,
    ``func(args)`` runs it (``options``, e.g. ``epilog`` or ``formatter_class``, go to ``add_parser``)."""
    parser = subparsers.add_parser(name, help=help, description=description, **options)
    if func is not None:
        parser.set_defaults(func=func)
    return parser


def add_triton_address(parser: argparse.ArgumentParser, url_option: str = "--url",
                       url_help: str = "Triton host:port", repeatable: bool = False) -> None:
    """The options naming the Triton server a verb talks to: ``url_option`` and ``--protocol``. With
    ``repeatable``, ``url_option`` may be given several times (a list, in failover order; None if never)."""
    from deepfake_edge.serving_contract import PROTOCOLS, default_url

    if repeatable:
        url_help += ("; repeat it to name several servers in failover order (--url a --url b): a request that "
                     "cannot reach one is retried on the next")
    parser.add_argument(url_option, action="append" if repeatable else "store",
                        help=f"{url_help} (default {default_url('grpc')} for grpc, {default_url('http')} for http)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="grpc", help="how to talk to Triton (default grpc)")


class _TerminalFormatter(logging.Formatter):
    """Plain lines: the message alone, prefixed ``warning:``/``error:`` from WARNING up."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def log_to_terminal(level: int = logging.INFO) -> None:
    """Let a verb show what the project's modules log (``level`` and up) as plain lines on stderr, unless
    logging is set up already (a caller, a test runner): library modules log, only verbs write to the terminal."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_TerminalFormatter("%(message)s"))
    root.addHandler(handler)
    project = logging.getLogger("deepfake_edge")
    if project.level == logging.NOTSET:
        project.setLevel(level)


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
    try:
        return int(args.func(args) or 0)
    except CommandError as error:
        print(f"deepfake-edge {args.verb}: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    # Run as ``python -m deepfake_edge.cli``, this file is ``__main__``; the verbs raise the CommandError of
    # the importable ``deepfake_edge.cli``, so that module's main() must be the one that catches it.
    from deepfake_edge import cli

    sys.exit(cli.main())
