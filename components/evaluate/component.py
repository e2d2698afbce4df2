"""evaluate: candidate model + dataset -> evaluation (metrics.json, predictions, reports, confusion matrix)."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="evaluate",
    cpu_request="4",
    cpu_limit="8",
    memory_request="32Gi",
    memory_limit="64Gi",
    gpu=True,
    caching=True,
    retries=1,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def evaluate(
    config: dsl.Input[dsl.Artifact],
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    pipeline_run_id: str,
    evaluation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    confusion: dsl.Output[dsl.ClassificationMetrics],
    report: dsl.Output[dsl.Markdown],
    report_html: dsl.Output[dsl.HTML],
):
    """Score the candidate on the test split: intent and parameter accuracy (first call's intent / intent and arguments), macro-F1,
    per-intent recall, format validity, seen/unseen and per-language accuracy, latency, plus baselines.

    Args:
        config: RunConfig YAML from resolve-config (`evaluation.*`).
        model: Candidate model folder (grpo-stage2 output).
        dataset: validate-dataset output folder (test.jsonl).
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        evaluation: Output folder: metrics.json, predictions.jsonl, report.md, report.html, confusion_matrix.png.
        metrics: Headline scalar metrics for the KFP run comparison view.
        confusion: Intent confusion matrix for the KFP UI.
        report: Evaluation report (Markdown).
        report_html: Evaluation report (HTML, confusion matrix inlined).
    """
    import shutil
    import time

    from intentops.config import load_config
    from intentops.evaluation import evaluate_model
    from intentops.evaluation.report import classification_metrics_payload, scalar_metrics

    started = time.perf_counter()
    cfg = load_config(config.path)
    result = evaluate_model(model.path, dataset.path, cfg, evaluation.path, pipeline_run_id)
    for name, value in scalar_metrics(result).items():
        metrics.log_metric(name, value)
    confusion.log_confusion_matrix(**classification_metrics_payload(result))
    shutil.copyfile(f"{evaluation.path}/report.md", report.path)
    shutil.copyfile(f"{evaluation.path}/report.html", report_html.path)
    evaluation.metadata.update(
        {
            "intent_accuracy": result["intent_accuracy"],
            "param_accuracy": result["param_accuracy"],
            "format_error_rate": result["format_error_rate"],
            "n": result["n"],
            "decoding": result.get("decoding", ""),
            "dataset_hash": (result.get("dataset") or {}).get("hash") or "",
            "mlflow_run_id": result.get("mlflow_run_id", ""),
            "stage_seconds": round(time.perf_counter() - started, 3),
        }
    )
