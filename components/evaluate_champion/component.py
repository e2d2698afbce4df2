"""evaluate-champion: the registry's @champion, evaluated exactly as the candidate was -> champion evaluation."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="evaluate-champion",
    cpu_request="4",
    cpu_limit="8",
    memory_request="32Gi",
    memory_limit="64Gi",
    gpu=True,
    # The champion is whatever the registry says now, which can change between runs: never reuse a result.
    caching=False,
    retries=1,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def evaluate_champion(
    config: dsl.Input[dsl.Artifact],
    candidate_evaluation: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    pipeline_run_id: str,
    evaluation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    confusion: dsl.Output[dsl.ClassificationMetrics],
    report: dsl.Output[dsl.Markdown],
    report_html: dsl.Output[dsl.HTML],
):
    """Download `@champion` of `registry.model_name` and run the evaluate stage on it with the candidate's split,
    sample limit and decoding, so the gate compares two models on the very same records. With no champion yet (or
    `gate.mode=disabled`) the output folder says so and the gate decides on thresholds alone.

    Args:
        config: RunConfig YAML from resolve-config (`registry.*`, `evaluation.*`, `gate.mode`).
        candidate_evaluation: The candidate's evaluation (its test-set settings are repeated).
        dataset: validate-dataset output folder (the same test split).
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        evaluation: Output evaluation folder of the champion (or the reason there is none).
        metrics: The champion's headline scalar metrics for the KFP run comparison view.
        confusion: The champion's intent confusion matrix.
        report: The champion's evaluation report (Markdown).
        report_html: The champion's evaluation report (HTML).
    """
    from intentops.config import load_config
    from intentops.stages import evaluate_champion as stage

    cfg = load_config(config.path)
    out = stage(cfg, candidate_evaluation.path, dataset.path, evaluation.path, pipeline_run_id)
    out.publish(evaluation, metrics, confusion, report, report_html)
