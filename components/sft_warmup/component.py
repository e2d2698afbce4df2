"""sft-warmup: dataset -> model@sft (TRL SFTTrainer, completion-only loss, full or LoRA)."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="sft-warmup",
    cpu_request="4",
    cpu_limit="8",
    memory_request="32Gi",
    memory_limit="64Gi",
    gpu=True,
    retries=2,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def sft_warmup(
    config: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    pipeline_run_id: str,
    model: dsl.Output[dsl.Model],
):
    """Supervised warm-up on the training split so GRPO starts from a model that already answers in format.

    The base model is `model.base_model` (folder or s3:// prefix), or the tiny random Qwen2 of the `tiny` profile.

    Args:
        config: RunConfig YAML from resolve-config (`model.*`, `prompt.*`, `sft.*`).
        dataset: validate-dataset output folder.
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        model: Output Hugging Face folder with the IntentOps model card and the catalog it was trained with.
    """
    from intentops.config import load_config
    from intentops.stages import sft_warmup as stage

    model.metadata.update(stage(load_config(config.path), dataset.path, model.path, pipeline_run_id))
