"""`intentops register | promote | rollback | champion`: the MLflow model registry from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from intentops.cli import add_config_argument, config_from_args

NO_CHAMPION_EXIT = 1
UNREACHABLE_EXIT = 4  # the MLflow server did not answer within registry.request_budget_s
CHAMPION_MOVED_EXIT = 5  # @champion was not, or stopped being, the champion this command expected


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register",
        help="Register a candidate model in MLflow (challenger; champion only if the gate passed).",
        description=(
            "Log the model folder as an MLflow pyfunc with its catalog, prompt config, evaluation and gate decision, "
            "register it as a new version tagged with catalog/dataset hashes, pipeline run id and git commit, set "
            "@challenger, and set @champion only when the gate decision says passed. Re-running the same pipeline run id "
            "returns the version it already registered."
        ),
    )
    parser.add_argument("--model", required=True, help="Model folder (Hugging Face files + IntentOps model card).")
    parser.add_argument(
        "--eval", dest="eval_dir", help="Evaluation folder (evaluate output; its metrics are logged with the model)."
    )
    parser.add_argument(
        "--gate",
        dest="gate_path",
        help="Gate decision (gate output folder or its JSON file); without it the version is a challenger only.",
    )
    parser.add_argument(
        "--dataset", required=True, help="Dataset folder or its manifest file (records the dataset hash)."
    )
    parser.add_argument("--pipeline-run-id", required=True, help="Pipeline run id (makes registration idempotent).")
    _common(parser)
    parser.set_defaults(handler=_register)

    parser = subparsers.add_parser(
        "promote",
        help="Make a registered version the champion by hand.",
        description="Point @champion at VERSION, bypassing the gate; the replaced champion is recorded for rollback. "
        f"Exit status {CHAMPION_MOVED_EXIT} when @champion is not the expected one or another promotion moves it "
        "during the call (nothing is promoted then).",
    )
    parser.add_argument("version", type=_version_number, help="Registered model version number.")
    parser.add_argument("--reason", default="manual promotion", help="Why (kept as a version tag).")
    parser.add_argument(
        "--expect-champion",
        type=_expected_champion,
        help="Promote only if @champion is this version ('none': no champion yet); default: the champion read "
        "when the command starts.",
    )
    _common(parser)
    parser.set_defaults(handler=_promote)

    parser = subparsers.add_parser(
        "rollback",
        help="Move @champion back to the previous champion.",
        description="Point @champion at the version the current champion replaced (its intentops.previous_champion).",
    )
    _common(parser)
    parser.set_defaults(handler=_rollback)

    parser = subparsers.add_parser(
        "champion",
        help="Show the current champion, its tags and the previous champion.",
        description="Print the version behind @champion; exit status 1 when there is no champion yet, 4 when the "
        "MLflow server cannot be reached within registry.request_budget_s.",
    )
    parser.add_argument("--json", action="store_true", help="Print the champion as JSON.")
    _common(parser)
    parser.set_defaults(handler=_champion)


def _version_number(text: str) -> str:
    """A registered version is a whole number from 1 up (argparse names the argument when this raises)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (1, 2, ...)")
    return str(int(text))


def _expected_champion(text: str) -> str:
    """A version number, or 'none' for "there is no champion yet" (returned as "")."""
    return "" if text.strip().lower() == "none" else _version_number(text)


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--tracking-uri", help="MLflow tracking server (overrides registry.tracking_uri).")
    parser.add_argument("--model-name", help="Registered model name (overrides registry.model_name).")


def _config(args: argparse.Namespace) -> Any:
    cfg = config_from_args(args)
    if args.tracking_uri:
        cfg.registry.tracking_uri = args.tracking_uri
    if args.model_name:
        cfg.registry.model_name = args.model_name
    return cfg


def _print_version(version: Any, title: str) -> None:
    print(f"{title}: {version.name} version {version.version} ({version.model_uri})")
    print(f"  aliases: {', '.join(version.aliases) or '-'}")
    print(f"  previous champion: {version.previous_champion or '-'}")
    print(f"  run: {version.run_id or '-'}  created: {version.created_at}")
    for key in sorted(version.tags):
        print(f"  {key} = {version.tags[key]}")


def _champion_moved(exc: Exception, command: str) -> int:
    print(f"intentops {command}: error: {exc}", file=sys.stderr)
    return CHAMPION_MOVED_EXIT


def _register(args: argparse.Namespace) -> int:
    from intentops.registry import ChampionMovedError, register_model

    try:
        version = register_model(
            args.model,
            _config(args),
            pipeline_run_id=args.pipeline_run_id,
            eval_dir=args.eval_dir,
            gate_path=args.gate_path,
            dataset_manifest=args.dataset,
        )
    except ChampionMovedError as exc:
        return _champion_moved(exc, "register")
    _print_version(version, "registered")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from intentops.registry import ChampionMovedError, promote

    try:
        version = promote(_config(args), args.version, reason=args.reason, expect_champion=args.expect_champion)
    except ChampionMovedError as exc:
        return _champion_moved(exc, "promote")
    _print_version(version, "champion")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from intentops.registry import ChampionMovedError, rollback

    try:
        version = rollback(_config(args))
    except ChampionMovedError as exc:
        return _champion_moved(exc, "rollback")
    _print_version(version, "champion")
    return 0


def _champion(args: argparse.Namespace) -> int:
    from intentops.registry import champion_info
    from intentops.tracking import is_unreachable, resolve_tracking_uri

    cfg = _config(args)
    try:
        champion = champion_info(cfg)
    except Exception as exc:
        if not is_unreachable(exc):
            raise
        print(f"intentops champion: cannot reach MLflow at {resolve_tracking_uri(cfg)}: {exc}", file=sys.stderr)
        return UNREACHABLE_EXIT
    if champion is None:
        if args.json:
            print(json.dumps(None))
        else:
            print(f"{cfg.registry.model_name} has no champion yet")
        return NO_CHAMPION_EXIT
    if args.json:
        print(json.dumps(champion.to_dict(), ensure_ascii=False, indent=2))
    else:
        _print_version(champion, "champion")
    return 0
