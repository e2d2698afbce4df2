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
        rollouts: Output folder with the stage-2 rollout log (empty when stage 2 was skipped).
    """
    from intentops.artifacts import HardSet
    from intentops.config import load_config
    from intentops.stages import grpo

    cfg = load_config(config.path)
    out = grpo(cfg, "grpo2", HardSet(hard_set.path).train, grpo1_model.path, model.path, rollouts.path, pipeline_run_id)
    model.metadata.update(out.model)
    rollouts.metadata.update(out.rollouts)
