"""gate: candidate evaluation + champion evaluation (same test set) -> gate decision {passed, ...}. CPU only."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="gate",
    cpu_request="1",
    cpu_limit="2",
    memory_request="2Gi",
    memory_limit="4Gi",
    # Its champion input comes from a registry that can change between runs: never reuse a decision.
    caching=False,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def gate(
    config: dsl.Input[dsl.Artifact],
    evaluation: dsl.Input[dsl.Artifact],
    champion_evaluation: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    pipeline_run_id: str,
    decision: dsl.Output[dsl.Artifact],
    gate_report: dsl.Output[dsl.Markdown],
    gate_metrics: dsl.Output[dsl.Metrics],
) -> bool:
    """Decide whether the candidate may be promoted: absolute thresholds plus no regression against the champion,
    judged on paired per-record outcomes.

    Both evaluations come from the same records and decoding (evaluate-champion repeats the candidate's settings).
    The returned `Output` (passed) drives the pipeline's dsl.If; it is a single return value because kfp.local
    resolves conditions only on those.

    Args:
        config: RunConfig YAML from resolve-config (`gate.*`).
        evaluation: The candidate's evaluation (evaluate output folder).
        champion_evaluation: The champion's evaluation on the same test set, or a folder saying there is none.
        dataset: validate-dataset output folder (its catalog's domains add per-domain comparisons).
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        decision: Output folder: the gate decision (passed, mode, reasons, checks, comparisons) as JSON, Markdown, HTML.
        gate_report: The decision as Markdown for the KFP UI.
        gate_metrics: Scalar metrics for the KFP UI: verdict, and each comparison's difference, interval and p-value.

    Returns:
        Whether the candidate passed, i.e. whether deploy-vllm runs and register-model sets @champion.
    """
    import shutil

    from intentops.artifacts import GateResult
    from intentops.config import load_config
    from intentops.stages import gate as stage

    cfg = load_config(config.path)
    out = stage(cfg, evaluation.path, champion_evaluation.path, decision.path, pipeline_run_id, dataset.path)
    decision.metadata.update(out.metadata)
    for name, value in out.scalars.items():
        gate_metrics.log_metric(name, value)
    shutil.copyfile(GateResult(decision.path).report_md, gate_report.path)
    return out.passed
