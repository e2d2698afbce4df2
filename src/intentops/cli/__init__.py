"""`intentops` command line: one subcommand per pipeline stage, plus run/compile/submit for the whole DAG.

Each command group lives in its own module exposing `register(subparsers)`; handlers import heavy libraries
(torch, mlflow, kfp) lazily so `intentops --help` stays instant. A handler returns the process exit status.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from intentops import __version__
from intentops.catalog import CatalogError
from intentops.config import ConfigError
from intentops.grammar import GrammarError

COMMAND_MODULES = ("data", "train", "evaluate", "registry", "pipeline", "serve")
USER_ERRORS = (CatalogError, ConfigError, GrammarError, FileNotFoundError, ValueError)
# Failures to write (disk or quota full, read-only file system, no permission): one line, not a traceback.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intentops",
        description="Train, check and ship an LLM intent detector (iTAG -> SFT -> GRPO+RCS -> gate -> MLflow -> vLLM).",
    )
    parser.add_argument("--version", action="version", version=f"intentops {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"intentops.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"intentops.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` and repeated `--set section__field=VALUE` overrides, shared by every command."""
    parser.add_argument("--config", help="RunConfig YAML (default: configs/tiny-cpu.yaml).")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="Override one knob, e.g. --set sft__epochs=1 (value parsed as YAML).",
    )


def config_from_args(args: argparse.Namespace):  # -> RunConfig
    import yaml

    from intentops.config import load_config

    overrides = {}
    for item in getattr(args, "overrides", []) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KNOB=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return load_config(getattr(args, "config", None), overrides)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO (a line per smoke-test probe or prediction); its warnings still show.
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.handler(args) or 0)
    except USER_ERRORS as exc:
        if args.verbose:
            raise
        print(f"intentops {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS or args.verbose:
            raise
        print(
            f"intentops {args.command}: error: cannot write {exc.filename}: {exc.strerror}; outputs are written "
            "aside and renamed into place, so nothing half-written was published",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
