"""grpo-stage2: model@grpo1 + hard set -> candidate model (stage-1 model passed on when nothing is hard)."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="grpo-stage2",
    cpu_request="8",
    cpu_limit="16",
    memory_request="64Gi",
    memory_limit="128Gi",
    gpu=True,
    retries=2,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def grpo_stage2(
    config: dsl.Input[dsl.Artifact],
    hard_set: dsl.Input[dsl.Dataset],
    grpo1_model: dsl.Input[dsl.Model],
    pipeline_run_id: str,
    model: dsl.Output[dsl.Model],
    rollouts: dsl.Output[dsl.Dataset],
):
    """Second GRPO stage on the mined hard samples (reward-based curriculum sampling), from the
    stage-1 weights. When mining found nothing hard, the stage-1 model is passed on unchanged and says so.

    Args:
        config: RunConfig YAML from resolve-config (`grpo.*`).
        hard_set: mine-hard-samples output folder (train.jsonl).
        grpo1_model: grpo-stage1 output model.
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        model: Output candidate model folder (stage grpo2).
        rollouts: Output folder with the stage-2 rollouts.parquet (empty when stage 2 was skipped).
    """
    import time

    from intentops.config import load_config
    from intentops.training.grpo import run_grpo

    started = time.perf_counter()
    cfg = load_config(config.path)
    result = run_grpo(f"{hard_set.path}/train.jsonl", grpo1_model.path, cfg, model.path, "grpo2", pipeline_run_id)
    result.move_rollouts(rollouts.path)
    model.metadata.update({**result.summary(), "stage_seconds": round(time.perf_counter() - started, 3)})
    rollouts.metadata.update({"rows": int(result.metrics.get("rollouts", 0)), "stage": result.stage})
