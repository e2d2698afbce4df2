"""grpo-stage1: model@sft + training split -> model@grpo1 and the rollout log (rollouts.parquet)."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="grpo-stage1",
    cpu_request="8",
    cpu_limit="16",
    memory_request="64Gi",
    memory_limit="128Gi",
    gpu=True,
    retries=2,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def grpo_stage1(
    config: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    sft_model: dsl.Input[dsl.Model],
    pipeline_run_id: str,
    model: dsl.Output[dsl.Model],
    rollouts: dsl.Output[dsl.Dataset],
):
    """GRPO on the whole training split from the SFT weights (TRL GRPOTrainer, format + intent + parameter
    rewards). Every rollout's rewards are logged per sample and step: the input of hard-sample mining.

    Args:
        config: RunConfig YAML from resolve-config (`grpo.*`, `prompt.*`, `model.*`).
        dataset: validate-dataset output folder (train.jsonl).
        sft_model: sft-warmup output model.
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        model: Output model folder (stage grpo1).
        rollouts: Output folder with rollouts.parquet (sample_id, step, generation, completion, reward_*).
    """
    import time

    from intentops.config import load_config
    from intentops.training.grpo import run_grpo

    started = time.perf_counter()
    cfg = load_config(config.path)
    result = run_grpo(f"{dataset.path}/train.jsonl", sft_model.path, cfg, model.path, "grpo1", pipeline_run_id)
    result.move_rollouts(rollouts.path)
    model.metadata.update({**result.summary(), "stage_seconds": round(time.perf_counter() - started, 3)})
    rollouts.metadata.update({"rows": int(result.metrics.get("rollouts", 0)), "stage": result.stage})
