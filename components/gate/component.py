"""gate: candidate evaluation (+ the champion evaluated now on the same test set) -> gate.json {passed, ...}."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="gate",
    cpu_request="4",
    cpu_limit="8",
    memory_request="32Gi",
    memory_limit="64Gi",
    # Evaluates the current champion, which the registry can change between runs: never reuse a decision.
    gpu=True,
    caching=False,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def gate(
    config: dsl.Input[dsl.Artifact],
    evaluation: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    pipeline_run_id: str,
    decision: dsl.Output[dsl.Artifact],
    gate_report: dsl.Output[dsl.Markdown],
    gate_metrics: dsl.Output[dsl.Metrics],
) -> bool:
    """Decide whether the candidate may be promoted: absolute thresholds plus no regression against the champion.

    The champion (`@champion` in the registry, if any) is downloaded and evaluated on the candidate's test set in
    this step, so both numbers come from the same records and decoding. The returned `Output` (passed) drives the
    pipeline's dsl.If; it is a single return value because kfp.local resolves conditions only on those.

    Args:
        config: RunConfig YAML from resolve-config (`gate.*`, `registry.*`).
        evaluation: evaluate output folder (metrics.json).
        dataset: validate-dataset output folder (the same test split).
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        decision: Output folder: gate.json (passed, mode, reasons, checks, comparisons with the champion), gate.md, gate.html.
        gate_report: gate.md for the KFP UI.
        gate_metrics: Scalar metrics for the KFP UI: verdict, and each comparison's difference, interval and p-value.

    Returns:
        Whether the candidate passed, i.e. whether register-model and deploy-vllm run.
    """
    import shutil
    import tempfile
    import time

    from intentops.config import load_config
    from intentops.evaluation import run_gate
    from intentops.evaluation.report import gate_scalar_metrics
    from intentops.registry import download_champion

    started = time.perf_counter()
    cfg = load_config(config.path)
    with tempfile.TemporaryDirectory(prefix="champion-") as scratch:
        champion = download_champion(cfg, f"{scratch}/model")
        champion_version, champion_dir = champion if champion is not None else (None, None)
        result = run_gate(
            evaluation.path,
            dataset.path,
            cfg,
            decision.path,
            champion_dir,
            pipeline_run_id,
            champion_info=champion_version.to_dict() if champion_version is not None else None,
        )
    shutil.copyfile(f"{decision.path}/gate.md", gate_report.path)
    for name, value in gate_scalar_metrics(result).items():
        gate_metrics.log_metric(name, value)
    decision.metadata.update(
        {
            "passed": result.passed,
            "mode": result.mode,
            "failed_checks": len(result.failed),
            "reasons": "; ".join(result.reasons),
            "champion_version": champion_version.version if champion_version is not None else "",
            "stage_seconds": round(time.perf_counter() - started, 3),
        }
    )
    return result.passed
