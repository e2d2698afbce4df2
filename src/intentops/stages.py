"""One function per pipeline stage: its MLflow stage run, its timing and the metadata of the artifacts it writes.

The KFP components and the CLI commands are one-call shims over these, so a stage behaves the same in a pod, under
`intentops run` (kfp.local) and from the command line. Each function returns the metadata the Kubeflow UI shows on
its output artifact (always with `stage_seconds`). SFT, GRPO and evaluation open their MLflow stage run inside
`run_sft`, `run_grpo` and `evaluate_model`, because only the main process of a multi-GPU launch may log and the
evaluation records its run id in metrics.json; the other stages open theirs here.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intentops.artifacts import (
    CONVERT_REPORT_FILE,
    DATASET_MANIFEST,
    Dataset,
    Evaluation,
    GateResult,
    HardSet,
    ModelFolder,
    Records,
    Rollouts,
)
from intentops.config import GateConfig, RunConfig

log = logging.getLogger(__name__)


@contextmanager
def _timed(metadata: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Add `stage_seconds` (wall time of the block) to `metadata` when the block succeeds."""
    started = time.perf_counter()
    yield metadata
    metadata["stage_seconds"] = round(time.perf_counter() - started, 3)


# ---- data ------------------------------------------------------------------------------------------------------


def convert_itag(cfg: RunConfig, records_dir: str | Path, pipeline_run_id: str | None = None) -> dict[str, Any]:
    """iTAG manifest (`data.manifest`) -> records; fails when the reject rate exceeds `data.max_reject_rate`."""
    import mlflow

    from intentops.data.itag import convert_manifest
    from intentops.io import sha256_file
    from intentops.tracking import stage_run

    records = Records(records_dir)
    with _timed({}) as meta:
        with stage_run("convert-itag", cfg, pipeline_run_id, params={"manifest": cfg.data.manifest}):
            report = convert_manifest(cfg.data.manifest, records.path, cfg.data.max_reject_rate)
            mlflow.log_metrics(
                {"converted": report.converted, "rejected": report.rejected_total, "reject_rate": report.reject_rate}
            )
            mlflow.log_artifact(str(records.file(CONVERT_REPORT_FILE)))
        meta.update(
            pipeline_run_id=pipeline_run_id or "",
            manifest=cfg.data.manifest,
            manifest_sha256=report.manifest_sha256,
            records=report.converted,
            rejected=report.rejected_total,
            reject_rate=round(report.reject_rate, 4),
            multi_intent=report.multi_intent,
            intents=len(report.intents),
            records_sha256=sha256_file(records.records),
        )
    report.raise_for_status()
    return meta


def validate_dataset(
    cfg: RunConfig, records_dir: str | Path, dataset_dir: str | Path, pipeline_run_id: str | None = None
) -> dict[str, Any]:
    """Records -> validated, split dataset; fails on any validation error (the report lists the records)."""
    import mlflow

    from intentops.catalog import load_catalog
    from intentops.data.split import prepare_dataset
    from intentops.storage import ensure_local
    from intentops.tracking import stage_run

    dataset = Dataset(dataset_dir)
    with _timed({}) as meta:
        catalog = load_catalog(ensure_local(cfg.data.catalog))
        with stage_run("validate-dataset", cfg, pipeline_run_id, params={"catalog": cfg.data.catalog}):
            prepare_dataset(Records(records_dir).records, catalog, cfg.data, dataset.path)
            mlflow.log_dict(dataset.manifest(), f"dataset/{DATASET_MANIFEST}")
            mlflow.log_artifact(str(dataset.validation_report), artifact_path="dataset")
        meta.update(intents=len(catalog.names), **dataset.metadata())
    return meta


# ---- training --------------------------------------------------------------------------------------------------


