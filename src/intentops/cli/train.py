"""`intentops train sft|grpo|score|mine`: the training stages, one command each, reading and writing paths or s3:// URIs.

Exit status: 0 on success; 1 when GRPO stopped on reward collapse (no model written); 2 on a usage or input error.
Each command prints a one-line JSON summary on stdout for the pipeline component that wraps it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from intentops.cli import add_config_argument, config_from_args

COLLAPSE_EXIT = 1
log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="Training stages: SFT warm-up, GRPO stage 1/2, hard-sample mining.",
        description="Training stages of the recipe: SFT warm-up -> GRPO stage 1 -> mine hard samples -> GRPO stage 2 "
        "(each alone, or all of them with `chain`).",
    )
    stages = train.add_subparsers(dest="stage", metavar="STAGE", required=True)

    sft = stages.add_parser(
        "sft",
        help="Supervised warm-up on a validated dataset (TRL SFTTrainer, loss on the answer only).",
        description=(
            "Fine-tune a base model on DATASET/train.jsonl with prompts from the catalog (full or LoRA, DeepSpeed "
            "when sft.deepspeed is set), resuming from OUT/checkpoints when sft.resume is on. On the tiny profile "
            "with no base model, a tiny Qwen2 and its tokenizer are first built from the dataset. Writes a model "
            "folder with the IntentOps model card (stage sft) and the catalog."
        ),
    )
    sft.add_argument("--dataset", required=True, help="Validated dataset folder (train.jsonl, catalog.yaml) or s3://.")
    sft.add_argument("--out", required=True, help="Output model folder or s3:// prefix.")
    sft.add_argument(
        "--base-model",
        default="",
        help="Base model folder or s3:// prefix (default: model.base_model, or the tiny profile's model).",
    )
    sft.add_argument("--pipeline-run-id", help="Nest the MLflow run under this pipeline run's parent run.")
    add_config_argument(sft)
    sft.set_defaults(handler=_sft)

    grpo = stages.add_parser(
        "grpo",
        help="GRPO from a model folder (stage 1 on the training set, stage 2 on the mined hard set).",
        description=(
            "TRL GRPOTrainer with the format/intent/params rewards; every rollout's rewards go to "
            "a parquet rollout log in OUT. Stage grpo2 on an empty training file passes the model on unchanged. Stops "
            "with exit status 1, writing no model, when the reward collapses (grpo.collapse_*)."
        ),
    )
    grpo.add_argument("--train", required=True, help="Training records (train.jsonl), local or s3://.")
    grpo.add_argument(
        "--model",
        required=True,
        help="Model folder to start from (an SFT or stage-1 output, or a plain base/instruct model: its prompt then "
        "comes from the configuration and the dataset's catalog.yaml) or s3://.",
    )
    grpo.add_argument("--out", required=True, help="Output model folder or s3:// prefix.")
    grpo.add_argument("--stage", choices=("grpo1", "grpo2"), default="grpo1", help="Which GRPO stage (default grpo1).")
    grpo.add_argument("--pipeline-run-id", help="Nest the MLflow run under this pipeline run's parent run.")
    add_config_argument(grpo)
    grpo.set_defaults(handler=_grpo)

    score = stages.add_parser(
        "score",
        help="The RCS scoring pass: G sampled completions for every training record, scored with the GRPO rewards.",
        description=(
            "Sample mining.score_generations (0 = grpo.num_generations) completions per record of TRAIN with the "
            "model (vLLM or transformers, mining.score_backend), score them with the GRPO rewards and write "
            "OUT/rollouts.scoring.parquet, the input of `intentops train mine`. GRPO stage 1 runs this pass itself."
        ),
    )
    score.add_argument("--model", required=True, help="IntentOps model folder (e.g. the stage-1 output) or s3://.")
    score.add_argument("--train", required=True, help="Training records (train.jsonl), local or s3://.")
    score.add_argument("--out", required=True, help="Output folder or s3:// prefix.")
    add_config_argument(score)
    score.set_defaults(handler=_score)

    mine = stages.add_parser(
        "mine",
        help="Mine the samples stage-1 rollouts did not master (reward-based curriculum sampling).",
        description=(
            "Score each training sample by its completions in the stage-1 scoring pass (every record, G each) and "
            "write OUT/train.jsonl (the hard samples, plus mining.easy_per_hard easy ones), OUT/mining_report.json "
            "and OUT/mining_report.md."
        ),
    )
    mine.add_argument(
        "--rollouts", required=True, help="The stage-1 scoring pass (rollouts.scoring.parquet), local or s3://."
    )
    mine.add_argument("--train", required=True, help="The stage-1 training records (train.jsonl), local or s3://.")
    mine.add_argument("--out", required=True, help="Output folder or s3:// prefix.")
    add_config_argument(mine)
    mine.set_defaults(handler=_mine)

    chain = stages.add_parser(
        "chain",
        help="The whole training chain in one process: SFT -> GRPO stage 1 -> mine -> GRPO stage 2.",
        description=(
            "Run the pipeline's training stages one after the other on a validated dataset, each into its own "
            "folder under OUT (sft, grpo1, rollouts1, hard_set, grpo2, rollouts2); the candidate is OUT/grpo2. "
            "Prints each stage's summary as one JSON object."
        ),
    )
    chain.add_argument("--dataset", required=True, help="Validated dataset folder (validate-dataset output).")
    chain.add_argument("--out", required=True, help="Local work folder for the stage outputs.")
    chain.add_argument("--pipeline-run-id", help="Nest the MLflow runs under this pipeline run's parent run.")
    add_config_argument(chain)
    chain.set_defaults(handler=_chain)


def _fetch(uri: str, cfg: Any) -> Path:
    from intentops.storage import ensure_local

    return ensure_local(uri, cfg.model.cache_dir or None)


@contextmanager
def _output(out: str, inputs: list[str]) -> Iterator[Path]:
    """A local folder for the stage's output; an s3:// --out is written locally and uploaded when the stage succeeds."""
    from intentops.io import check_output
    from intentops.storage import is_s3, upload

    check_output(out, inputs, resume=True)  # never train into (or over) the dataset or the base model

    if not is_s3(out):
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="intentops-train-") as scratch:
        local = Path(scratch) / "out"
        yield local
        upload(local, out)


