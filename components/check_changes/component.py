"""check-changes: compare the catalog and data hashes of this run's inputs with the champion's registry tags."""

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
    changes: dsl.Output[dsl.Artifact],
) -> bool:
    """Convert and split the inputs exactly as the training pipeline would, then compare the resulting
    `catalog_hash` and `dataset_hash` with the tags of the `@champion` version. Unchanged means nothing to train.

    Args:
        config: RunConfig YAML from resolve-config.
        changes: Output JSON: changed, reason, the current hashes and the champion's.

    Returns:
        True when there is no champion or either hash differs: gates the training sub-pipeline (a single return
        value, because kfp.local resolves conditions only on those). The reason is in the `changes` metadata.
    """
    import json
    import tempfile
    import time

    from intentops.catalog import load_catalog
    from intentops.config import load_config
    from intentops.data.itag import convert_manifest
    from intentops.data.split import prepare_dataset
    from intentops.io import read_json
    from intentops.registry import champion_info
    from intentops.storage import ensure_local

    started = time.perf_counter()
    cfg = load_config(config.path)
    catalog = load_catalog(ensure_local(cfg.data.catalog))
    with tempfile.TemporaryDirectory(prefix="check-changes-") as scratch:
        report = convert_manifest(cfg.data.manifest, f"{scratch}/records", cfg.data.max_reject_rate)
        report.raise_for_status()
        prepare_dataset(f"{scratch}/records/records.jsonl", catalog, cfg.data, f"{scratch}/dataset")
        manifest = read_json(f"{scratch}/dataset/manifest.json")
    current = {"catalog_hash": manifest["catalog_hash"], "dataset_hash": manifest["dataset_hash"]}
    champion = champion_info(cfg)
    if champion is None:
        changed, reason = True, f"no champion of {cfg.registry.model_name} yet"
    else:
        differs = [key for key, value in current.items() if champion.tags.get(key) != value]
        changed = bool(differs)
        reason = (
            f"{' and '.join(differs)} differ from champion version {champion.version}"
            if differs
            else f"catalog and data unchanged since champion version {champion.version}"
        )
    summary = {
        "changed": changed,
        "reason": reason,
        "current": current,
        "champion": {
            "version": champion.version if champion is not None else None,
            "catalog_hash": champion.tags.get("catalog_hash") if champion is not None else None,
            "dataset_hash": champion.tags.get("dataset_hash") if champion is not None else None,
        },
    }
    with open(changes.path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    changes.metadata.update(
        {
            "changed": changed,
            "reason": reason,
            **current,
            "champion_version": summary["champion"]["version"] or "",
            "stage_seconds": round(time.perf_counter() - started, 3),
        }
    )
    return changed
