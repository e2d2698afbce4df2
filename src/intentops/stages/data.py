"""Data stages: convert-itag, validate-dataset, and check-changes (retrain only when the inputs changed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intentops.artifacts import (
    CONVERT_REPORT_FILE,
    DATASET_MANIFEST,
    Dataset,
    Records,
)
from intentops.config import RunConfig
from intentops.stages._timing import timed as _timed

log = logging.getLogger(__name__)


def convert_itag(cfg: RunConfig, records_dir: str | Path, pipeline_run_id: str | None = None) -> dict[str, Any]:
    """iTAG manifest (`data.manifest`) -> records; fails when the reject rate exceeds `data.max_reject_rate`."""
    import mlflow

    from intentops.data.itag import convert_manifest
    from intentops.io import sha256_file
    from intentops.tracking import stage_run

    records = Records(records_dir)
    with _timed({}) as meta:
        with stage_run("convert-itag", cfg, pipeline_run_id, params={"manifest": cfg.data.manifest}):
            report = convert_manifest(cfg.data.manifest, records.path, cfg.data.max_reject_rate)
            mlflow.log_metrics(
                {"converted": report.converted, "rejected": report.rejected_total, "reject_rate": report.reject_rate}
            )
            mlflow.log_artifact(str(records.file(CONVERT_REPORT_FILE)))
        meta.update(
            pipeline_run_id=pipeline_run_id or "",
            manifest=cfg.data.manifest,
            manifest_sha256=report.manifest_sha256,
            records=report.converted,
            rejected=report.rejected_total,
            reject_rate=round(report.reject_rate, 4),
            multi_intent=report.multi_intent,
            intents=len(report.intents),
            records_sha256=sha256_file(records.records),
        )
    report.raise_for_status()
    return meta


def validate_dataset(
    cfg: RunConfig, records_dir: str | Path, dataset_dir: str | Path, pipeline_run_id: str | None = None
) -> dict[str, Any]:
    """Records -> validated, split dataset; fails on any validation error (the report lists the records)."""
    import mlflow

    from intentops.catalog import load_catalog
    from intentops.data.split import prepare_dataset
    from intentops.storage import ensure_local
    from intentops.tracking import stage_run

    dataset = Dataset(dataset_dir)
    with _timed({}) as meta:
        catalog = load_catalog(ensure_local(cfg.data.catalog))
        with stage_run("validate-dataset", cfg, pipeline_run_id, params={"catalog": cfg.data.catalog}):
            prepare_dataset(Records(records_dir).records, catalog, cfg.data, dataset.path)
            mlflow.log_dict(dataset.manifest(), f"dataset/{DATASET_MANIFEST}")
            mlflow.log_artifact(str(dataset.validation_report), artifact_path="dataset")
        meta.update(intents=len(catalog.names), **dataset.metadata())
    return meta


@dataclass
class ChangeCheck:
    """check-changes' answer: whether to train, the JSON it writes, and its UI metadata."""

    changed: bool
    summary: dict[str, Any]
    metadata: dict[str, Any]


def check_changes(cfg: RunConfig, dataset_dir: str | Path) -> ChangeCheck:
    """Compare the dataset's `catalog_hash` / `dataset_hash` with the `@champion` version's tags.

    Changed when there is no champion or either hash differs.
    """
    from intentops.registry import champion_info

    with _timed({}) as meta:
        manifest = Dataset(dataset_dir).manifest()
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
        meta.update(changed=changed, reason=reason, **current, champion_version=summary["champion"]["version"] or "")
    return ChangeCheck(changed, summary, meta)
