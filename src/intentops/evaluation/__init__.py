"""Evaluate a model folder on a dataset split, and decide whether it may be promoted.

`evaluate_model` writes the evaluation artifact (`intentops.artifacts.Evaluation`) in one atomic step and logs the
scalar metrics and the files to the stage's MLflow run. Deciding over two evaluations is `intentops.stages.gate`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from intentops.artifacts import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    REPORT_HTML,
    REPORT_MD,
    Dataset,
    Evaluation,
    ModelFolder,
)
from intentops.catalog import load_catalog
from intentops.config import RunConfig
from intentops.evaluation.gate import EvaluationResult, GateDecision, decide, write_gate
from intentops.io import atomic_write_text, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

__all__ = ["EvaluationResult", "GateDecision", "decide", "evaluate_model", "load_split", "write_gate"]


def load_split(dataset_dir: str | Path, split: str, max_samples: int = 0) -> list[dict[str, Any]]:
    """The records of one dataset split (the first `max_samples` when > 0, so repeated runs see the same ones)."""
    path = Dataset(dataset_dir).split(split)
    records = list(read_jsonl(path))
    if max_samples:
        records = records[:max_samples]
    if not records:
        raise ValueError(f"{path}: no records to evaluate")
    for index, record in enumerate(records, start=1):
        if not isinstance(record.get("text"), str) or not isinstance(record.get("output"), str):
            raise ValueError(f"{path}:{index}: record {record.get('id', '?')!r} needs 'text' and 'output' strings")
    return records


def _dataset_info(dataset_dir: Path, split: str, n_evaluated: int, max_samples: int) -> dict[str, Any]:
    manifest = Dataset(dataset_dir).manifest()
    return {
        "dir": str(dataset_dir),
        "split": split,
        "hash": manifest.get("dataset_hash"),
        "catalog_hash": manifest.get("catalog_hash"),
        "max_samples": max_samples,
        "n": n_evaluated,
    }


UNCONSTRAINED_FIGURES = ("intent_accuracy", "param_accuracy", "exact_match", "format_error_rate", "macro_f1")


def _unconstrained_figures(predictor: Any, records: list[dict[str, Any]], labels: list[str]) -> dict[str, float]:
    """The headline figures of the same model decoding freely, reported beside the constrained (served) ones."""
    from intentops.evaluation.metrics import compute_metrics

    free = predictor.unconstrained()
    log.info("evaluating again without the catalog grammar (%s), for comparison", free.name)
    calls = [p.call for p in free.predict([record["text"] for record in records])]
    metrics = compute_metrics(records, calls, catalog_names=labels)
    return {key: metrics[key] for key in UNCONSTRAINED_FIGURES if isinstance(metrics.get(key), int | float)}


def evaluate_model(
    model_dir: str | Path,
    dataset_dir: str | Path,
    cfg: RunConfig,
    out_dir: str | Path,
    pipeline_run_id: str | None = None,
    split: str = "test",
    *,
    stage: str = "evaluate",
    registry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict every record of `split` with the model, score it, write the evaluation artifact, log it to MLflow.

    The prompt is the one the model was trained with (`PromptBuilder.from_model_dir`); if the dataset's catalog has
    changed since training, the dataset's catalog is shown instead, since the tools are in the prompt, which is
    how a catalog change is meant to work without retraining. `registry` (the model's registered version, if any)
    is recorded under `model.registry`. Returns the metrics dict it writes.
    """
    import mlflow

    from intentops.evaluation.baselines import run_baselines
    from intentops.evaluation.metrics import metrics_from_outcomes, score_all
    from intentops.evaluation.predictors import make_predictor
    from intentops.evaluation.report import (
        CONFUSION_PNG,
        plot_confusion_matrix,
        render_html,
        render_markdown,
        sample_errors,
        scalar_metrics,
    )
    from intentops.models import read_model_card
    from intentops.prompting import PromptBuilder
    from intentops.tracking import stage_run

    model_dir, dataset_dir = Path(model_dir).resolve(), Path(dataset_dir).resolve()
    eval_cfg = cfg.evaluation
    card = read_model_card(model_dir)
    records = load_split(dataset_dir, split, eval_cfg.max_samples)
    dataset_catalog = load_catalog(Dataset(dataset_dir).catalog_path)
    builder = PromptBuilder.from_model_dir(model_dir)
    catalog_changed = builder.catalog.content_hash != dataset_catalog.content_hash
    if catalog_changed:
        log.warning(
            "%s was trained with catalog %s but %s has catalog %s: prompting with the dataset's catalog",
            model_dir,
            builder.catalog.content_hash,
            dataset_dir,
            dataset_catalog.content_hash,
        )
        builder = PromptBuilder(dataset_catalog, builder.cfg, builder.examples)

    params = {
        "model_dir": str(model_dir),
        "dataset_dir": str(dataset_dir),
        "split": split,
        "decoding": eval_cfg.decoding,
        "constrained": eval_cfg.constrained,
        "copy_arguments": eval_cfg.copy_arguments,
        "n": len(records),
    }
    with stage_run(stage, cfg, pipeline_run_id, params=params) as run:
        predictor = make_predictor(eval_cfg.decoding, model_dir, cfg, builder)
        log.info("evaluating %s on %d %s records with %s", model_dir, len(records), split, predictor.name)
        start = time.perf_counter()
        predictions = predictor.predict([record["text"] for record in records])
        elapsed = time.perf_counter() - start

        outcomes = score_all(records, [p.call for p in predictions], [p.raw for p in predictions])
        metrics = metrics_from_outcomes(
            outcomes,
            catalog_names=builder.labels,
            latencies_s=[p.latency_s for p in predictions],
            elapsed_s=elapsed,
            confidences=[p.confidence for p in predictions] if predictor.name == "label_scoring" else None,
        )
        metrics["decoding"] = predictor.name
        metrics["constrained"] = predictor.constrained
        metrics["copy_arguments"] = predictor.copy_arguments
        if eval_cfg.constrained:
            metrics["unconstrained"] = _unconstrained_figures(predictor, records, builder.labels)
        metrics["model"] = {
            "dir": str(model_dir),
            "content_hash": ModelFolder(model_dir).content_hash(),
            "stage": card.get("stage"),
            "base_model": card.get("base_model"),
            "catalog_hash": card.get("catalog_hash"),
            "dataset_hash": card.get("dataset_hash"),
            "prompt_catalog_changed": catalog_changed,
            **({"registry": registry} if registry else {}),
        }
        metrics["dataset"] = _dataset_info(dataset_dir, split, len(records), eval_cfg.max_samples)
        if eval_cfg.baselines:
            metrics["baselines"] = run_baselines(load_split(dataset_dir, "train"), records, seed=cfg.data.seed)
        metrics["mlflow_run_id"] = run.info.run_id
        mlflow.set_tag("intentops.decoding", predictor.name)

        rows = [
            {
                "id": record.get("id", index),
                "text": record["text"],
                "gold": record["output"],
                "gold_intent": outcome.gold_intent,
                "lang": record.get("lang"),
                "seen": record.get("seen"),
                **prediction.to_dict(),
                "format_ok": outcome.format_ok,
                "intent_ok": outcome.intent_ok,
                "params_ok": outcome.params_ok,
                "exact_ok": outcome.exact_ok,
            }
            for index, (record, prediction, outcome) in enumerate(zip(records, predictions, outcomes, strict=True))
        ]
        errors = sample_errors(records, rows)
        with Evaluation.writing(out_dir) as tmp:
            write_json(tmp / METRICS_FILE, metrics)
            write_jsonl(tmp / PREDICTIONS_FILE, rows)
            png = plot_confusion_matrix(metrics, tmp / CONFUSION_PNG)
            atomic_write_text(tmp / REPORT_MD, render_markdown(metrics, errors))
            atomic_write_text(tmp / REPORT_HTML, render_html(metrics, errors, png_path=png))
        mlflow.log_metrics(scalar_metrics(metrics))
        if "unconstrained" in metrics:
            mlflow.log_metrics({f"unconstrained_{k}": v for k, v in metrics["unconstrained"].items()})
        mlflow.log_artifacts(str(out_dir), artifact_path=stage)
    log.info(
        "%s: intent accuracy %.4f, parameter accuracy %.4f, format errors %.4f (%d records, %.1f utt/s)",
        stage,
        metrics["intent_accuracy"],
        metrics["param_accuracy"],
        metrics["format_error_rate"],
        metrics["n"],
        metrics["latency"]["throughput_per_s"] or 0.0,
    )
    return metrics