def sft_warmup(
    cfg: RunConfig, dataset_dir: str | Path, model_dir: str | Path, pipeline_run_id: str | None = None
) -> dict[str, Any]:
    """Supervised warm-up from `model.base_model` (or the tiny profile's model) on the training split."""
    from intentops.training.sft import run_sft

    with _timed({}) as meta:
        run_sft(dataset_dir, cfg.model.base_model, cfg, model_dir, pipeline_run_id)
        meta.update(ModelFolder(model_dir).metadata(), lora=cfg.model.lora)
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

    Stage 2 on an empty hard set passes the stage-1 model on unchanged and says so in the metadata.
    """
    from intentops.training.grpo import run_grpo

    with _timed({}) as meta:
        result = run_grpo(train_path, start_model_dir, cfg, model_dir, stage, pipeline_run_id)
        result.move_rollouts(rollouts_dir)
        meta.update(result.summary())
    return GrpoOutputs(
        model=meta,
        rollouts={"rows": int(result.metrics.get("rollouts", 0)), "stage": result.stage},
    )


def mine_hard_samples(
    cfg: RunConfig,
    rollouts_dir: str | Path,
    dataset_dir: str | Path,
    hard_set_dir: str | Path,
    pipeline_run_id: str | None = None,
) -> dict[str, Any]:
    """Stage-1 rollouts + training split -> the hard set GRPO stage 2 trains on."""
    import mlflow

    from intentops.tracking import stage_run
    from intentops.training.curriculum import mine_hard_samples as mine

    with _timed({}) as meta:
        with stage_run("mine-hard-samples", cfg, pipeline_run_id, params=cfg.mining.model_dump()):
            report = mine(Rollouts(rollouts_dir).table, Dataset(dataset_dir).train, cfg.mining, hard_set_dir)
            mlflow.log_metrics({"hard": report.hard, "easy": report.easy, "selected": report.selected})
            mlflow.log_artifacts(str(hard_set_dir), artifact_path="mining")
        HardSet(hard_set_dir).check()
        meta.update(
            train_records=report.train_records,
            scored=report.scored,
            hard=report.hard,
            easy=report.easy,
            selected=report.selected,
            hard_threshold=report.hard_threshold,
        )
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


# ---- evaluation and the gate -----------------------------------------------------------------------------------


@dataclass
class EvaluateOutputs:
    """What the evaluate task shows in the UI: artifact metadata, scalar metrics, the confusion matrix."""

    metadata: dict[str, Any]
    scalars: dict[str, float]
    confusion: dict[str, Any] | None
    folder: Evaluation

    def publish(self, evaluation: Any, metrics: Any, confusion: Any, report: Any, report_html: Any) -> None:
        """Fill a KFP task's outputs (duck-typed: `.metadata`, `.path`, `log_metric`, `log_confusion_matrix`)."""
        import shutil

        evaluation.metadata.update(self.metadata)
        for name, value in self.scalars.items():
            metrics.log_metric(name, value)
        if self.confusion is not None:
            confusion.log_confusion_matrix(**self.confusion)
        if self.folder.evaluated:
            shutil.copyfile(self.folder.report_md, report.path)
            shutil.copyfile(self.folder.report_html, report_html.path)
        else:
            note = f"No model was evaluated: {self.folder.no_model_reason()}\n"
            Path(report.path).write_text(f"# Evaluation\n\n{note}", encoding="utf-8")
            Path(report_html.path).write_text(f"<p>{note}</p>\n", encoding="utf-8")


def _evaluate_outputs(evaluation: Evaluation, meta: dict[str, Any]) -> EvaluateOutputs:
    from intentops.evaluation.report import classification_metrics_payload, scalar_metrics

    meta.update(evaluation.metadata())
    if not evaluation.evaluated:
        return EvaluateOutputs(meta, {}, None, evaluation)
    metrics = evaluation.metrics().to_dict()
    return EvaluateOutputs(meta, scalar_metrics(metrics), classification_metrics_payload(metrics), evaluation)


def evaluate(
    cfg: RunConfig,
    model_dir: str | Path,
    dataset_dir: str | Path,
    evaluation_dir: str | Path,
    pipeline_run_id: str | None = None,
    split: str = "test",
) -> EvaluateOutputs:
    """Score a model on a dataset split: metrics.json, predictions.jsonl, reports, confusion matrix."""
    from intentops.evaluation import evaluate_model

    with _timed({}) as meta:
        evaluate_model(model_dir, dataset_dir, cfg, evaluation_dir, pipeline_run_id, split)
    return _evaluate_outputs(Evaluation(evaluation_dir), meta)