def _print(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, ensure_ascii=False, default=str))


def _sft(args: argparse.Namespace) -> int:
    from intentops.artifacts import ModelFolder
    from intentops.data.split import require_validated
    from intentops.stages import sft_warmup

    cfg = config_from_args(args)
    if args.base_model:
        cfg.model.base_model = args.base_model
    dataset = _fetch(args.dataset, cfg)
    require_validated(dataset)
    with _output(args.out, [args.dataset, args.base_model]) as out:
        meta = sft_warmup(cfg, dataset, out, args.pipeline_run_id)
        training = ModelFolder(out).resolved(cfg.model.cache_dir or None).card().get("training", {})
    _print({"out": args.out, **meta, "training": training})
    return 0


def _grpo(args: argparse.Namespace) -> int:
    from intentops.stages import grpo
    from intentops.training.grpo import RewardCollapseError

    cfg = config_from_args(args)
    train, model = _fetch(args.train, cfg), _fetch(args.model, cfg)
    try:
        with _output(args.out, [args.train, args.model]) as out:
            # The rollout log stays in OUT next to the model, as the help says.
            result = grpo(cfg, args.stage, train, model, out, out, args.pipeline_run_id)
    except RewardCollapseError as exc:
        print(f"intentops train grpo: {exc}", file=sys.stderr)
        return COLLAPSE_EXIT
    _print({"out": args.out, **result.model, "reason": result.model.get("skip_reason", "")})
    return 0


def _score(args: argparse.Namespace) -> int:
    from intentops.artifacts import SCORES_FILE
    from intentops.training.scoring import score_model

    cfg = config_from_args(args)
    train, model = _fetch(args.train, cfg), _fetch(args.model, cfg)
    with _output(args.out, [args.train, args.model]) as out:
        result = score_model(model, train, cfg, out / SCORES_FILE)
    _print(
        {
            "out": args.out,
            "records": result.records,
            "scored": result.scored,
            "skipped": result.skipped,
            "generations": result.generations,
            "backend": result.backend,
            "perfect_rate": result.perfect_rate,
            "seconds": round(result.seconds, 3),
        }
    )
    return 0


def _mine(args: argparse.Namespace) -> int:
    from intentops.training.curriculum import mine_hard_samples

    cfg = config_from_args(args)
    rollouts, train = _fetch(args.rollouts, cfg), _fetch(args.train, cfg)
    with _output(args.out, [args.rollouts, args.train]) as out:
        report = mine_hard_samples(rollouts, train, cfg.mining, out)
    _print(
        {
            "out": args.out,
            "message": report.message,
            "hard": report.hard,
            "easy_selected": report.easy_selected,
            "selected": report.selected,
            "scored": report.scored,
            "coverage": report.coverage,
        }
    )
    return 0


def _chain(args: argparse.Namespace) -> int:
    from intentops.io import check_output
    from intentops.stages import train_chain
    from intentops.training.grpo import RewardCollapseError

    cfg = config_from_args(args)
    check_output(args.out, [args.dataset], resume=True)  # never train into (or over) the dataset
    try:
        chain = train_chain(cfg, _fetch(args.dataset, cfg), args.out, args.pipeline_run_id)
    except RewardCollapseError as exc:
        print(f"intentops train chain: {exc}", file=sys.stderr)
        return COLLAPSE_EXIT
    _print({"out": args.out, "candidate": str(chain.candidate), "stages": chain.stages})
    return 0
