"""Training stages: SFT warm-up, GRPO (both stages), hard-sample mining, and the chain of all four."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intentops.artifacts import (
    Dataset,
    HardSet,
    ModelFolder,
    Rollouts,
)
from intentops.config import RunConfig
from intentops.stages._timing import timed as _timed

log = logging.getLogger(__name__)


def _by_reference(cfg: RunConfig, model_dir: str | Path, stage: str, pipeline_run_id: str | None) -> dict[str, Any]:
    """With `storage.models_uri`, move the finished model to `<uri>/<run>/<stage>/` and leave its reference in
    `model_dir`; the UI metadata gains the URI and size. Nothing changes when the knob is empty."""
    if not cfg.storage.models_uri:
        return {}
    from intentops.storage import run_scoped

    ref = ModelFolder(model_dir).publish_by_reference(run_scoped(cfg.storage.models_uri, pipeline_run_id, stage))
    log.info("%s model published by reference to %s (%d bytes)", stage, ref["uri"], ref["size"])
    return {"model_uri": ref["uri"], "model_bytes": ref["size"]}


def resolved_model(cfg: RunConfig, model_dir: str | Path) -> Path:
    """A local folder for a model artifact: the folder itself, or the model its reference names (cached)."""
    return ModelFolder(model_dir).resolved(cfg.model.cache_dir or None).path


def _launched(trainer: str, cfg: RunConfig, **kwargs: Any) -> dict[str, Any] | None:
    """Train in other processes when the stage needs them: a TrainJob of `cluster.training_nodes` nodes, or one
    torchrun worker per GPU of this pod. Returns rank 0's result (a TrainJob's paths relative to the out_dir it
    downloaded); None: train in this process."""
    from intentops.training.launch import in_worker, processes_for, run_in_processes

    if in_worker():
        return None
    if cfg.cluster.training_nodes > 1:
        from intentops.training import trainjob

        runner, image = trainjob.runner_in_pod(cfg)
        return trainjob.run_on_nodes(runner, image, trainer, cfg, **kwargs)
    processes = processes_for(cfg)
    return run_in_processes(trainer, cfg, processes, **kwargs) if processes > 1 else None


def sft_warmup(
    cfg: RunConfig, dataset_dir: str | Path, model_dir: str | Path, pipeline_run_id: str | None = None
) -> dict[str, Any]:
    """Supervised warm-up from `model.base_model` (or the tiny profile's model) on the training split."""
    with _timed({}) as meta:
        from intentops.training.sft import run_sft

        launched = (
            _launched(
                "sft",
                cfg,
                dataset_dir=str(dataset_dir),
                base_model=cfg.model.base_model,
                out_dir=str(model_dir),
                pipeline_run_id=pipeline_run_id,
            )
            if cfg.sft.enabled  # without SFT the base model passes through in this process
            else None
        )
        if launched is None:
            run_sft(dataset_dir, cfg.model.base_model, cfg, model_dir, pipeline_run_id)
        meta.update(ModelFolder(model_dir).metadata(), lora=cfg.model.lora)
        meta.update(_by_reference(cfg, model_dir, "sft", pipeline_run_id))
    return meta


@dataclass
class GrpoOutputs:
    """Metadata of the two artifacts a GRPO stage writes."""

    model: dict[str, Any]
    rollouts: dict[str, Any]


def grpo(
    cfg: RunConfig,
    stage: str,
    train_path: str | Path,
    start_model_dir: str | Path,
    model_dir: str | Path,
    rollouts_dir: str | Path,
    pipeline_run_id: str | None = None,
) -> GrpoOutputs:
    """One GRPO stage (grpo1 on the training split, grpo2 on the hard set); the rollout log becomes its own artifact.

    After stage 1, `run_grpo` runs the scoring pass over every training record (`intentops.training.scoring`); it
    moves into the rollouts artifact with the training rollouts, and hard-sample mining reads only it. Stage 2 on an
    empty hard set passes the stage-1 model on unchanged and says so in the metadata. With the uncertain label
    taught (`prompt.uncertain_label`, `sft.uncertain_share` > 0), stage 1 first relabels the training records the
    warmed-up model is least sure of `uncertain()` and trains on that copy, which joins the rollouts artifact.
    """
    with _timed({}) as meta:
        from intentops.training.grpo import GrpoResult, run_grpo

        start = resolved_model(cfg, start_model_dir)
        if stage == "grpo1" and cfg.prompt.uncertain_label and cfg.sft.uncertain_share > 0:
            from intentops.training.uncertain import relabel_uncertain

            train_path, report = relabel_uncertain(start, train_path, cfg, rollouts_dir)
            meta["uncertain_relabelled"] = report.relabelled
        reported = _launched(
            "grpo",
            cfg,
            train_path=str(train_path),
            model_dir=str(start),
            out_dir=str(model_dir),
            stage=stage,
            pipeline_run_id=pipeline_run_id,
        )
        if reported is None:
            result = run_grpo(train_path, start, cfg, model_dir, stage, pipeline_run_id)
        else:
            result = GrpoResult.from_dict(reported, base=Path(model_dir))  # TrainJob paths are relative to it
        result.move_rollouts(rollouts_dir)
        meta.update(result.summary())
        meta.update(_by_reference(cfg, model_dir, stage, pipeline_run_id))
    rollouts = {"rows": int(result.metrics.get("rollouts", 0)), "stage": result.stage}
    if "scored_records" in result.metrics:
        rollouts["scored_records"] = int(result.metrics["scored_records"])
    if "uncertain_relabelled" in meta:
        rollouts["uncertain_relabelled"] = meta["uncertain_relabelled"]
    return GrpoOutputs(model=meta, rollouts=rollouts)


def mine_hard_samples(
    cfg: RunConfig,
    rollouts_dir: str | Path,
    dataset_dir: str | Path,
    hard_set_dir: str | Path,
    pipeline_run_id: str | None = None,
) -> dict[str, Any]:
    """Stage-1 scoring pass + training split -> the hard set GRPO stage 2 trains on.

    Mining reads only the scoring pass (`Rollouts.table`), never GRPO's training rollouts, joined to the records
    stage 1 trained on (`Rollouts.trained_on`: its uncertain-relabelled copy, if any); the curriculum refuses a pass
    made from another training set.
    """
    with _timed({}) as meta:
        import mlflow

        from intentops.tracking import stage_run
        from intentops.training.curriculum import mine_hard_samples as mine

        with stage_run("mine-hard-samples", cfg, pipeline_run_id, params=cfg.mining.model_dump()):
            rollouts = Rollouts(rollouts_dir)
            train = rollouts.trained_on(Dataset(dataset_dir).train)
            report = mine(rollouts.table, train, cfg.mining, hard_set_dir)
            mlflow.log_metrics(
                {"hard": report.hard, "easy": report.easy, "selected": report.selected, "coverage": report.coverage}
            )
            mlflow.log_artifacts(str(hard_set_dir), artifact_path="mining")
        HardSet(hard_set_dir).check()
        meta.update(report.ui_metadata())
    return meta


@dataclass
class ChainResult:
    """The folders of one SFT -> GRPO 1 -> mining -> GRPO 2 chain and each stage's metadata."""

    sft: Path
    grpo1: Path
    rollouts1: Path
    hard_set: Path
    grpo2: Path
    rollouts2: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def candidate(self) -> Path:
        return self.grpo2


def train_chain(
    cfg: RunConfig,
    dataset_dir: str | Path,
    work_dir: str | Path,
    pipeline_run_id: str | None = None,
    on_stage: Callable[[str, Callable[[], Any]], Any] | None = None,
) -> ChainResult:
    """The training chain of the pipeline in one process: SFT -> GRPO 1 -> mine -> GRPO 2, into `work_dir`.

    `on_stage(name, run)` wraps each stage (the benchmark times them); by default a stage is simply run.
    """
    work = Path(work_dir)
    chain = ChainResult(
        sft=work / "sft",
        grpo1=work / "grpo1",
        rollouts1=work / "rollouts1",
        hard_set=work / "hard_set",
        grpo2=work / "grpo2",
        rollouts2=work / "rollouts2",
    )
    wrap = on_stage or (lambda _name, run: run())
    dataset = Dataset(dataset_dir)
    chain.stages["sft"] = wrap("sft", lambda: sft_warmup(cfg, dataset.path, chain.sft, pipeline_run_id))
    g1 = wrap(
        "grpo1",
        lambda: grpo(cfg, "grpo1", dataset.train, chain.sft, chain.grpo1, chain.rollouts1, pipeline_run_id),
    )
    chain.stages["grpo1"], chain.stages["rollouts1"] = g1.model, g1.rollouts
    chain.stages["mine"] = wrap(
        "mine", lambda: mine_hard_samples(cfg, chain.rollouts1, dataset.path, chain.hard_set, pipeline_run_id)
    )
    g2 = wrap(
        "grpo2",
        lambda: grpo(
            cfg, "grpo2", HardSet(chain.hard_set).train, chain.grpo1, chain.grpo2, chain.rollouts2, pipeline_run_id
        ),
    )
    chain.stages["grpo2"], chain.stages["rollouts2"] = g2.model, g2.rollouts
    return chain
