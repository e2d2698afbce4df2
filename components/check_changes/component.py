"""check-changes: was this run's catalog and data already trained by a registered version (champion or not)?"""

from kfp import dsl

from components._common import TRAINER_IMAGE, StageSpec

SPEC = StageSpec(
    name="check-changes",
    cpu_request="500m",
    cpu_limit="1",
    memory_request="1Gi",
    memory_limit="2Gi",
    # Its answer depends on the registry and on data behind URIs, both of which change between runs.
    caching=False,
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def check_changes(
    config: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    changes: dsl.Output[dsl.Artifact],
) -> bool:
    """Look up the newest registered version tagged with this run's `catalog_hash` and `dataset_hash` (champion or
    a challenger that failed the gate). Found means nothing to train, unless `registry.force_retrain`.

    Args:
        config: RunConfig YAML from resolve-config (`registry.*`).
        dataset: validate-dataset output folder of this run (its manifest holds the hashes).
        changes: Output JSON: changed, reason, the current hashes, the version that trained them, the champion's.

    Returns:
        True when no version was trained on these hashes (or force_retrain): gates the training sub-pipeline (a single return
        value, because kfp.local resolves conditions only on those). The reason is in the `changes` metadata.
    """
    import json

    from intentops.config import load_config
    from intentops.stages import check_changes as stage

    result = stage(load_config(config.path), dataset.path)
    with open(changes.path, "w", encoding="utf-8") as handle:
        json.dump(result.summary, handle, indent=2)
    changes.metadata.update(result.metadata)
    return result.changed
