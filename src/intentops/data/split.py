"""Deterministic stratified train/val/test splits with an unseen-intent holdout.

Every intent is split on its own (stratified), with a seeded shuffle per intent, so adding records of one
intent never moves records of another. Records whose normalised text is the same always land in the same
split (no train/test leakage by construction). Intents named in `data.unseen_intents`, and every intent of
`data.unseen_domain`, go entirely to test with `seen: false`: the model never trains on them, and evaluation
measures how well catalog descriptions alone carry it (the generalisation test for new intents).
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd

from intentops.artifacts import CATALOG_FILE, DATASET_MANIFEST, TRAIN_FILE, VALIDATION_DIR, split_file
from intentops.catalog import Catalog
from intentops.config import DataConfig
from intentops.data.records import SPLITS, annotate, complete_record, load_records, unseen_intents
from intentops.data.validate import DataValidationError, ValidationReport, validate_records
from intentops.io import atomic_path, sha256_file, sha256_text, write_json

log = logging.getLogger(__name__)

_DERIVED = ("split", "norm", "canonical", "calls_parsed", "parse_error", "intents", "first_intent", "multi")


@dataclass
class DatasetManifest:
    """What manifest.json records: where the dataset is, its counts and the hashes that version it."""

    path: str
    counts: dict[str, Any]
    dataset_hash: str
    train_hash: str
    validated: bool
    catalog_hash: str
    unseen_intents: list[str]
    seen_intents: list[str]
    unseen_domain: str
    seed: int
    val_fraction: float
    test_fraction: float
    files: dict[str, str]
    source: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data


def _split_sizes(groups: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) group counts: rounded shares, at least one each when an intent has 3+ groups, and always
    at least one group left for training."""
    test = round(groups * test_fraction)
    val = round(groups * val_fraction)
    if groups >= 3:
        test = max(test, 1 if test_fraction > 0 else 0)
        val = max(val, 1 if val_fraction > 0 else 0)
    while groups and val + test >= groups:
        if val >= test and val:
            val -= 1
        else:
            test -= 1
    return val, test


def _assign(frame: pd.DataFrame, held_out: set[str], data_cfg: DataConfig) -> pd.Series:
    """The split of every row: unseen rows to test, the rest per intent over groups of equal normalised text."""
    split = pd.Series("train", index=frame.index, dtype=object)
    unseen_rows = [bool(set(intents) & held_out) for intents in frame["intents"]]
    split[unseen_rows] = "test"
    seen = frame[[not flag for flag in unseen_rows]]
    groups: dict[str, list[int]] = defaultdict(list)
    for index, norm, record_id in zip(seen.index, seen["norm"], seen["id"], strict=True):
        groups[norm or f"\0{record_id}"].append(index)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for key, members in groups.items():
        first = min(members, key=lambda i: frame.at[i, "id"])
        by_intent[frame.at[first, "first_intent"]].append(key)
    for intent in sorted(by_intent):
        keys = sorted(by_intent[intent])
        random.Random(f"{data_cfg.seed}:{intent}").shuffle(keys)
        val, test = _split_sizes(len(keys), data_cfg.val_fraction, data_cfg.test_fraction)
        for position, key in enumerate(keys):
            name = "test" if position < test else "val" if position < test + val else "train"
            split[groups[key]] = name
    return split


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in row.items()
        if key not in _DERIVED and not (isinstance(value, float) and math.isnan(value))
    }


def _dataset_hash(folder: Path) -> str:
    """The dataset version: sha256 over the three split files' digests, in split order (16 hex digits)."""
    return sha256_text("".join(sha256_file(folder / split_file(split)) for split in SPLITS))[:16]


