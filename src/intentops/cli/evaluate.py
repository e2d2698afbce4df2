"""`intentops evaluate` and `intentops gate`.

Exit status of `intentops gate`: 0 when the candidate may be promoted (including dry_run and disabled modes),
3 when the gate blocks it, 2 on a usage or input error (as every intentops command).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from intentops.cli import add_config_argument, config_from_args

log = logging.getLogger(__name__)

GATE_FAILED_EXIT = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="Evaluate a model folder on a dataset split (metrics, predictions, reports, MLflow).",
        description=(
            "Predict every record of a dataset split, compute intent/parameter accuracy (first call's intent / intent and arguments), "
            "macro-F1, per-intent scores, confusion matrix, seen/unseen and per-language splits, latency and the "
            "majority / TF-IDF baselines; write the evaluation folder (metrics, per-record predictions, Markdown and "
            "HTML reports, confusion matrix) to --out and log them to MLflow."
        ),
    )
    evaluate.add_argument("--model", required=True, help="IntentOps model folder (HF files + IntentOps model card).")
    evaluate.add_argument("--dataset", required=True, help="Validated dataset folder (train/val/test.jsonl).")
    evaluate.add_argument("--out", required=True, help="Output folder for the evaluation artifact.")
    evaluate.add_argument("--force", action="store_true", help="Replace --out even if intentops did not write it.")
    evaluate.add_argument("--split", default="test", help="Split to evaluate (default: test).")
    evaluate.add_argument(
        "--decoding",
        choices=["generate", "label_scoring", "vllm", "auto"],
        help="Override evaluation.decoding: batched generation, label scoring (rank intents by likelihood), vLLM, or auto.",
    )
    evaluate.add_argument("--pipeline-run-id", help="Nest the MLflow run under this pipeline run.")
    add_config_argument(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    gate = subparsers.add_parser(
        "gate",
        help="Decide whether an evaluated candidate may be promoted (exit 0 pass, 3 blocked).",
        description=(
            "Check the candidate's metrics against the gate thresholds and, unless disabled, against the current "
            "champion evaluated now on the same test set. By default the champion is looked up in the MLflow "
            "registry (alias 'champion'); --champion-model uses a local folder instead and --no-champion-lookup "
            "skips the comparison. Writes the decision (JSON and Markdown) to --out. Exit status: 0 when promotion may "
            "proceed (also in dry_run and disabled modes), 3 when the gate blocks it, 2 on input errors."
        ),
    )
    gate.add_argument(
        "--candidate", required=True, help="The candidate's evaluation folder (intentops evaluate output)."
    )
    gate.add_argument("--dataset", required=True, help="The dataset folder the candidate was evaluated on.")
    gate.add_argument("--out", required=True, help="Output folder for the gate decision and the champion's evaluation.")
    gate.add_argument("--force", action="store_true", help="Replace --out even if intentops did not write it.")
    source = gate.add_mutually_exclusive_group()
    source.add_argument("--champion-model", help="Compare with this local champion model folder.")
    source.add_argument("--no-champion-lookup", action="store_true", help="Do not look up a champion in the registry.")
    gate.add_argument("--pipeline-run-id", help="Nest the MLflow runs under this pipeline run.")
    add_config_argument(gate)
    gate.set_defaults(handler=_gate)


def _evaluate(args: argparse.Namespace) -> int:
    from intentops.artifacts import Evaluation
    from intentops.stages import evaluate

    cfg = config_from_args(args)
    if args.decoding:
        cfg.evaluation.decoding = args.decoding
    from intentops.io import replace_output

    with replace_output(args.out, [args.model, args.dataset], args.force, "evaluate") as out:
        evaluate(cfg, args.model, args.dataset, out, args.pipeline_run_id, args.split)
    metrics = Evaluation(args.out).metrics()
    print(json.dumps({"out": str(Path(args.out)), "decoding": metrics.decoding, **metrics.headline()}))
    return 0


def _gate(args: argparse.Namespace) -> int:
    from intentops.artifacts import CHAMPION_EVALUATION_DIR, GateResult
    from intentops.io import replace_output
    from intentops.stages import evaluate_champion, gate

    cfg = config_from_args(args)
    inputs = [args.candidate, args.dataset, args.champion_model]
    with replace_output(args.out, inputs, args.force, "gate") as out:
        champion_dir = None
        if not args.no_champion_lookup:
            champion_dir = out / CHAMPION_EVALUATION_DIR
            evaluate_champion(
                cfg,
                args.candidate,
                args.dataset,
                champion_dir,
                args.pipeline_run_id,
                champion_model_dir=args.champion_model,
            )
        passed = gate(cfg, args.candidate, champion_dir, out, args.pipeline_run_id, args.dataset).passed
    decision = GateResult(args.out).decision()
    print(json.dumps({"passed": passed, "mode": decision["mode"], "reasons": decision["reasons"]}, ensure_ascii=False))
    return 0 if passed else GATE_FAILED_EXIT