def evaluate_champion(
    cfg: RunConfig,
    candidate_evaluation_dir: str | Path,
    dataset_dir: str | Path,
    evaluation_dir: str | Path,
    pipeline_run_id: str | None = None,
    champion_model_dir: str | Path | None = None,
) -> EvaluateOutputs:
    """Evaluate the champion exactly as the candidate was evaluated (same records, split, sample limit, decoding).

    The champion is `champion_model_dir` when given, else `@champion` downloaded from the registry. With no
    champion (or `gate.mode=disabled`) the evaluation folder says so (no_model.json) and the gate decides on
    thresholds alone.
    """
    from intentops.evaluation import evaluate_model

    candidate = Evaluation(candidate_evaluation_dir).metrics()
    dataset = Dataset(dataset_dir)
    if candidate.dataset.hash != dataset.dataset_hash:
        raise ValueError(
            f"{candidate_evaluation_dir}: candidate was evaluated on dataset {candidate.dataset.hash!r}, "
            f"not on {dataset.path} ({dataset.dataset_hash!r}); the gate compares models on one test set"
        )
    champion_cfg = cfg.model_copy(deep=True)
    champion_cfg.evaluation.max_samples = candidate.dataset.max_samples
    champion_cfg.evaluation.decoding = candidate.decoding or cfg.evaluation.decoding
    champion_cfg.evaluation.baselines = False  # same records: the candidate's report already has them

    def run(model_dir: str | Path, registry: dict[str, Any] | None) -> None:
        log.info("evaluating the champion %s on the candidate's test set", model_dir)
        evaluate_model(
            model_dir,
            dataset.path,
            champion_cfg,
            evaluation_dir,
            pipeline_run_id,
            candidate.dataset.split,
            stage="evaluate-champion",
            registry=registry,
        )

    with _timed({}) as meta:
        if cfg.gate.mode == "disabled":
            Evaluation.write_no_model(evaluation_dir, "gate.mode=disabled: the champion is not evaluated")
        elif champion_model_dir is not None:
            run(champion_model_dir, None)
        else:
            from intentops.registry import download_champion

            with tempfile.TemporaryDirectory(prefix="intentops-champion-") as scratch:
                found = download_champion(cfg, Path(scratch) / "model")
                if found is None:
                    reason = f"no champion of {cfg.registry.model_name} registered yet"
                    log.info("%s: the gate decides on thresholds alone", reason)
                    Evaluation.write_no_model(evaluation_dir, reason)
                else:
                    version, folder = found
                    run(folder, version.to_dict())
    return _evaluate_outputs(Evaluation(evaluation_dir), meta)


def gate(
    cfg: RunConfig,
    candidate_evaluation_dir: str | Path,
    champion_evaluation_dir: str | Path | None,
    decision_dir: str | Path,
    pipeline_run_id: str | None = None,
) -> tuple[bool, dict[str, Any]]:
    """A CPU-only decision over two evaluation artifacts: gate.json + gate.md; returns (passed, UI metadata)."""
    import mlflow

    from intentops.evaluation.gate import write_gate
    from intentops.tracking import stage_run

    with _timed({}) as meta:
        decision = decide_gate(candidate_evaluation_dir, champion_evaluation_dir, cfg.gate)
        result = GateResult(decision_dir)
        with stage_run("gate", cfg, pipeline_run_id, params={"mode": cfg.gate.mode}):
            write_gate(decision, result.path)
            mlflow.log_metrics(
                {"gate_passed": float(decision.passed), "gate_failed_checks": float(len(decision.failed))}
            )
            mlflow.log_artifact(str(result.json_path), artifact_path="gate")
            mlflow.log_artifact(str(result.report_md), artifact_path="gate")
            mlflow.set_tag("intentops.gate_passed", str(decision.passed).lower())
        meta.update(result.metadata())
    log.info("gate (%s): %s; %s", decision.mode, "passed" if decision.passed else "FAILED", "; ".join(decision.reasons))
    return decision.passed, meta


def decide_gate(
    candidate_evaluation_dir: str | Path, champion_evaluation_dir: str | Path | None, gate_cfg: GateConfig
) -> Any:
    """The gate's decision from the candidate's evaluation and the champion's (None or no_model.json: no champion)."""
    from intentops.evaluation.gate import decide

    candidate = Evaluation(candidate_evaluation_dir).metrics()
    champion = Evaluation(champion_evaluation_dir) if champion_evaluation_dir is not None else None
    champion_metrics = champion.metrics() if champion is not None and champion.evaluated else None
    decision = decide(
        candidate.to_dict(), champion_metrics.to_dict() if champion_metrics is not None else None, gate_cfg
    )
    registry = champion_metrics.model.get("registry") if champion_metrics is not None else None
    if registry:
        decision.champion = {**(decision.champion or {}), "registry": registry}
    return decision


