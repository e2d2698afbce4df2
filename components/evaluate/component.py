"""evaluate: candidate model + dataset -> evaluation (metrics, predictions, reports, confusion matrix)."""

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
        evaluation: Output folder: metrics, per-record predictions, Markdown and HTML reports, confusion matrix.
        metrics: Headline scalar metrics for the KFP run comparison view.
        confusion: Intent confusion matrix for the KFP UI.
        report: Evaluation report (Markdown).
        report_html: Evaluation report (HTML, confusion matrix inlined).
    """
    from intentops.config import load_config
    from intentops.stages import evaluate as stage

    out = stage(load_config(config.path), model.path, dataset.path, evaluation.path, pipeline_run_id)
    out.publish(evaluation, metrics, confusion, report, report_html)
