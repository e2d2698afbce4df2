"""`intentops convert itag | validate | split | prepare`, run in-process through intentops.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from intentops.artifacts import (
    CATALOG_FILE,
    DATASET_MANIFEST,
    RECORDS_FILE,
    REJECTS_FILE,
    TRAIN_FILE,
    VALIDATION_REPORT_MD,
)
from intentops.cli import main
from intentops.io import write_jsonl
from tests.test_itag import SEED_PAIRS, itag_line, write_manifest
from tests.test_split import _records
from tests.test_validate import CATALOG


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    CATALOG.to_yaml(tmp_path / CATALOG_FILE)
    return tmp_path / CATALOG_FILE


@pytest.fixture
def records_file(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / RECORDS_FILE, _records())
    return tmp_path / RECORDS_FILE


def _stdout_json(capsys: pytest.CaptureFixture[str]) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_convert_itag_exit_status_follows_reject_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", [*(itag_line(t, o) for t, o in SEED_PAIRS), "garbage"])
    assert main(["convert", "itag", str(manifest), "--out", str(tmp_path / "ok"), "--max-reject-rate", "0.5"]) == 0
    summary = _stdout_json(capsys)
    assert summary["converted"] == 4 and summary["rejected"] == {"not_json": 1} and summary["passed"] is True

    assert main(["convert", "itag", str(manifest), "--out", str(tmp_path / "strict")]) == 1
    captured = capsys.readouterr()
    assert "reject rate 20.00% exceeds the maximum 5.00%" in captured.err
    assert (tmp_path / "strict" / RECORDS_FILE).exists() and (tmp_path / "strict" / REJECTS_FILE).exists()


def test_convert_itag_reads_s3_and_reports_missing_input(
    tmp_path: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", [itag_line(t, o) for t, o in SEED_PAIRS])
    boto3.client("s3").upload_file(str(manifest), s3_bucket, "itag/export.manifest")
    out = f"s3://{s3_bucket}/records/run1"
    assert main(["convert", "itag", f"s3://{s3_bucket}/itag/export.manifest", "--out", out]) == 0
    assert _stdout_json(capsys)["converted"] == 4
    listed = boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="records/run1/")["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        f"records/run1/{name}"
        for name in (
            ".intentops-manifest.json",
            ".intentops-output",
            "records.jsonl",
            "rejects.jsonl",
            "report.json",
            "train.json",
        )
    ]

    assert main(["convert", "itag", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "absent.jsonl: no such file" in capsys.readouterr().err
    assert main(["convert", "itag", f"s3://{s3_bucket}/itag/none", "--out", str(tmp_path / "x")]) == 2
    assert f"s3://{s3_bucket}/itag/none: no such object" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_validate_exit_status_and_s3_catalog(
    tmp_path: Path,
    records_file: Path,
    catalog_file: Path,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("INTENTOPS_CACHE", str(tmp_path / "cache"))
    boto3.client("s3").upload_file(str(catalog_file), s3_bucket, "catalogs/mini.yaml")
    args = ["validate", str(records_file), "--catalog", f"s3://{s3_bucket}/catalogs/mini.yaml"]
    assert main([*args, "--out", str(tmp_path / "v1"), "--set", "data__min_examples_per_intent=10"]) == 0
    summary = _stdout_json(capsys)
    assert summary["passed"] is True and summary["errors"] == {}
    assert summary["warnings"] == {"duplicate_text": 1}  # _records() repeats one utterance on purpose
    assert list((tmp_path / "cache").rglob("mini.yaml"))

    assert main([*args, "--out", str(tmp_path / "v2")]) == 1  # tiny-cpu config asks for 50 examples per intent
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["errors"] == {"min_examples_per_intent": 5}
    assert "min_examples_per_intent (5)" in captured.err and "report.md" in captured.err
    assert json.loads((tmp_path / "v2" / "report.json").read_text())["passed"] is False

    override = "data__severities={min_examples_per_intent: warning}"
    assert main([*args, "--out", str(tmp_path / "v3"), "--set", override]) == 0


def test_split_and_prepare(
    tmp_path: Path, records_file: Path, catalog_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--catalog", str(catalog_file), "--set", "data__min_examples_per_intent=10"]
    assert main(["split", str(records_file), "--out", str(tmp_path / "s"), *common]) == 0
    summary = _stdout_json(capsys)
    assert summary["train"] + summary["val"] + summary["test"] == len(_records())

    unseen = ["--set", "data__unseen_intents=[find_nearby]"]
    assert main(["prepare", str(records_file), "--out", str(tmp_path / "p"), *common, *unseen]) == 0
    summary = _stdout_json(capsys)
    assert summary["unseen_intents"] == ["find_nearby"]
    assert summary["dataset_hash"] == json.loads((tmp_path / "p" / DATASET_MANIFEST).read_text())["dataset_hash"]
    assert (tmp_path / "p" / VALIDATION_REPORT_MD).exists()

    assert main(["prepare", str(records_file), "--out", str(tmp_path / "f"), "--catalog", str(catalog_file)]) == 1
    assert "dataset validation failed: min_examples_per_intent" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [".intentops-output", "validation"]

    bad = ["--set", "data__unseen_intents=[nope]"]
    assert main(["split", str(records_file), "--out", str(tmp_path / "b"), *common, *bad]) == 2
    assert "not in the catalog: nope" in capsys.readouterr().err


def test_help_describes_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "itag" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["convert", "itag", "--help"])
    text = capsys.readouterr().out
    assert "--max-reject-rate" in text and "human_overrides" in text


def test_out_never_deletes_inputs_or_foreign_folders(
    tmp_path: Path, records_file: Path, catalog_file: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Issue 11.2: `--out .`, `--out <input folder>` and an unrelated folder are refused (exit 2), untouched."""
    common = ["--catalog", str(catalog_file), "--set", "data__min_examples_per_intent=10"]
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.chdir(tmp_path)
    for command in ("validate", "split", "prepare"):
        assert main([command, str(records_file), "--out", ".", *common]) == 2
        assert "input" in capsys.readouterr().err
        assert main([command, str(records_file), "--out", str(tmp_path), *common]) == 2
    (tmp_path / "itag").mkdir()
    manifest = write_manifest(tmp_path / "itag" / "m.jsonl", [itag_line(t, o) for t, o in SEED_PAIRS])
    assert main(["convert", "itag", str(manifest), "--out", str(tmp_path / "itag")]) == 2
    assert manifest.exists()

    foreign = tmp_path / "work"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["split", str(records_file), "--out", str(foreign), *common]) == 2
    assert "--force" in capsys.readouterr().err and (foreign / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "itag", "work"])

    assert main(["split", str(records_file), "--out", str(tmp_path / "s"), *common]) == 0
    assert main(["split", str(records_file), "--out", str(tmp_path / "s"), *common]) == 0  # its own output
    assert main(["split", str(records_file), "--out", str(foreign), "--force", *common]) == 0
    assert not (foreign / "notes.txt").exists() and (foreign / TRAIN_FILE).exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--workers", "-3"),
        ("--workers", "0"),
        ("--max-reject-rate", "-1"),
        ("--max-reject-rate", "nan"),
        ("--max-reject-rate", "1.5"),
    ],
)
def test_convert_rejects_nonsense_numbers(tmp_path: Path, option: str, value: str, capsys) -> None:
    """Issue 11.14: `--workers -3` or `--max-reject-rate nan` must not be accepted silently."""
    manifest = write_manifest(tmp_path / "m.jsonl", [itag_line(t, o) for t, o in SEED_PAIRS])
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "itag", str(manifest), "--out", str(tmp_path / "o"), option, value])
    assert exit_info.value.code == 2 and option in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_read_only_output_gets_one_clear_line(tmp_path: Path, records_file: Path, catalog_file: Path, capsys) -> None:
    import os

    common = ["--catalog", str(catalog_file), "--set", "data__min_examples_per_intent=10"]
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    assert main(["split", str(records_file), "--out", str(tmp_path / "a-file" / "s"), *common]) == 2
    assert "a-file" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere")
        assert main(["split", str(records_file), "--out", str(locked / "s"), *common]) == 2
        assert "locked" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_disk_full_gets_one_clear_line_and_publishes_nothing(
    tmp_path: Path, records_file: Path, catalog_file: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import intentops.io

    def full(folder: Path, command: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / TRAIN_FILE))

    monkeypatch.setattr(intentops.io, "_mark", full)
    common = ["--catalog", str(catalog_file), "--set", "data__min_examples_per_intent=10"]
    assert main(["split", str(records_file), "--out", str(tmp_path / "s"), *common]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and TRAIN_FILE in err and "Traceback" not in err
    assert not (tmp_path / "s").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".s")] == []
