"""validate-dataset: records -> validated, split dataset (train/val/test.jsonl, catalog.yaml, manifest.json)."""

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
        dataset: Output folder: train/val/test.jsonl, catalog.yaml, manifest.json, validation/report.{json,md}.
        validation_report: The validation report as Markdown, shown in the KFP UI.
    """
    import shutil
    import time

    import mlflow

    from intentops.catalog import load_catalog
    from intentops.config import load_config
    from intentops.data.split import prepare_dataset
    from intentops.io import read_json
    from intentops.storage import ensure_local
    from intentops.tracking import stage_run

    started = time.perf_counter()
    cfg = load_config(config.path)
    catalog = load_catalog(ensure_local(cfg.data.catalog))
    with stage_run("validate-dataset", cfg, pipeline_run_id, params={"catalog": cfg.data.catalog}):
        prepare_dataset(f"{records.path}/records.jsonl", catalog, cfg.data, dataset.path)
        manifest = read_json(f"{dataset.path}/manifest.json")
        mlflow.log_dict(manifest, "dataset/manifest.json")
        mlflow.log_artifact(f"{dataset.path}/validation/report.md", artifact_path="dataset")
    shutil.copyfile(f"{dataset.path}/validation/report.md", validation_report.path)
    counts = manifest.get("counts", {})
    dataset.metadata.update(
        {
            "dataset_hash": manifest.get("dataset_hash", ""),
            "catalog_hash": manifest.get("catalog_hash", ""),
            "intents": len(catalog.names),
            **{f"{split}_records": counts[split]["total"] for split in ("train", "val", "test") if split in counts},
            "unseen_intents": len(manifest.get("unseen_intents", [])),
            "stage_seconds": round(time.perf_counter() - started, 3),
        }
    )
