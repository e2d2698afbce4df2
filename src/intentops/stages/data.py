"""Data stages: convert-itag, validate-dataset, and check-changes (retrain only when the inputs changed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.artifacts import (
    CONVERT_REPORT_FILE,
    DATASET_MANIFEST,
    Dataset,
    Records,
)
from intentops.config import RunConfig
from intentops.stages._timing import timed as _timed

if TYPE_CHECKING:
    from intentops.registry import RegisteredVersion

log = logging.getLogger(__name__)


def convert_itag(cfg: RunConfig, records_dir: str | Path, pipeline_run_id: str | None = None) -> dict[str, Any]:
    """iTAG manifest (`data.manifest`) -> records; fails when the reject rate exceeds `data.max_reject_rate`."""

    records = Records(records_dir)
    with _timed({}) as meta:
        import mlflow

        from intentops.data.itag import convert_manifest
        from intentops.io import sha256_file
        from intentops.tracking import stage_run

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

    dataset = Dataset(dataset_dir)
    with _timed({}) as meta:
        import mlflow

        from intentops.catalog import load_catalog
        from intentops.data.split import prepare_dataset
        from intentops.storage import ensure_local
        from intentops.tracking import stage_run

        catalog = load_catalog(ensure_local(cfg.data.catalog))
        with stage_run("validate-dataset", cfg, pipeline_run_id, params={"catalog": cfg.data.catalog}):
            copied = cfg.evaluation.constrained and cfg.evaluation.copy_arguments
            prepare_dataset(Records(records_dir).records, catalog, cfg.data, dataset.path, copied_arguments=copied)
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


SHORT_HASH = 12
MAX_REASONS_CHARS = 300


def _outcome(version: RegisteredVersion) -> str:
    """How a trained version fared, in the words of its registration tags."""
    from intentops.registry import CHAMPION

    passed = version.tags.get("gate_passed")
    if passed == "true":
        outcome = "gate passed"
    elif passed == "false":
        reasons = version.tags.get("gate_reasons") or "no reasons recorded"
        if len(reasons) > MAX_REASONS_CHARS:
            reasons = reasons[: MAX_REASONS_CHARS - 3] + "..."
        outcome = f"gate failed: {reasons}"
    else:
        outcome = "no gate decision"
    return f"{outcome}, the champion" if CHAMPION in version.aliases else outcome


def _decide(
    cfg: RunConfig, current: dict[str, str]
) -> tuple[bool, str, RegisteredVersion | None, RegisteredVersion | None]:
    """(changed, reason, the version that trained these hashes, the champion) from the registry."""
    from intentops.registry import REGISTRATION_COMPLETE, REGISTRATION_TAG, champion_info, find_version_by_tags

    champion = champion_info(cfg)
    trained = find_version_by_tags(cfg, **current, **{REGISTRATION_TAG: REGISTRATION_COMPLETE})
    if trained is None and champion is not None and all(champion.tags.get(k) == v for k, v in current.items()):
        trained = champion  # a champion whose registration was interrupted after its alias moved
    hashes = f"data {current['dataset_hash'][:SHORT_HASH]} and catalog {current['catalog_hash'][:SHORT_HASH]}"
    if trained is not None:
        changed = cfg.registry.force_retrain
        why = "retraining because registry.force_retrain is set" if changed else "nothing changed"
        run = trained.tags.get("pipeline_run_id", "?")
        by = f"version {trained.version} (pipeline run {run}, {_outcome(trained)})"
        return changed, f"{hashes} were already trained by {by}; {why}", trained, champion
    if champion is None:
        return True, f"no champion of {cfg.registry.model_name} yet", None, None
    keys = {"catalog": "catalog_hash", "data": "dataset_hash"}
    differs = [name for name, key in keys.items() if champion.tags.get(key) != current[key]]
    since = f"changed since champion version {champion.version}"
    return True, f"{' and '.join(differs)} {since} (no version was trained on {hashes})", None, champion


def check_changes(cfg: RunConfig, dataset_dir: str | Path) -> ChangeCheck:
    """Train only when no registered version was trained on this dataset's `catalog_hash` and `dataset_hash`.

    The comparison is with the newest completely registered version carrying both hashes, whatever its gate said:
    comparing with `@champion` alone would retrain the same data on every scheduled run after a failed gate.
    `registry.force_retrain` trains anyway (and says so).
    """
    with _timed({}) as meta:
        dataset = Dataset(dataset_dir)
        manifest = dataset.manifest()
        if not manifest.get("catalog_hash"):
            raise ValueError(f"{dataset.path / DATASET_MANIFEST}: no 'catalog_hash' field")
        current = {"catalog_hash": str(manifest["catalog_hash"]), "dataset_hash": str(manifest["dataset_hash"])}
        changed, reason, trained, champion = _decide(cfg, current)
        summary = {
            "changed": changed,
            "reason": reason,
            "current": current,
            "last_trained": None
            if trained is None
            else {
                "version": trained.version,
                "pipeline_run_id": trained.tags.get("pipeline_run_id"),
                "gate_passed": trained.tags.get("gate_passed"),
                "aliases": list(trained.aliases),
            },
            "champion": {
                "version": champion.version if champion is not None else None,
                "catalog_hash": champion.tags.get("catalog_hash") if champion is not None else None,
                "dataset_hash": champion.tags.get("dataset_hash") if champion is not None else None,
            },
        }
        meta.update(
            changed=changed,
            reason=reason,
            **current,
            champion_version=champion.version if champion is not None else "",
            last_trained_version=trained.version if trained is not None else "",
        )
    return ChangeCheck(changed, summary, meta)