# ---- registry --------------------------------------------------------------------------------------------------


def register_model(
    cfg: RunConfig,
    model_dir: str | Path,
    evaluation_dir: str | Path,
    decision_dir: str | Path,
    dataset_dir: str | Path,
    pipeline_run_id: str,
) -> tuple[Any, dict[str, Any]]:
    """Register the candidate (@challenger; @champion when the gate passed); returns (version, UI metadata)."""
    from intentops.registry import register_model as register

    with _timed({}) as meta:
        version = register(
            model_dir,
            cfg,
            pipeline_run_id=pipeline_run_id,
            eval_dir=evaluation_dir,
            gate_path=GateResult(decision_dir).json_path,
            dataset_manifest=dataset_dir,
        )
        meta.update(
            name=version.name,
            version=version.version,
            aliases=",".join(version.aliases),
            model_uri=version.model_uri,
            previous_champion=version.previous_champion or "",
        )
    return version, meta


@dataclass
class ChangeCheck:
    """check-changes' answer: whether to train, the JSON it writes, and its UI metadata."""

    changed: bool
    summary: dict[str, Any]
    metadata: dict[str, Any]


def check_changes(cfg: RunConfig, dataset_dir: str | Path) -> ChangeCheck:
    """Compare the dataset's `catalog_hash` / `dataset_hash` with the `@champion` version's tags.

    Changed when there is no champion or either hash differs.
    """
    from intentops.registry import champion_info

    with _timed({}) as meta:
        manifest = Dataset(dataset_dir).manifest()
        current = {"catalog_hash": manifest["catalog_hash"], "dataset_hash": manifest["dataset_hash"]}
        champion = champion_info(cfg)
        if champion is None:
            changed, reason = True, f"no champion of {cfg.registry.model_name} yet"
        else:
            differs = [key for key, value in current.items() if champion.tags.get(key) != value]
            changed = bool(differs)
            reason = (
                f"{' and '.join(differs)} differ from champion version {champion.version}"
                if differs
                else f"catalog and data unchanged since champion version {champion.version}"
            )
        summary = {
            "changed": changed,
            "reason": reason,
            "current": current,
            "champion": {
                "version": champion.version if champion is not None else None,
                "catalog_hash": champion.tags.get("catalog_hash") if champion is not None else None,
                "dataset_hash": champion.tags.get("dataset_hash") if champion is not None else None,
            },
        }
        meta.update(changed=changed, reason=reason, **current, champion_version=summary["champion"]["version"] or "")
    return ChangeCheck(changed, summary, meta)


# ---- serving ---------------------------------------------------------------------------------------------------


def deploy_vllm(cfg: RunConfig, version: str, pipeline_run_id: str | None = None) -> tuple[dict[str, Any], dict]:
    """Deploy a registered version on `serving.target`; returns (deployment summary, UI metadata).

    The `local` target's server is stopped after its smoke test, so a pipeline step never leaves a process behind.
    """
    import mlflow

    from intentops.serving.deploy import deploy, stop_local
    from intentops.tracking import stage_run

    target = cfg.serving.target
    local = target == "local"
    with _timed({}) as meta:
        with stage_run("deploy-vllm", cfg, pipeline_run_id, params={"target": target, "version": version}):
            try:
                result = deploy(cfg, version=version, target=target, record=not local)
            finally:
                stopped = stop_local() if local else None
            summary = {**result.to_dict(), "stopped_after_smoke_test": stopped is not None}
            mlflow.log_dict(summary, "deployment.json")
            mlflow.log_metrics({"smoke_valid_share": result.smoke.valid_share, "smoke_accuracy": result.smoke.accuracy})
        meta.update(
            target=target,
            version=version,
            endpoint=result.endpoint,
            smoke_valid_share=result.smoke.valid_share,
            smoke_accuracy=result.smoke.accuracy,
            previous_version=result.previous_version or "",
            stopped_after_smoke_test=stopped is not None,
        )
    return summary, meta
