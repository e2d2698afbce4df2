"""split_dataset / prepare_dataset: deterministic stratified splits, unseen holdout, atomic dataset folders."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from intentops.artifacts import (
    CATALOG_FILE,
    DATASET_MANIFEST,
    RECORDS_FILE,
    TRAIN_FILE,
    VALIDATION_DIR,
    VALIDATION_JSON,
    VALIDATION_REPORT_MD,
    split_file,
)
from intentops.catalog import Catalog, CatalogError, load_catalog
from intentops.config import DataConfig
from intentops.data.split import prepare_dataset, split_dataset
from intentops.data.validate import DataValidationError
from intentops.io import write_jsonl
from tests.test_validate import CATALOG

PER_INTENT = 20


def _records() -> list[dict[str, Any]]:
    records = []
    for intent in CATALOG.names:
        arity = len(CATALOG.get(intent).required_parameters)
        for i in range(PER_INTENT):
            args = ",".join(f"a{i}" for _ in range(arity))
            said = f" for a{i}" if arity else ""  # arguments are spans of the utterance, as the profile decodes them
            records.append({"text": f"{intent} request number {i}{said}", "output": f"{intent}({args})"})
    records.append({"text": "play a0 then quieter", "output": "play_music(a0);volume_down()"})
    records.append({"text": "cafe near here and the weather", "output": "find_nearby(cafe);weather_search(here)"})
    records.append({"text": "music_exit request number 3!", "output": "music_exit()"})  # same text as another
    return [{"id": f"r{i:03d}", **record} for i, record in enumerate(records)]


def _config(**overrides: Any) -> DataConfig:
    return DataConfig(**{"min_examples_per_intent": 10, "val_fraction": 0.1, "test_fraction": 0.2, **overrides})


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _assignment(folder: Path) -> dict[str, str]:
    return {r["id"]: split for split in ("train", "val", "test") for r in _read(folder / split_file(split))}


def test_stratified_split_is_deterministic_and_complete(tmp_path: Path) -> None:
    records = _records()
    write_jsonl(tmp_path / RECORDS_FILE, records)
    manifest = split_dataset(tmp_path / RECORDS_FILE, CATALOG, _config(), tmp_path / "a")

    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        CATALOG_FILE,
        DATASET_MANIFEST,
        split_file("test"),
        TRAIN_FILE,
        split_file("val"),
    ]
    assignment = _assignment(tmp_path / "a")
    assert sorted(assignment) == sorted(r["id"] for r in records)
    for intent in CATALOG.names:
        counts = manifest.counts
        total = sum(counts[s]["by_intent"].get(intent, 0) for s in ("train", "val", "test"))
        assert counts["test"]["by_intent"][intent] >= 3 and counts["val"]["by_intent"][intent] >= 1, intent
        assert counts["train"]["by_intent"][intent] >= 0.6 * total, intent
    assert manifest.unseen_intents == [] and all(r["seen"] for r in _read(tmp_path / "a" / split_file("test")))
    same_text = {assignment["r023"], assignment["r102"]}  # "music_exit request number 3" with and without "!"
    assert len(same_text) == 1

    again = split_dataset(tmp_path / RECORDS_FILE, CATALOG, _config(), tmp_path / "b")
    assert again.dataset_hash == manifest.dataset_hash
    for name in (TRAIN_FILE, split_file("val"), split_file("test"), DATASET_MANIFEST):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    write_jsonl(tmp_path / "shuffled.jsonl", shuffled)
    split_dataset(tmp_path / "shuffled.jsonl", CATALOG, _config(), tmp_path / "c")
    assert _assignment(tmp_path / "c") == assignment

    reseeded = split_dataset(tmp_path / RECORDS_FILE, CATALOG, _config(seed=7), tmp_path / "d")
    assert reseeded.dataset_hash != manifest.dataset_hash

    saved = json.loads((tmp_path / "a" / DATASET_MANIFEST).read_text(encoding="utf-8"))
    assert saved["dataset_hash"] == manifest.dataset_hash and saved["catalog_hash"] == CATALOG.content_hash
    assert saved["seed"] == 42 and saved["counts"]["train"]["total"] == manifest.counts["train"]["total"]


def test_unseen_intents_and_domain_go_entirely_to_test(tmp_path: Path) -> None:
    write_jsonl(tmp_path / RECORDS_FILE, _records())
    cfg = _config(unseen_intents=["find_nearby"], unseen_domain="volume")
    manifest = split_dataset(tmp_path / RECORDS_FILE, CATALOG, cfg, tmp_path / "out")

    assert manifest.unseen_intents == ["volume_down", "find_nearby"]
    assert manifest.seen_intents == ["play_music", "music_exit", "weather_search"]
    test = _read(tmp_path / "out" / split_file("test"))
    unseen = [r for r in test if not r["seen"]]
    assert len(unseen) == 2 * PER_INTENT + 2  # both intents, plus the two multi-intent records touching them
    assert all({c["name"] for c in r["calls"]} & {"volume_down", "find_nearby"} for r in unseen)
    for split in ("train", "val"):
        rows = _read(tmp_path / "out" / split_file(split))
        assert rows and all(r["seen"] for r in rows)
        assert not {c["name"] for r in rows for c in r["calls"]} & {"volume_down", "find_nearby"}
    assert manifest.counts["test"]["unseen"] == len(unseen)
    assert load_catalog(tmp_path / "out" / CATALOG_FILE).names == CATALOG.names  # unseen intents stay listed


def test_small_intents_keep_a_training_example(tmp_path: Path) -> None:
    catalog = Catalog(name="tiny", intents=CATALOG.intents[:2])
    records = [
        {"id": "a", "text": "play x", "output": "play_music(x)"},
        {"id": "b", "text": "stop", "output": "music_exit()"},
        {"id": "c", "text": "stop now", "output": "music_exit()"},
    ]
    write_jsonl(tmp_path / RECORDS_FILE, records)
    split_dataset(tmp_path / RECORDS_FILE, catalog, _config(val_fraction=0.5, test_fraction=0.5), tmp_path / "o")
    assignment = _assignment(tmp_path / "o")
    assert assignment["a"] == "train" and "train" in {assignment["b"], assignment["c"]}


def test_bad_holdout_settings_and_unusable_outputs_are_clear_errors(tmp_path: Path) -> None:
    write_jsonl(tmp_path / RECORDS_FILE, _records())
    with pytest.raises(CatalogError, match="not in the catalog: nope"):
        split_dataset(tmp_path / RECORDS_FILE, CATALOG, _config(unseen_intents=["nope"]), tmp_path / "o")
    with pytest.raises(CatalogError, match="'space' is not a catalog domain"):
        split_dataset(tmp_path / RECORDS_FILE, CATALOG, _config(unseen_domain="space"), tmp_path / "o")
    write_jsonl(tmp_path / "broken.jsonl", [*_records(), {"id": "bad", "text": "x", "output": "oops("}])
    with pytest.raises(ValueError, match=r"unusable output, cannot stratify: bad \(empty argument\)"):
        split_dataset(tmp_path / "broken.jsonl", CATALOG, _config(), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_failure_while_writing_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_jsonl(tmp_path / RECORDS_FILE, _records())
    split_dataset(tmp_path / RECORDS_FILE, CATALOG, _config(), tmp_path / "out")
    before = (tmp_path / "out" / DATASET_MANIFEST).read_bytes()

    def broken(self: Catalog, path: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Catalog, "to_yaml", broken)
    with pytest.raises(OSError, match="disk full"):
        split_dataset(tmp_path / RECORDS_FILE, CATALOG, _config(seed=1), tmp_path / "out")
    assert (tmp_path / "out" / DATASET_MANIFEST).read_bytes() == before
    with pytest.raises(OSError, match="disk full"):
        split_dataset(tmp_path / RECORDS_FILE, CATALOG, _config(), tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "records.jsonl"]


def test_prepare_validates_then_splits(tmp_path: Path) -> None:
    write_jsonl(tmp_path / RECORDS_FILE, _records())
    manifest = prepare_dataset(tmp_path / RECORDS_FILE, CATALOG, _config(), tmp_path / "ds")
    out = tmp_path / "ds"
    assert {TRAIN_FILE, split_file("val"), split_file("test"), CATALOG_FILE, DATASET_MANIFEST, "validation"} == {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / VALIDATION_DIR / VALIDATION_JSON).read_text())["passed"] is True
    assert (out / VALIDATION_REPORT_MD).exists()
    assert manifest.path == str(out) and manifest.counts["train"]["total"] > 0


def test_prepare_stops_on_validation_errors_and_keeps_only_the_report(tmp_path: Path) -> None:
    records = [*_records(), {"id": "x", "text": "tell me a joke", "output": "tell_joke()"}]
    write_jsonl(tmp_path / RECORDS_FILE, records)
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError, match=r"unknown_intent \(1\)") as caught:
        prepare_dataset(tmp_path / RECORDS_FILE, CATALOG, _config(min_examples_per_intent=50), out)
    assert caught.value.report.failed_checks == ["unknown_intent", "min_examples_per_intent"]
    assert str(out / VALIDATION_REPORT_MD) in str(caught.value)
    assert [p.name for p in out.iterdir()] == ["validation"]
    flagged = (out / "validation" / "flagged.jsonl").read_text(encoding="utf-8")
    assert '"id":"x"' in flagged


def test_manifest_says_whether_validated_and_hashes_the_training_set(tmp_path: Path) -> None:
    """Issue 11.10/11.14: mining checks the training set's hash; training refuses a never-validated dataset."""
    import pandas as pd

    from intentops.cli import main
    from intentops.data.split import require_validated
    from intentops.io import read_json, sha256_file

    records = pd.DataFrame(_records())
    split = split_dataset(records, CATALOG, _config(), tmp_path / "split")
    stored = read_json(tmp_path / "split" / DATASET_MANIFEST)
    assert stored["validated"] is False and split.validated is False
    assert stored["train_hash"] == sha256_file(tmp_path / "split" / TRAIN_FILE)[:16]
    with pytest.raises(ValueError, match=r"never validated.*intentops prepare"):
        require_validated(tmp_path / "split")
    status = main(["train", "sft", "--dataset", str(tmp_path / "split"), "--out", str(tmp_path / "model")])
    assert status == 2 and not (tmp_path / "model").exists()

    prepared = prepare_dataset(records, CATALOG, _config(), tmp_path / "prepared")
    assert prepared.validated is True and prepared.train_hash == stored["train_hash"]
    require_validated(tmp_path / "prepared")
