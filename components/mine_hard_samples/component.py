"""mine-hard-samples: stage-1 rollouts + training split -> hard set for GRPO stage 2 (RCS)."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="mine-hard-samples",
    cpu_request="1",
    cpu_limit="2",
    memory_request="2Gi",
    memory_limit="4Gi",
    caching=True,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def mine_hard_samples(
    config: dsl.Input[dsl.Artifact],
    rollouts: dsl.Input[dsl.Dataset],
    dataset: dsl.Input[dsl.Dataset],
    pipeline_run_id: str,
    hard_set: dsl.Output[dsl.Dataset],
    mining_report: dsl.Output[dsl.Markdown],
):
    """Score every training sample by its completions in the stage-1 scoring pass (every record, G each); keep
    those whose completions were not all perfect (`mining.hard_threshold`, `mining.hard_includes_params`), mixed
    with `mining.easy_per_hard` easy samples.

    Args:
        config: RunConfig YAML from resolve-config (`mining.*`).
        rollouts: grpo-stage1 rollouts folder (`intentops.artifacts.Rollouts`: mining reads its scoring pass).
        dataset: validate-dataset output folder (train.jsonl: the samples the rollouts refer to).
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        hard_set: Output folder: train.jsonl (subset of the stage-1 training set), mining_report.{json,md}.
        mining_report: mining_report.md for the KFP UI.
    """
    import shutil

    from intentops.artifacts import HardSet
    from intentops.config import load_config
    from intentops.stages import mine_hard_samples as stage

    cfg = load_config(config.path)
    hard_set.metadata.update(stage(cfg, rollouts.path, dataset.path, hard_set.path, pipeline_run_id))
    shutil.copyfile(HardSet(hard_set.path).report_md, mining_report.path)
