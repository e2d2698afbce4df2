"""validate_records: each check fires on the bad input it guards against and stays quiet on clean data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from intentops.artifacts import QUICKSTART_FILE, RECORDS_FILE, TRAIN_FILE, VALIDATION_JSON, VALIDATION_MD, split_file
from intentops.catalog import CatalogError, parse_catalog
from intentops.config import DataConfig
from intentops.data.records import load_records, normalise_text
from intentops.data.validate import CHECKS, validate_records
from intentops.io import write_jsonl

CATALOG = parse_catalog(
    {
        "name": "mini",
        "intents": [
            {
                "name": "play_music",
                "domain": "music",
                "description": "Play music by an artist.",
                "parameters": [{"name": "artist"}],
            },
            {"name": "music_exit", "domain": "music", "description": "Stop the music."},
            {"name": "volume_down", "domain": "volume", "description": "Turn the volume down."},
            {
                "name": "weather_search",
                "domain": "weather",
                "description": "Weather for a city.",
                "parameters": [{"name": "city"}, {"name": "date", "required": False}],
            },
            {
                "name": "find_nearby",
                "domain": "travel",
                "description": "Find a place nearby.",
                "parameters": [{"name": "place"}],
            },
        ],
    }
)
TEXTS = {
    "play_music": [
        ("放周杰伦的歌", "周杰伦"),
        ("play Adele", "Adele"),
        ("来点王菲", "王菲"),
        ("put on Queen", "Queen"),
    ],
    "music_exit": [("关掉音乐", None), ("stop the music", None), ("别放了", None), ("turn the song off", None)],
    "volume_down": [("小声点", None), ("lower the volume", None), ("太吵了", None), ("quieter please", None)],
    "weather_search": [
        ("杭州天气", "杭州"),
        ("weather in Paris", "Paris"),
        ("北京下雨吗", "北京"),
        ("is it hot in Rome", "Rome"),
    ],
    "find_nearby": [
        ("附近的咖啡店", "咖啡店"),
        ("find a pharmacy", "pharmacy"),
        ("附近有加油站吗", "加油站"),
        ("any bank near me", "bank"),
    ],
}


def _config(**overrides: Any) -> DataConfig:
    settings: dict[str, Any] = {"min_examples_per_intent": 3, "max_imbalance_ratio": 3.0, "max_text_chars": 40}
    return DataConfig(**{**settings, **overrides})


def clean_records() -> list[dict[str, Any]]:
    """4 single-intent records per intent plus 2 multi-intent ones: passes every check."""
    records = []
    for intent, pairs in TEXTS.items():
        for text, arg in pairs:
            records.append({"text": text, "output": f"{intent}({arg or ''})"})
    records.append({"text": "放王菲然后小声点", "output": "play_music(王菲);volume_down()"})
    records.append({"text": "stop music and lower volume", "output": "music_exit();volume_down()"})
    return [{"id": f"r{i}", **record} for i, record in enumerate(records)]


def _run(records: list[dict[str, Any]] | pd.DataFrame, tmp_path: Path, **cfg: Any) -> Any:
    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame(records)
    return validate_records(frame, CATALOG, _config(**cfg), tmp_path / "report")


def _finding(report: Any, check: str) -> Any:
    matches = [f for f in report.errors + report.warnings if f.check == check]
    return matches[0] if matches else None


def test_clean_records_pass_every_check_and_reports_are_written(tmp_path: Path) -> None:
    path = tmp_path / RECORDS_FILE
    write_jsonl(path, clean_records())
    report = validate_records(path, CATALOG, _config(), tmp_path / "report")

    assert report.passed and report.errors == [] and report.warnings == []
    assert [row["status"] for row in report.checks] == ["pass"] * len(CHECKS)
    saved = json.loads((tmp_path / "report" / VALIDATION_JSON).read_text(encoding="utf-8"))
    assert saved["passed"] is True and saved["errors"] == [] and saved["warnings"] == []
    assert saved["counts"]["records"] == 22 and saved["counts"]["multi_intent"] == 2
    assert saved["counts"]["single_intent_per_intent"]["play_music"] == 4
    markdown = (tmp_path / "report" / VALIDATION_MD).read_text(encoding="utf-8")
    assert markdown.startswith("# Dataset validation: PASSED")
    assert "| conflicting_labels | error | pass | 0 |" in markdown
    assert (tmp_path / "report" / "flagged.jsonl").read_text() == ""


@pytest.mark.parametrize(
    ("check", "severity", "bad"),
    [
        ("unparseable_output", "error", {"text": "放歌", "output": "play_music("}),
        ("unknown_intent", "error", {"text": "讲个笑话", "output": "tell_joke()"}),
        ("unknown_parameter", "error", {"text": "play Adele loud", "output": "play_music(Adele,loud)"}),
        ("unknown_parameter", "error", {"text": "what's the weather", "output": "weather_search()"}),
        ("empty_text", "error", {"text": "  ", "output": "music_exit()"}),
        ("too_long", "warning", {"text": "please " * 10 + "stop", "output": "music_exit()"}),
    ],
)
def test_record_checks_fire_on_bad_records(tmp_path: Path, check: str, severity: str, bad: dict[str, Any]) -> None:
    report = _run([*clean_records(), {"id": "bad", **bad}], tmp_path)
    finding = _finding(report, check)
    assert finding is not None and finding.severity == severity and finding.count == 1
    assert finding.examples[0]["id"] == "bad"
    assert report.passed is (severity != "error")
    flagged = [json.loads(line) for line in (tmp_path / "report" / "flagged.jsonl").read_text().splitlines()]
    assert {"check": check, "severity": severity, "id": "bad"}.items() <= flagged[0].items()


def test_optional_parameters_may_be_omitted_or_given(tmp_path: Path) -> None:
    extra = [{"id": "x1", "text": "杭州明天天气", "output": "weather_search(杭州,明天)"}]
    assert _run([*clean_records(), *extra], tmp_path).passed
    finding = _finding(
        _run([*clean_records(), {**extra[0], "output": "weather_search(杭州,明天,晚上)"}], tmp_path),
        "unknown_parameter",
    )
    assert "takes 2 argument(s), got 3" in finding.examples[0]["detail"]


def test_duplicates_after_normalisation_warn_and_conflicts_fail(tmp_path: Path) -> None:
    assert normalise_text("Play  Adele!") == normalise_text("play adele") == "playadele"
    assert normalise_text("放周杰伦的歌！") == normalise_text("放周杰伦的歌")
    duplicate = {"id": "dup", "text": "Play  ADELE!", "output": "play_music（Adele）"}  # same call, full-width
    report = _run([*clean_records(), duplicate], tmp_path)
    finding = _finding(report, "duplicate_text")
    assert report.passed and finding.severity == "warning" and finding.count == 1
    assert finding.examples[0]["detail"] == "same as r1"

    conflict = {"id": "conflict", "text": "关掉音乐。", "output": "volume_down()"}
    report = _run([*clean_records(), conflict], tmp_path)
    finding = _finding(report, "conflicting_labels")
    assert not report.passed and finding.count == 2
    assert {e["id"] for e in finding.examples} == {"r4", "conflict"}
    assert "music_exit() | volume_down()" in finding.examples[0]["detail"]


def test_min_examples_per_intent_counts_single_intent_records_and_exempts_unseen(tmp_path: Path) -> None:
    records = [r for r in clean_records() if not r["output"].startswith("find_nearby")]
    report = _run(records, tmp_path)
    finding = _finding(report, "min_examples_per_intent")
    assert not report.passed and finding.examples == [{"intent": "find_nearby", "examples": 0, "required": 3}]
    assert _run(records, tmp_path, unseen_intents=["find_nearby"]).passed
    assert _run(records, tmp_path, unseen_domain="travel").passed

    # multi-intent records do not count towards an intent's examples
    thin = [r for r in clean_records() if r["output"] != "play_music(Queen)" and r["output"] != "play_music(王菲)"]
    finding = _finding(_run(thin, tmp_path), "min_examples_per_intent")
    assert finding.examples == [{"intent": "play_music", "examples": 2, "required": 3}]


def test_imbalance_warns_above_ratio(tmp_path: Path) -> None:
    extra = [{"id": f"e{i}", "text": f"play artist number {i}", "output": f"play_music(A{i})"} for i in range(9)]
    report = _run([*clean_records(), *extra], tmp_path)
    finding = _finding(report, "imbalance")
    assert report.passed and finding.severity == "warning"
    assert "play_music (13) has 3.2x" in finding.message
    assert _finding(_run([*clean_records(), *extra], tmp_path, max_imbalance_ratio=4.0), "imbalance") is None


def test_train_test_leakage_in_a_dataset_folder(tmp_path: Path) -> None:
    records = clean_records()
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    write_jsonl(dataset / TRAIN_FILE, records[:18])
    write_jsonl(dataset / split_file("val"), records[18:20])
    write_jsonl(dataset / split_file("test"), [*records[20:], {**records[0], "id": "leak", "text": "放周杰伦的歌!"}])
    report = validate_records(dataset, CATALOG, _config(min_examples_per_intent=2), tmp_path / "report")
    finding = _finding(report, "train_test_leakage")
    assert not report.passed and finding.count == 2
    assert {e["split"] for e in finding.examples} == {"train", "test"}
    assert load_records(dataset)["split"].value_counts().to_dict() == {"train": 18, "val": 2, "test": 3}

    no_duplicates = _config(min_examples_per_intent=2, severities={"duplicate_text": "off"})
    report = validate_records(dataset, CATALOG, no_duplicates, tmp_path / "r2")
    assert _finding(report, "train_test_leakage") is not None  # leakage is its own check, not a duplicate


def test_multi_intent_needs_single_intent_data_for_every_part(tmp_path: Path) -> None:
    records = [r for r in clean_records() if not r["output"].startswith("volume_down(")]
    report = _run(records, tmp_path, severities={"min_examples_per_intent": "off"})
    finding = _finding(report, "multi_intent_unseen_part")
    assert not report.passed and finding.count == 2
    assert finding.examples[0]["detail"] == "no single-intent data for volume_down"

    multi_turn = {"id": "mt", "text": "附近。咖啡店", "output": "find_nearby(咖啡店)", "turns": 2}
    records = [r for r in clean_records() if not r["output"].startswith("find_nearby")] + [multi_turn]
    finding = _finding(
        _run(records, tmp_path, severities={"min_examples_per_intent": "off"}), "multi_intent_unseen_part"
    )
    assert [e["id"] for e in finding.examples] == ["mt"]


def test_multi_share_warns_outside_range_with_seed_guidance(tmp_path: Path) -> None:
    report = _run(clean_records(), tmp_path, multi_share_min=0.2)
    finding = _finding(report, "multi_share")
    assert report.passed and finding.severity == "warning"
    assert "10.0% of the single-intent amount (2/20)" in finding.message and ">= 20%" in finding.message
    assert _finding(_run(clean_records(), tmp_path, multi_share_min=0.05, multi_share_max=0.1), "multi_share") is None
    assert _finding(_run(clean_records(), tmp_path, multi_share_max=0.05), "multi_share") is not None


def test_severities_can_be_raised_lowered_or_switched_off(tmp_path: Path) -> None:
    bad = [*clean_records(), {"id": "long", "text": "x" * 50, "output": "music_exit()"}]
    report = _run(bad, tmp_path, severities={"too_long": "error"})
    assert not report.passed and report.failed_checks == ["too_long"]
    report = _run(bad, tmp_path, severities={"too_long": "off"})
    assert report.passed and _finding(report, "too_long") is None
    assert {row["check"]: row["status"] for row in report.checks}["too_long"] == "off"
    unknown = [*clean_records(), {"id": "u", "text": "joke", "output": "tell_joke()"}]
    assert _run(unknown, tmp_path, severities={"unknown_intent": "warning"}).passed
    with pytest.raises(ValueError, match="unknown checks: not_a_check"):
        _run(clean_records(), tmp_path, severities={"not_a_check": "error"})


def test_failed_report_markdown_lists_examples(tmp_path: Path) -> None:
    report = _run([*clean_records(), {"id": "bad|id", "text": "讲个笑话", "output": "tell_joke()"}], tmp_path)
    markdown = (tmp_path / "report" / VALIDATION_MD).read_text(encoding="utf-8")
    assert not report.passed and markdown.startswith("# Dataset validation: FAILED")
    assert "### unknown_intent (1)" in markdown and "bad\\|id" in markdown
    saved = json.loads((tmp_path / "report" / VALIDATION_JSON).read_text(encoding="utf-8"))
    assert saved["errors"][0]["check"] == "unknown_intent" and saved["errors"][0]["count"] == 1


def test_pai_quickstart_file_and_unknown_unseen_intent(tmp_path: Path) -> None:
    pairs = [{"instruction": r["text"], "output": r["output"]} for r in clean_records()]
    (tmp_path / QUICKSTART_FILE).write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    report = validate_records(tmp_path / QUICKSTART_FILE, CATALOG, _config(), tmp_path / "report")
    assert report.passed and report.counts["records"] == 22
    with pytest.raises(CatalogError, match="not in the catalog: nope"):
        validate_records(tmp_path / QUICKSTART_FILE, CATALOG, _config(unseen_intents=["nope"]), tmp_path / "r")
    with pytest.raises(CatalogError, match="'space' is not a catalog domain"):
        validate_records(tmp_path / QUICKSTART_FILE, CATALOG, _config(unseen_domain="space"), tmp_path / "r")


# ---- issue 11: bad data gets one clear line (12), ids are content ids and never collide (10, 14) ----------------


def test_bad_records_files_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / RECORDS_FILE
    path.write_text('{"text": "a", "output": "f()"}\n["text", "output"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"records\.jsonl:2: expected a JSON object"):
        load_records(path)
    for content in ("", "  \n\n \t\n"):
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=r"records\.jsonl: no records"):
            load_records(path)
    path.write_bytes(b'{"text": "a", "output": "f()"}\n{"text": "\xff\xfe", "output": "f()"}\n')
    with pytest.raises(ValueError, match=r"records\.jsonl:2: not UTF-8"):
        load_records(path)
    listed = tmp_path / QUICKSTART_FILE
    listed.write_bytes(b'[{"instruction": "\xff", "output": "f()"}]')
    with pytest.raises(ValueError, match=r"train\.json"):
        load_records(listed)


def test_record_ids_are_content_ids_stable_under_shuffling(tmp_path: Path) -> None:
    rows = [{"text": f"play song {i}", "output": f"play_music(s{i})"} for i in range(6)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", list(reversed(rows)))
    first = dict(zip(load_records(tmp_path / "a.jsonl")["text"], load_records(tmp_path / "a.jsonl")["id"], strict=True))
    second = dict(
        zip(load_records(tmp_path / "b.jsonl")["text"], load_records(tmp_path / "b.jsonl")["id"], strict=True)
    )
    assert first == second and len(set(first.values())) == 6
    as_json = tmp_path / QUICKSTART_FILE
    as_json.write_text(json.dumps([{"instruction": r["text"], "output": r["output"]} for r in rows]), encoding="utf-8")
    assert dict(zip(load_records(as_json)["text"], load_records(as_json)["id"], strict=True)) == first


def test_duplicate_record_ids_with_different_content_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / RECORDS_FILE
    write_jsonl(path, [{"id": "x1", "text": "a", "output": "f()"}, {"id": "x1", "text": "b", "output": "g()"}])
    with pytest.raises(ValueError, match=r"records\.jsonl: record id 'x1' is used by 2 different records"):
        load_records(path)


def test_arguments_that_are_not_spans_warn_and_fail_when_decoding_copies(tmp_path: Path) -> None:
    records = clean_records()
    records[0] = {**records[0], "output": "play_music(Jay Chou)"}  # 放周杰伦的歌: the name as normalised, not as said
    frame = pd.DataFrame(records)
    plain = validate_records(frame, CATALOG, _config(), tmp_path / "plain")
    finding = _finding(plain, "argument_not_in_text")
    assert plain.passed and finding.severity == "warning" and finding.count == 1
    assert finding.examples[0]["id"] == "r0" and "'Jay Chou'" in finding.examples[0]["detail"]
    copying = validate_records(frame, CATALOG, _config(), tmp_path / "copying", copied_arguments=True)
    assert not copying.passed and copying.failed_checks == ["argument_not_in_text"]
    overridden = _config(severities={"argument_not_in_text": "warning"})
    assert validate_records(frame, CATALOG, overridden, tmp_path / "kept", copied_arguments=True).passed
