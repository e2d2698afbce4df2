"""The bundled assistant example is the product's demo data: it must be usable as-is and reproducible."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType

import pytest

from intentops.artifacts import CATALOG_FILE, DATASET_MANIFEST, RECORDS_FILE, split_file
from intentops.catalog import Catalog
from intentops.grammar import parse_calls, render_calls
from intentops.io import read_jsonl

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "assistant"
TASK_LABEL = re.compile(r"^label-\d+$")


@pytest.fixture(scope="module")
def records(example_records_path: Path) -> list[dict]:
    return list(read_jsonl(example_records_path))


@pytest.fixture(scope="module")
def manifest_lines(example_manifest_path: Path) -> list[str]:
    return example_manifest_path.read_text(encoding="utf-8").splitlines()


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("assistant_generate", EXAMPLE_DIR / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_catalog_is_large_bilingual_and_records_a_split(example_catalog: Catalog) -> None:
    assert len(example_catalog.names) >= 20
    assert len(example_catalog.domains) >= 8
    for intent in example_catalog.intents:
        assert intent.domain, intent.name
        assert re.search(r"[\u4e00-\u9fff]", intent.description), f"{intent.name}: no Chinese description"
        assert re.match(r"[A-Z]", intent.description), f"{intent.name}: description should start in English"
        assert 2 <= len(intent.examples) <= 3, intent.name
        assert all(p.description for p in intent.parameters), intent.name
    replaced = {old for intent in example_catalog.intents for old in intent.replaces}
    assert "music_control" in replaced and "music_control" not in example_catalog
    assert any(len(i.parameters) == 2 for i in example_catalog.intents)


def test_records_follow_the_contract(records: list[dict], example_catalog: Catalog) -> None:
    assert [r["id"] for r in records] == [f"assistant-{n:05d}" for n in range(1, len(records) + 1)]
    for record in records:
        calls = parse_calls(record["output"])
        assert record["output"] == render_calls(calls), record["id"]
        assert record["intent"] == calls[0].name and record["params"] == list(calls[0].args), record["id"]
        assert record["calls"] == [{"name": c.name, "args": list(c.args)} for c in calls], record["id"]
        assert record["lang"] == ("zh" if re.search(r"[\u4e00-\u9fff]", record["text"]) else "en"), record["id"]
        assert record["source_line"] is None
        for call in calls:
            intent = example_catalog.get(call.name)
            assert intent is not None, f"{record['id']}: unknown intent {call.name}"
            assert len(call.args) == len(intent.parameters), f"{record['id']}: wrong arity for {call.name}"
            for value in call.args:
                assert value in record["text"], f"{record['id']}: {value!r} not in {record['text']!r}"


def test_every_intent_has_enough_single_intent_data_in_both_languages(
    records: list[dict], example_catalog: Catalog
) -> None:
    singles = Counter((r["intent"], r["lang"]) for r in records if len(r["calls"]) == 1)
    per_intent = Counter(r["intent"] for r in records)
    for name in example_catalog.names:
        assert singles[name, "zh"] >= 30 and singles[name, "en"] >= 30, name
        assert singles[name, "zh"] + singles[name, "en"] >= 60, name
        assert 60 <= per_intent[name] <= 100, name
    langs = Counter(r["lang"] for r in records)
    assert abs(langs["zh"] - langs["en"]) <= 0.1 * len(records)


def test_texts_are_unique_and_multi_intent_share_is_sensible(records: list[dict]) -> None:
    normalised = [re.sub(r"[\W_]+", "", r["text"].lower()) for r in records]
    assert len(set(normalised)) == len(records)
    multi = [r for r in records if len(r["calls"]) > 1]
    assert 0.10 <= len(multi) / len(records) <= 0.15
    single_intents = {r["intent"] for r in records if len(r["calls"]) == 1}
    for record in multi:
        assert {c["name"] for c in record["calls"]} <= single_intents, record["id"]
    # multi-turn asks are joined into one instruction as in seed 002: "我想听音乐。给我放个周杰伦的音乐吧。"
    openers = ("我想听音乐。", "I want to listen to some music. ")
    multi_turn = [r for r in records if r["text"].startswith(openers)]
    assert {r["lang"] for r in multi_turn} == {"zh", "en"}
    assert all(r["output"] == f"play_music({r['params'][0]})" for r in multi_turn)


def test_manifest_is_an_itag_export_of_the_records(records: list[dict], manifest_lines: list[str]) -> None:
    texts = {r["text"]: r["output"] for r in records}
    parsed, broken, abandoned, overrides = 0, 0, 0, 0
    for raw in manifest_lines:
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            broken += 1
            continue
        if line["abandonFlag"] == 1:
            abandoned += 1
            assert line["abandonRemark"]
            continue
        reviewed_keys = [k for k in line if TASK_LABEL.match(k)]
        instruction = line["data"].get("instruction")
        if not reviewed_keys or instruction not in texts:
            broken += 1
            continue
        (key,) = reviewed_keys
        system = line[f"{key}-system"]["results"][0]
        reviewed = line[key]["results"][0]
        assert system["UserMarkResultId"] is None and reviewed["UserMarkResultId"]
        assert system["MarkResultId"] == reviewed["MarkResultId"]
        output = json.loads(reviewed["MarkResult"])["annotations"][0]["labels"]["output"]
        assert render_calls(parse_calls(output)) == texts[instruction]
        pre_label = json.loads(system["MarkResult"])["annotations"][0]["labels"]["output"]
        overrides += render_calls(parse_calls(pre_label)) != texts[instruction]
        parsed += 1
    assert parsed == len(records)
    assert len(manifest_lines) == len(records) + abandoned + broken
    assert 0.03 <= overrides / len(records) <= 0.07
    assert 0.005 <= abandoned / len(manifest_lines) <= 0.02
    assert 5 <= broken < 0.01 * len(manifest_lines)


def test_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    counts = _load_generator().generate(tmp_path)
    for name in ("records.jsonl", "manifest.jsonl"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE_DIR / name).read_bytes(), (
            f"{name} is stale: rerun generate.py"
        )
    assert counts["records"] == sum(1 for _ in read_jsonl(tmp_path / RECORDS_FILE))


def test_small_dataset_fixture_layout(small_dataset_dir: Path) -> None:
    manifest = json.loads((small_dataset_dir / DATASET_MANIFEST).read_text(encoding="utf-8"))
    unseen = set(manifest["unseen_intents"])
    seen_by_split: dict[str, set[bool]] = defaultdict(set)
    for split in ("train", "val", "test"):
        rows = list(read_jsonl(small_dataset_dir / split_file(split)))
        assert len(rows) == manifest["counts"][split]["total"]
        for row in rows:
            assert row["seen"] is (row["intent"] not in unseen)
            seen_by_split[split].add(row["seen"])
        if split != "test":
            assert not {c["name"] for r in rows for c in r["calls"]} & unseen
    assert seen_by_split["test"] == {True, False}
    catalog_text = (small_dataset_dir / CATALOG_FILE).read_text(encoding="utf-8")
    assert all(f"name: {name}" in catalog_text for name in unseen)
