"""grpo-stage1: model@sft + training split -> model@grpo1 and the rollout log (parquet)."""

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
        rollouts: Output folder with the parquet rollout log (sample_id, step, generation, completion, reward_*).
    """
    from intentops.artifacts import Dataset
    from intentops.config import load_config
    from intentops.stages import grpo

    cfg = load_config(config.path)
    out = grpo(cfg, "grpo1", Dataset(dataset.path).train, sft_model.path, model.path, rollouts.path, pipeline_run_id)
    model.metadata.update(out.model)
    rollouts.metadata.update(out.rollouts)