def _write_split(
    frame: pd.DataFrame,
    catalog: Catalog,
    data_cfg: DataConfig,
    folder: Path,
    source: dict[str, Any],
    validated: bool = False,
) -> dict[str, Any]:
    held_out = unseen_intents(catalog, data_cfg)
    broken = frame[frame["parse_error"].notna()]
    if not broken.empty:
        listed = ", ".join(f"{row.id} ({row.parse_error})" for row in broken.head(5).itertuples())
        raise ValueError(f"{len(broken)} records have an unusable output, cannot stratify: {listed}")
    assignment = _assign(frame, set(held_out), data_cfg)
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {}
    files: dict[str, str] = {}
    for split in SPLITS:
        part = frame[assignment == split]
        path = folder / split_file(split)
        with open(path, "wb") as handle:
            for row, record_intents in zip(part.to_dict("records"), part["intents"], strict=True):
                record = complete_record(_clean(row))
                record["seen"] = not (set(record_intents) & set(held_out))
                handle.write(msgspec.json.encode(record) + b"\n")
        files[path.name] = sha256_file(path)
        per_intent = part["first_intent"].value_counts()
        languages = part["lang"].value_counts() if "lang" in part else pd.Series(dtype=int)
        unseen = int(sum(bool(set(i) & set(held_out)) for i in part["intents"]))
        counts[split] = {
            "total": len(part),
            "seen": len(part) - unseen,
            "unseen": unseen,
            "by_intent": {name: int(per_intent[name]) for name in catalog.names if name in per_intent},
            "by_lang": {str(lang): int(n) for lang, n in sorted(languages.items())},
        }
    catalog.to_yaml(folder / CATALOG_FILE)
    manifest = {
        "counts": counts,
        "dataset_hash": _dataset_hash(folder),
        "train_hash": files[TRAIN_FILE][:16],  # what a rollout log records, so mining can check its source
        "validated": validated,
        "catalog_hash": catalog.content_hash,
        "unseen_intents": held_out,
        "seen_intents": [name for name in catalog.names if name not in held_out],
        "unseen_domain": data_cfg.unseen_domain,
        "seed": data_cfg.seed,
        "val_fraction": data_cfg.val_fraction,
        "test_fraction": data_cfg.test_fraction,
        "files": files,
        "source": source,
    }
    write_json(folder / DATASET_MANIFEST, manifest)
    log.info(
        "split %s: train %d, val %d, test %d (%d unseen), dataset_hash %s",
        source.get("path"),
        counts["train"]["total"],
        counts["val"]["total"],
        counts["test"]["total"],
        counts["test"]["unseen"],
        manifest["dataset_hash"],
    )
    return manifest


def _source(records: str | Path | pd.DataFrame) -> dict[str, Any]:
    if isinstance(records, pd.DataFrame):
        return {"path": "DataFrame", "records": len(records)}
    path = Path(records)
    return {"path": str(path), "sha256": sha256_file(path) if path.is_file() else None}


def split_dataset(
    records: str | Path | pd.DataFrame, catalog: Catalog, data_cfg: DataConfig, out_dir: str | Path
) -> DatasetManifest:
    """Split records into out_dir/{train,val,test}.jsonl (+ `seen`), catalog.yaml and manifest.json.

    The folder appears complete or not at all. The same records, catalog and config always give the same
    files and therefore the same `dataset_hash`; which split a record lands in does not depend on the order
    of the input lines.
    """
    frame = annotate(load_records(records))
    with atomic_path(out_dir) as tmp:
        manifest = _write_split(frame, catalog, data_cfg, tmp, _source(records))
    return DatasetManifest(path=str(out_dir), **manifest)


def prepare_dataset(
    records: str | Path | pd.DataFrame,
    catalog: Catalog,
    data_cfg: DataConfig,
    out_dir: str | Path,
    copied_arguments: bool = False,
) -> DatasetManifest:
    """Validate, then split: the validate-dataset stage.

    out_dir/validation/ always holds the validation report. When a check at error severity fails, that is all
    out_dir holds (no train/val/test files that could be mistaken for a usable dataset) and
    DataValidationError lists the failed checks.
    """
    frame = annotate(load_records(records))
    report: ValidationReport
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        report = validate_records(records, catalog, data_cfg, tmp / VALIDATION_DIR, copied_arguments=copied_arguments)
        if report.passed:
            manifest = _write_split(frame, catalog, data_cfg, tmp, _source(records), validated=True)
    report.out_dir = str(Path(out_dir) / VALIDATION_DIR)
    if not report.passed:
        raise DataValidationError(report)
    return DatasetManifest(path=str(out_dir), **manifest)


def require_validated(dataset_dir: str | Path) -> None:
    """Refuse a dataset folder whose manifest says it was split without validation (`intentops split`)."""
    manifest = Path(dataset_dir) / DATASET_MANIFEST
    if not manifest.is_file():
        return  # a hand-made folder: its records are checked when training loads them
    from intentops.io import read_json

    if read_json(manifest).get("validated") is False:
        raise ValueError(
            f"{dataset_dir}: dataset was never validated (made by `intentops split`); "
            f"build it with `intentops prepare` to train on it"
        )
