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
    from intentops.config import load_config
    from intentops.stages import convert_itag as stage

    records.metadata.update(stage(load_config(config.path), records.path, pipeline_run_id))
