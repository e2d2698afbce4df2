"""Evaluation stages: evaluate (the candidate), evaluate-champion (the same on @champion), and the gate."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intentops.artifacts import (
    Dataset,
    Evaluation,
    GateResult,
)
from intentops.config import GateConfig, RunConfig
from intentops.stages._timing import timed as _timed

log = logging.getLogger(__name__)


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
    """Score a model on a dataset split: metrics, per-record predictions, reports, confusion matrix."""
    with _timed({}) as meta:
        from intentops.evaluation import evaluate_model
        from intentops.stages.training import resolved_model

        model_dir = resolved_model(cfg, model_dir)
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
    if candidate.constrained is not None:
        champion_cfg.evaluation.constrained = candidate.constrained
    if candidate.copy_arguments is not None:
        champion_cfg.evaluation.copy_arguments = candidate.copy_arguments
    champion_cfg.evaluation.baselines = False  # same records: the candidate's report already has them

    def run(model_dir: str | Path, registry: dict[str, Any] | None) -> None:
        from intentops.evaluation import evaluate_model

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
                    Evaluation.write_no_model(evaluation_dir, reason, registry={"version": ""})
                else:
                    version, folder = found
                    run(folder, version.to_dict())
    return _evaluate_outputs(Evaluation(evaluation_dir), meta)


@dataclass
class GateOutputs:
    """What the gate task hands on: the verdict, the decision's UI metadata, its scalar metrics."""

    passed: bool
    metadata: dict[str, Any]
    scalars: dict[str, float]


def gate(
    cfg: RunConfig,
    candidate_evaluation_dir: str | Path,
    champion_evaluation_dir: str | Path | None,
    decision_dir: str | Path,
    pipeline_run_id: str | None = None,
    dataset_dir: str | Path | None = None,
) -> GateOutputs:
    """A CPU-only decision over two evaluation artifacts, written as JSON, Markdown and HTML.

    `dataset_dir` supplies the catalog, whose domains add per-domain comparisons.
    """
    with _timed({}) as meta:
        import mlflow

        from intentops.artifacts import GATE_HTML
        from intentops.catalog import load_catalog
        from intentops.evaluation.gate import write_gate
        from intentops.evaluation.gate_report import gate_scalar_metrics
        from intentops.tracking import stage_run

        catalog = load_catalog(Dataset(dataset_dir).catalog_path) if dataset_dir is not None else None
        decision = decide_gate(candidate_evaluation_dir, champion_evaluation_dir, cfg.gate, catalog)
        result = GateResult(decision_dir)
        scalars = gate_scalar_metrics(decision)
        with stage_run("gate", cfg, pipeline_run_id, params={"mode": cfg.gate.mode}):
            write_gate(decision, result.path)
            mlflow.log_metrics(scalars)
            for path in (result.json_path, result.report_md, result.file(GATE_HTML)):
                mlflow.log_artifact(str(path), artifact_path="gate")
            mlflow.set_tag("intentops.gate_passed", str(decision.passed).lower())
        meta.update(result.metadata())
    log.info("gate (%s): %s; %s", decision.mode, "passed" if decision.passed else "FAILED", "; ".join(decision.reasons))
    return GateOutputs(decision.passed, meta, scalars)


def decide_gate(
    candidate_evaluation_dir: str | Path,
    champion_evaluation_dir: str | Path | None,
    gate_cfg: GateConfig,
    catalog: Any = None,
) -> Any:
    """The gate's decision from the candidate's evaluation and the champion's (None or no_model.json: no champion)."""
    from intentops.evaluation.gate import decide

    candidate = Evaluation(candidate_evaluation_dir)
    candidate.check()
    candidate.metrics()  # the gate re-scores predictions, but an edited or corrupted metrics.json fails it closed
    champion = Evaluation(champion_evaluation_dir) if champion_evaluation_dir is not None else None
    registry = None
    if champion is not None and not champion.evaluated:
        log.info("no champion evaluation (%s): deciding on thresholds alone", champion.no_model_reason())
        registry = champion.no_model_registry()
        champion = None
    if champion is not None:
        champion.check()
        registry = champion.metrics().model.get("registry")
    decision = decide(candidate.path, champion.path if champion is not None else None, gate_cfg, catalog)
    if registry and champion is not None:
        decision.champion = {**(decision.champion or {}), "registry": registry}
    if registry is not None:
        # Registration moves @champion only while it is still the champion this decision was made against.
        decision.expected_champion = str(registry.get("version") or "")
    return decision
