"""validate-dataset: records -> validated, split dataset (splits, catalog, manifest)."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="validate-dataset",
    cpu_request="500m",
    cpu_limit="1",
    memory_request="1Gi",
    memory_limit="2Gi",
    caching=True,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def validate_dataset(
    config: dsl.Input[dsl.Artifact],
    records: dsl.Input[dsl.Dataset],
    pipeline_run_id: str,
    dataset: dsl.Output[dsl.Dataset],
    validation_report: dsl.Output[dsl.Markdown],
):
    """Check the records against the intent catalog, then split them per intent (seen and unseen intents).

    Fails the run on any validation error; the Markdown report lists every finding with the offending records.

    Args:
        config: RunConfig YAML from resolve-config (`data.*`).
        records: convert-itag output folder (records.jsonl).
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        dataset: Output folder: train/val/test splits, the catalog, the manifest (hashes, counts), the validation report.
        validation_report: The validation report as Markdown, shown in the KFP UI.
    """
    import shutil

    from intentops.artifacts import Dataset
    from intentops.config import load_config
    from intentops.stages import validate_dataset as stage

    dataset.metadata.update(stage(load_config(config.path), records.path, dataset.path, pipeline_run_id))
    shutil.copyfile(Dataset(dataset.path).validation_report, validation_report.path)
