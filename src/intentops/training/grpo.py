"""GRPO stages: stage 1 on the whole training set from the SFT weights (or straight from a base model), stage 2 on
the mined hard set.

TRL's `GRPOTrainer` (or `RLOOTrainer`, per `grpo.algorithm`, see `intentops.training.trainer`) samples
`num_generations` completions per prompt and scores them with the rule-based rewards of `intentops.rewards`
(format, intent, params; weights from the config). Every rollout's reward components are appended to
`out_dir/rollouts.parquet` (one row per completion: sample id, step, generation index). After stage 1 the trained
policy scores every training record in one complete pass (`intentops.training.scoring`,
`rollouts.scoring.parquet`), which is what hard-sample mining reads. A collapse guard
(`intentops.training.callbacks.CollapseGuard`) stops training with `RewardCollapseError`, so a broken policy is never
handed on. Stage 2 on an empty hard set passes the stage-1 model on.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from intentops import tracking
from intentops.artifacts import (
    CATALOG_FILE,
    COLLAPSED_ROLLOUTS_FILE,
    REJECTED_PROMPTS_FILE,
    ROLLOUTS_FILE,
    SCORES_FILE,
)
from intentops.config import RunConfig
from intentops.hf_names import checkpointing_arg
from intentops.io import write_jsonl
from intentops.models import (
    base_card,
    bf16_available,
    copy_model,
    dataset_hash,
    invalidate_model_dir,
    load_model_and_tokenizer,
    publish_model_dir,
)
from intentops.prompting import PromptBuilder
from intentops.rewards import RewardWeights, make_reward_funcs
from intentops.training.advantages import trainer_options
from intentops.training.callbacks import (
    CollapseGuard,
    CollapseRules,
    MlflowStepMetrics,
    ProgressLog,
    RewardCollapseError,
    UploadCheckpoints,
)
from intentops.training.checkpoints import RemoteCheckpoints, check_model_weights, restore_once
from intentops.training.rollouts import RolloutLog, train_set_hash
from intentops.training.scoring import prompt_length, score_training_set
from intentops.training.sft import CHECKPOINTS, deepspeed_config, load_split, lora_config, stage_trained_model
from intentops.training.trainer import make_trainer

if TYPE_CHECKING:
    from transformers import TrainerCallback

log = logging.getLogger(__name__)

Stage = Literal["grpo1", "grpo2"]
STAGES: tuple[str, ...] = ("grpo1", "grpo2")


@dataclass
class GrpoResult:
    stage: str
    model_dir: Path
    rollouts_path: Path | None
    train_records: int
    steps: int = 0
    skipped: bool = False
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    scores_path: Path | None = None  # stage 1: the RCS scoring pass over every training record

    def summary(self) -> dict[str, Any]:
        """What a person following the run needs at a glance (KFP artifact metadata, CLI output)."""
        return {
            "stage": self.stage,
            "train_records": self.train_records,
            "steps": self.steps,
            "skipped": self.skipped,
            **({"skip_reason": self.reason} if self.skipped else {}),
            **{key: round(value, 4) for key, value in self.metrics.items() if value == value},  # drop NaN
        }

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """JSON-ready fields (a stage run in other processes hands its result back this way); paths relative to
        `relative_to` when the files travel elsewhere with that folder (a TrainJob's model)."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value.resolve().relative_to(relative_to.resolve()) if relative_to else value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path | None = None) -> GrpoResult:
        """The result `to_dict` wrote; relative paths are taken inside `base`."""
        paths = ("model_dir", "rollouts_path", "scores_path")
        return cls(
            **{
                key: (base / value if base else Path(value)) if key in paths and value is not None else value
                for key, value in data.items()
            }
        )

    def move_rollouts(self, dest_dir: str | Path) -> None:
        """Hand the rollout log and the scoring pass on as their own artifact (mine-hard-samples reads the
        scoring pass); the model folder keeps the weights."""
        import shutil

        Path(dest_dir).mkdir(parents=True, exist_ok=True)
        if self.rollouts_path is not None:
            shutil.move(self.rollouts_path, Path(dest_dir) / ROLLOUTS_FILE)
        if self.scores_path is not None:
            shutil.move(self.scores_path, Path(dest_dir) / SCORES_FILE)


def _prompt_rows(
    records: Sequence[dict[str, Any]], builder: PromptBuilder, tokenizer: Any, max_prompt_length: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """GRPO rows (conversational prompt + reference output + id) and the records whose prompt is too long.

    TRL no longer truncates prompts (cutting a chat prompt would drop the tool list), so over-long prompts are left
    out and reported instead of silently trained on a mangled context.
    """
    rows, rejects = [], []
    for record in records:
        length = prompt_length(builder, tokenizer, record["text"])
        if length > max_prompt_length:
            rejects.append(
                {
                    "id": record["id"],
                    "reason": f"prompt has {length} tokens > grpo.max_prompt_length={max_prompt_length}",
                    "text": record["text"],
                }
            )
            continue
        rows.append({"prompt": builder.messages(record["text"]), "output": record["output"], "id": str(record["id"])})
    return rows, rejects


def _fill_one_batch(rows: list[dict[str, Any]], cfg: RunConfig) -> list[dict[str, Any]]:
    """Cycle a set smaller than one step's prompts (a small hard set) so every step has full groups.

    TRL's sampler drops incomplete prompt batches, so such a set would otherwise train for zero steps.
    """
    from intentops.training.launch import distributed_state

    if not rows:
        return rows
    needed = cfg.grpo.prompts_per_step(distributed_state().num_processes)
    if len(rows) >= needed:
        return rows
    log.warning("%d prompts are fewer than the %d one GRPO step needs; cycling them", len(rows), needed)
    return [rows[i % len(rows)] for i in range(needed)]


def grpo_training_args(cfg: RunConfig, out: Path, max_steps: int, reward_weights: list[float]) -> Any:
    """TRL `GRPOConfig` (`RLOOConfig` for grpo.algorithm=rloo) from the run configuration (bf16 only where the
    hardware has it; DeepSpeed passed through; the algorithm's options from `advantages.trainer_options`).

    In thought mode a completion cut off at max_completion_length is left out of the loss
    (`mask_truncated_completions`): its missing answer says nothing about whether the reasoning was good, and
    penalising it would push every reasoning block to be short rather than useful."""
    import torch
    from trl import GRPOConfig, RLOOConfig

    grpo = cfg.grpo
    config_class = RLOOConfig if grpo.algorithm == "rloo" else GRPOConfig
    return config_class(
        output_dir=str(out / CHECKPOINTS),
        max_steps=max_steps,
        learning_rate=grpo.learning_rate,
        per_device_train_batch_size=grpo.batch_size,
        gradient_accumulation_steps=grpo.gradient_accumulation_steps,
        num_generations=grpo.num_generations,
        **trainer_options(grpo),
        temperature=grpo.temperature,
        max_completion_length=grpo.max_completion_length,
        mask_truncated_completions=cfg.prompt.output_mode == "thought",
        reward_weights=reward_weights,
        use_vllm=grpo.use_vllm,
        vllm_mode="colocate",
        logging_steps=grpo.logging_steps,
        save_strategy="steps",
        save_steps=grpo.save_steps,
        save_total_limit=grpo.save_total_limit,
        **checkpointing_arg(config_class, grpo.gradient_checkpointing),
        bf16=bf16_available() and cfg.model.dtype in ("auto", "bfloat16"),
        fp16=False,
        deepspeed=deepspeed_config(grpo.deepspeed, "grpo.deepspeed"),
        seed=grpo.seed,
        data_seed=grpo.seed,
        report_to="none",
        log_completions=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinned host memory only helps copies to a GPU
        use_cpu=not torch.cuda.is_available(),  # CPU workers under torchrun then form a gloo group
    )


# TRL reads `model.is_gradient_checkpointing` (trl/models/utils.py, generation under the trainer), which transformers 5
# deprecates in favour of `is_activation_checkpointing`: TRL's to change, so only that one warning is silenced while
# the trainer runs.
TRL_DEPRECATION = r"`is_gradient_checkpointing` is deprecated"


def run_grpo(
    train_path: str | Path,
    model_dir: str | Path,
    cfg: RunConfig,
    out_dir: str | Path,
    stage: Stage = "grpo1",
    pipeline_run_id: str | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> GrpoResult:
    """GRPO from the model folder `model_dir` on the records of `train_path`; writes a model folder (card stage
    `stage`) and `rollouts.parquet` to `out_dir`. Stage 2 with no records passes `model_dir` on unchanged.

    `callbacks` are extra `transformers.TrainerCallback`s (progress hooks, tests).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    train_path, model_dir, out = Path(train_path), Path(model_dir), Path(out_dir)
    parent_card = base_card(model_dir)
    records = load_split(train_path)
    if not records:
        if stage == "grpo1":
            raise ValueError(f"{train_path}: no training records for GRPO stage 1")
        return _pass_on(model_dir, out, cfg, pipeline_run_id, train_path)
    if cfg.grpo.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ValueError(
            "grpo.use_vllm is set but vllm is not importable here; install it (pip install 'intentops[serve]') "
            "or set grpo__use_vllm=false to generate rollouts with transformers"
        )
    max_steps = cfg.grpo.stage1_max_steps if stage == "grpo1" else cfg.grpo.stage2_max_steps
    builder = _prompt_builder(model_dir, parent_card, train_path, records, cfg)
    out.mkdir(parents=True, exist_ok=True)
    invalidate_model_dir(out)
    check_model_weights(model_dir)
    model, tokenizer = load_model_and_tokenizer(model_dir, cfg.model)
    rows, rejects = _prompt_rows(records, builder, tokenizer, cfg.grpo.max_prompt_length)
    n_records = len(rows)
    rows = _fill_one_batch(rows, cfg)
    write_jsonl(out / REJECTED_PROMPTS_FILE, rejects)
    if rejects:
        log.warning(
            "%d of %d prompts are longer than grpo.max_prompt_length; listed in %s",
            len(rejects),
            len(records),
            out / REJECTED_PROMPTS_FILE,
        )
    if not rows:
        raise ValueError(
            f"{train_path}: every prompt is longer than grpo.max_prompt_length={cfg.grpo.max_prompt_length}"
        )

    from datasets import Dataset

    from intentops.training.launch import distributed_state

    grpo = cfg.grpo
    weights = RewardWeights.from_config(grpo)
    rollouts = RolloutLog(out / ROLLOUTS_FILE, weights.as_list(), train_set_hash(records))
    reward_funcs, reward_weights = make_reward_funcs(builder, grpo, rollouts)
    args = grpo_training_args(cfg, out, max_steps, reward_weights)
    resume_key = {
        "train": train_set_hash(records),
        "start_model": parent_card,
        "grpo": grpo.model_dump(),
        "model": cfg.model.model_dump(),
        "max_steps": max_steps,
    }
    remote = RemoteCheckpoints.from_config(cfg.storage.checkpoint_uri, pipeline_run_id, stage, resume_key)
    resume_from = restore_once(remote, out / CHECKPOINTS) if remote else None
    if resume_from:
        log.warning(
            "%s resumes from %s: the rollout log holds only the steps after it; the collapse guard starts anew",
            stage,
            resume_from,
        )
    params = {
        "stage": stage,
        "model_dir": str(model_dir),
        "train_path": str(train_path),
        "train_records": n_records,
        "max_steps": max_steps,
        **{f"grpo__{k}": v for k, v in grpo.model_dump().items()},
        "model__lora": cfg.model.lora,
    }
    guard = CollapseGuard(CollapseRules.from_config(grpo, weights.total, thought=builder.template is not None))
    state = distributed_state()
    main = state.is_main_process
    stage_run = tracking.stage_run(stage, cfg, pipeline_run_id, params=params) if main else nullcontext(None)
    with stage_run as run:
        trainer = make_trainer(
            grpo.algorithm,
            online_filtering=grpo.online_filtering,
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config(cfg) if cfg.model.lora else None,
            callbacks=[
                MlflowStepMetrics(),
                ProgressLog(stage, ("reward", "rewards/format/mean", "rewards/intent/mean", "rewards/params/mean")),
                guard,
                *([UploadCheckpoints(remote, grpo.save_total_limit)] if remote else []),
                *callbacks,
            ],
        )
        log.info("%s: %d steps on %d prompts x %d generations", stage, max_steps, n_records, grpo.num_generations)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=TRL_DEPRECATION, category=FutureWarning)
                train_result = trainer.train(resume_from_checkpoint=resume_from)
        except RewardCollapseError as exc:
            kept = rollouts.close(out / COLLAPSED_ROLLOUTS_FILE)
            if run is not None:
                import mlflow

                mlflow.set_tag("intentops.collapse", str(exc)[:5000])
            log.error("%s (rollouts kept in %s)", exc, kept)
            raise
        except BaseException:
            rollouts.discard()
            raise
        history = [entry for entry in trainer.state.log_history if "reward" in entry]
        staging = stage_trained_model(trainer, out, stage, model_dir, cfg, tokenizer)
        del trainer, model
        gc.collect()
        rollouts_path = rollouts.close()
        if staging is None:  # not the main process
            return GrpoResult(stage, out, rollouts_path, n_records, steps=train_result.global_step)
        final = history[-1] if history else {}
        metrics = {
            "final_reward": float(final.get("reward", float("nan"))),
            "final_format_valid": float(final.get("rewards/format/mean", float("nan"))),
            "final_intent_reward": float(final.get("rewards/intent/mean", float("nan"))),
            "rollouts": float(rollouts.rows),
            "train_runtime": float(train_result.metrics.get("train_runtime", 0.0)),
        }
        publish_model_dir(
            staging,
            out,
            builder,
            base_model=parent_card.get("base_model", str(model_dir)),
            stage=stage,
            catalog_hash=parent_card.get("catalog_hash", builder.catalog.content_hash),
            dataset_hash=parent_card.get("dataset_hash", "") or dataset_hash(train_path.parent),
            parent=parent_card,
            training={
                "train_path": str(train_path),
                "records": n_records,
                "steps": train_result.global_step,
                "resumed_from": resume_from,
                "num_generations": grpo.num_generations,
                "reward_weights": reward_weights,
                "strict_format": grpo.strict_format,
                "algorithm": grpo.algorithm,
                "processes": state.num_processes,
                "rollouts": rollouts.rows,
                "metrics": metrics,
                "mlflow_run_id": run.info.run_id if run is not None else None,
            },
        )
        scores_path = None
        if stage == "grpo1":
            skipped = [reject["id"] for reject in rejects]
            scoring = score_training_set(out, records, builder, cfg, out / SCORES_FILE, skip_ids=skipped)
            scores_path = scoring.path
            metrics.update(
                {
                    "scored_records": float(scoring.scored),
                    "score_pass_perfect_rate": scoring.perfect_rate,
                    "score_pass_seconds": scoring.seconds,
                }
            )
        if run is not None:
            import mlflow

            mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})
            for path in (rollouts_path, scores_path):
                if path is not None:
                    mlflow.log_artifact(str(path))
    log.info("%s model written to %s (%d rollouts logged)", stage, out, rollouts.rows)
    return GrpoResult(
        stage, out, rollouts_path, n_records, steps=train_result.global_step, metrics=metrics, scores_path=scores_path
    )


def _prompt_builder(
    model_dir: Path, card: dict[str, Any], train_path: Path, records: list[dict[str, Any]], cfg: RunConfig
) -> PromptBuilder:
    """The prompt the model was trained with (IntentOps model folder), or, for a plain base or instruct model
    (no SFT warm-up), one built from the configuration and the dataset's catalog."""
    if card.get("stage") != "pretrained":
        return PromptBuilder.from_model_dir(model_dir)
    from intentops.catalog import load_catalog
    from intentops.storage import ensure_local

    catalog = train_path.parent / CATALOG_FILE
    if not catalog.is_file():
        catalog = ensure_local(cfg.data.catalog, cfg.model.cache_dir or None)
    log.info("%s has no IntentOps model card: prompts from the configuration and %s", model_dir, catalog)
    return PromptBuilder(load_catalog(catalog), cfg.prompt, examples=records)


def _pass_on(model_dir: Path, out: Path, cfg: RunConfig, pipeline_run_id: str | None, train_path: Path) -> GrpoResult:
    """Stage 2 with nothing to learn from: say so, and hand the stage-1 model on unchanged."""
    from intentops.training.launch import distributed_state

    reason = f"skipped: no hard samples in {train_path}"
    if not distributed_state().is_main_process:
        return GrpoResult("grpo2", out, None, 0, skipped=True, reason=reason)
    log.info("grpo2 %s; passing %s on unchanged", reason, model_dir)
    with tracking.stage_run("grpo2", cfg, pipeline_run_id, params={"skipped": reason, "model_dir": str(model_dir)}):
        import mlflow

        mlflow.set_tag("intentops.skipped", reason)
        copy_model(model_dir, out, stage="grpo2", skipped=reason)
    return GrpoResult("grpo2", out, None, 0, skipped=True, reason=reason)
