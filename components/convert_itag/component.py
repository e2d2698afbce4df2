"""convert-itag: iTAG export manifest -> records (records.jsonl, train.json, rejects.jsonl, report.json)."""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="convert-itag",
    cpu_request="500m",
    cpu_limit="1",
    memory_request="1Gi",
    memory_limit="2Gi",
    # The manifest is read from a URI whose content can change under the same name, so a cached result could be
    # stale data; conversion streams the file and costs seconds, so it always runs.
    caching=False,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def convert_itag(config: dsl.Input[dsl.Artifact], pipeline_run_id: str, records: dsl.Output[dsl.Dataset]):
    """Convert the iTAG manifest named by `data.manifest` into IntentOps records, accounting for every line.

    Fails the run when the reject rate exceeds `data.max_reject_rate`; rejects.jsonl says why for each line.

    Args:
        config: RunConfig YAML from resolve-config.
        pipeline_run_id: Groups the MLflow stage runs of one pipeline run.
        records: Output folder: records.jsonl, train.json (PAI QuickStart), rejects.jsonl, report.json.
    """
    import time

    import mlflow

    from intentops.config import load_config
    from intentops.data.itag import convert_manifest
    from intentops.io import sha256_file
    from intentops.tracking import stage_run

    started = time.perf_counter()
    cfg = load_config(config.path)
    with stage_run("convert-itag", cfg, pipeline_run_id, params={"manifest": cfg.data.manifest}):
        report = convert_manifest(cfg.data.manifest, records.path, cfg.data.max_reject_rate)
        mlflow.log_metrics(
            {"converted": report.converted, "rejected": report.rejected_total, "reject_rate": report.reject_rate}
        )
        mlflow.log_artifact(f"{records.path}/report.json")
    records.metadata.update(
        {
            "pipeline_run_id": pipeline_run_id,
            "manifest": cfg.data.manifest,
            "manifest_sha256": report.manifest_sha256,
            "records": report.converted,
            "rejected": report.rejected_total,
            "reject_rate": round(report.reject_rate, 4),
            "multi_intent": report.multi_intent,
            "intents": len(report.intents),
            "records_sha256": sha256_file(f"{records.path}/records.jsonl"),
            "stage_seconds": round(time.perf_counter() - started, 3),
        }
    )
    report.raise_for_status()
