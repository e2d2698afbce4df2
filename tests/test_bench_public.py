"""bench/public: turning a normalised public dataset into IntentOps datasets, and the one-command benchmark.

Everything runs on a small synthetic dataset written here, shaped like the normalised CLINC150 file (official
train/val/test splits, out-of-scope records flagged `is_oos`), so the tests never need ../shared.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from intentops.artifacts import (
    CATALOG_FILE,
    DATASET_MANIFEST,
    RECORDS_FILE,
    TRAIN_FILE,
    VALIDATION_DIR,
    VALIDATION_JSON,
    split_file,
)
from intentops.catalog import load_catalog
from intentops.grammar import parse_call

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "public"

# 20 intents, each with its own keyword, so generated descriptions and classifiers have something to find.
KEYWORDS = [
    "balance", "transfer", "alarm", "weather", "recipe", "flight", "hotel", "taxi", "music", "volume",
    "calendar", "reminder", "timer", "translate", "calculator", "news", "traffic", "restaurant", "insurance", "pin",
]  # fmt: skip
TEMPLATES = [
    "please help me with {k} right now",
    "i need the {k} thing done",
    "can you do {k} for me today",
    "what about my {k} question",
    "show {k} details please",
    "tell me about {k}",
    "{k} is what i want",
    "quick {k} request",
    "could you check {k}",
    "i would like some {k} help",
    "{k} now",
    "start {k}",
    "open {k} for me",
    "handle {k} quickly",
    "my {k} please",
    "do the {k}",
]
SIZES = {"train": 10, "val": 3, "test": 3}


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # run.py imports prepare.py as its sibling, as when run as a script
    spec = importlib.util.spec_from_file_location(f"bench_public_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prep() -> ModuleType:
    return _load("prepare")


def _intent_label(index: int, keyword: str) -> str:
    return "reverted_card_payment?" if index == 0 else f"{keyword}_request"


def write_normalised(path: Path, n_intents: int = 20, oos: bool = True, bad_lines: bool = True) -> Path:
    """A CLINC-shaped normalised file: per intent 10/3/3 records, 4 oos records per split, and three bad lines."""
    rows = []
    for index, keyword in enumerate(KEYWORDS[:n_intents]):
        offset = 0
        for split, count in SIZES.items():
            for template in TEMPLATES[offset : offset + count]:
                text = template.format(k=keyword)
                rows.append({"text": text, "intent": _intent_label(index, keyword), "split": split, "lang": "en"})
            offset += count
    if oos:
        for split in SIZES:
            for n in range(4):
                rows.append({"text": f"sing me a lullaby {split} {n}", "intent": "oos", "split": split, "is_oos": True})
    if bad_lines:
        rows.append({"text": "   ", "intent": "alarm_request", "split": "train"})
        rows.append({"text": "no split here", "intent": "alarm_request", "split": "dev"})
    lines = [json.dumps(row) + "\n" for row in rows]
    if bad_lines:
        lines.append('{"text": "cut off mid-line\n')
    path.write_text("".join(lines), encoding="utf-8")
    return path


def read_split(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / split_file(split)).read_text(encoding="utf-8").splitlines()]


def test_in_domain_layout_records_and_rejects(prep: ModuleType, tmp_path: Path) -> None:
    source = write_normalised(tmp_path / "toy.jsonl")
    out = tmp_path / "ds"
    report = prep.prepare(source, out, "in_domain", max_train_per_intent=6, max_test_per_intent=2)

    for name in (TRAIN_FILE, split_file("val"), split_file("test"), CATALOG_FILE, DATASET_MANIFEST, "rejects.jsonl"):
        assert (out / name).is_file(), name
    catalog = load_catalog(out / CATALOG_FILE)
    assert len(catalog.names) == 20
    assert "reverted_card_payment" in catalog.names  # `?` sanitised, and the rename recorded
    assert report.renamed == {"reverted_card_payment?": "reverted_card_payment"}
    assert all(not intent.parameters for intent in catalog.intents)

    train, test = read_split(out, "train"), read_split(out, "test")
    assert Counter(r["intent"] for r in train) == dict.fromkeys(catalog.names, 6)
    assert Counter(r["intent"] for r in test) == dict.fromkeys(catalog.names, 2)
    for record in train + test:
        call = parse_call(record["output"])
        assert call.name == record["intent"] and call.args == ()
        assert record["seen"] is True and record["params"] == []
    assert not any("lullaby" in r["text"] for r in train + test + read_split(out, "val")), "oos must be excluded"
    assert report.oos == "excluded"

    rejects = read_split(out, "rejects")
    assert sorted(r["reason"] for r in rejects) == ["empty_text", "not_json", "unknown_split"]
    assert rejects[-1]["line"] == len((tmp_path / "toy.jsonl").read_text().splitlines())
    manifest = json.loads((out / DATASET_MANIFEST).read_text())
    assert {split: block["total"] for split, block in manifest["counts"].items()} == {
        "train": 120,
        "val": 60,
        "test": 40,
    }
    assert manifest["catalog_hash"] == catalog.content_hash
    assert (out / VALIDATION_DIR / VALIDATION_JSON).is_file()
    assert report.validation.get("duplicate_text", 0) == 0  # every synthetic utterance is distinct


def test_descriptions_name_words_plus_distinctive_terms(prep: ModuleType, tmp_path: Path) -> None:
    source = write_normalised(tmp_path / "toy.jsonl")
    prep.prepare(source, tmp_path / "ds", "in_domain")
    catalog = load_catalog(tmp_path / "ds" / CATALOG_FILE)
    description = catalog.get("weather_request").description
    assert description.startswith("weather request; typical requests mention: ")
    # the intent's own keyword is its most distinctive term; template words shared by every intent are not
    assert description.split(": ", 1)[1].split(", ")[0] == "weather"
    assert "please" not in description


def test_prepare_is_deterministic(prep: ModuleType, tmp_path: Path) -> None:
    source = write_normalised(tmp_path / "toy.jsonl")
    for out in ("a", "b"):
        prep.prepare(source, tmp_path / out, "unseen", max_train_per_intent=5, seed=7)
    for name in (TRAIN_FILE, split_file("val"), split_file("test"), CATALOG_FILE, DATASET_MANIFEST):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_unseen_holds_ten_percent_of_intents_out_of_training(prep: ModuleType, tmp_path: Path) -> None:
    source = write_normalised(tmp_path / "toy.jsonl")
    out = tmp_path / "unseen"
    report = prep.prepare(source, out, "unseen", max_test_per_intent=3)
    catalog = load_catalog(out / CATALOG_FILE)
    unseen = set(report.unseen_intents)
    assert len(unseen) == 2  # 10% of 20
    assert unseen <= set(catalog.names), "held-out intents stay in the catalog"
    trained = {r["intent"] for r in read_split(out, "train")} | {r["intent"] for r in read_split(out, "val")}
    assert trained == set(catalog.names) - unseen
    test = read_split(out, "test")
    assert {r["intent"] for r in test if not r["seen"]} == unseen
    assert all(r["seen"] == (r["intent"] not in unseen) for r in test)
    assert json.loads((out / DATASET_MANIFEST).read_text())["unseen_intents"] == sorted(unseen)
    # a different seed holds out different intents
    other = prep.prepare(source, tmp_path / "other", "unseen", seed=1)
    assert set(other.unseen_intents) != unseen or len(catalog.names) <= 2


def test_same_records_for_seen_intents_in_every_protocol(prep: ModuleType, tmp_path: Path) -> None:
    source = write_normalised(tmp_path / "toy.jsonl")
    kw = {"max_train_per_intent": 4, "max_test_per_intent": 2}
    prep.prepare(source, tmp_path / "in", "in_domain", **kw)
    report = prep.prepare(source, tmp_path / "un", "unseen", **kw)
    for split in ("train", "test"):
        in_domain = {r["id"] for r in read_split(tmp_path / "in", split) if r["intent"] not in report.unseen_intents}
        unseen = {r["id"] for r in read_split(tmp_path / "un", split) if r["intent"] not in report.unseen_intents}
        assert in_domain == unseen, split


def test_oos_protocol_labels_out_of_scope_uncertain(prep: ModuleType, tmp_path: Path) -> None:
    source = write_normalised(tmp_path / "toy.jsonl")
    out = tmp_path / "oos"
    report = prep.prepare(source, out, "oos", max_train_per_intent=3, max_test_per_intent=3)
    catalog = load_catalog(out / CATALOG_FILE)
    assert "uncertain" not in catalog.names  # the prompt builder offers it, the catalog never lists it
    train, test = read_split(out, "train"), read_split(out, "test")
    oos_train = [r for r in train if "lullaby" in r["text"]]
    oos_test = [r for r in test if "lullaby" in r["text"]]
    assert len(oos_train) == 3, "a few oos training examples (the per-intent cap) teach the uncertain label"
    assert oos_test and all(r["output"] == "uncertain()" and r["intent"] == "uncertain" for r in oos_test + oos_train)
    assert not any(r["intent"] == "uncertain" for r in train + test if "lullaby" not in r["text"])
    assert report.oos == "uncertain" and report.oos_counts["test"] == len(oos_test)


def test_oos_test_share_follows_the_official_ratio(prep: ModuleType, tmp_path: Path) -> None:
    source = write_normalised(tmp_path / "toy.jsonl")
    # official test: 60 in scope, 4 oos; keeping 1 of 3 in-scope per intent keeps 1/3 of oos too (4/3 -> 1)
    report = prep.prepare(source, tmp_path / "oos", "oos", max_test_per_intent=1)
    assert report.oos_counts["test"] == 1
    full = prep.prepare(source, tmp_path / "full", "oos")
    assert full.oos_counts["test"] == 4
    # half the intents, all their test records: 30 of the official 60 in-scope, so 2 of the 4 oos
    half = prep.prepare(source, tmp_path / "half", "oos", max_intents=10)
    assert half.oos_counts["test"] == 2


def test_protocol_errors_name_the_problem(prep: ModuleType, tmp_path: Path) -> None:
    source = write_normalised(tmp_path / "toy.jsonl", oos=False)
    with pytest.raises(prep.PrepareError, match="out-of-scope"):
        prep.prepare(source, tmp_path / "x", "oos")
    with pytest.raises(prep.PrepareError, match="unknown protocol"):
        prep.prepare(source, tmp_path / "x", "zero_shot")
    with pytest.raises(prep.PrepareError, match="not found"):
        prep.prepare(tmp_path / "missing.jsonl", tmp_path / "x")
    assert not (tmp_path / "x").exists(), "a failed prepare leaves no dataset behind"


def test_val_carved_from_train_when_there_is_no_official_val(prep: ModuleType, tmp_path: Path) -> None:
    rows = [
        json.loads(line)
        for line in write_normalised(tmp_path / "toy.jsonl", oos=False, bad_lines=False).read_text().splitlines()
    ]
    source = tmp_path / "noval.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows if r["split"] != "val"))
    report = prep.prepare(source, tmp_path / "ds", "in_domain", carve_val_per_intent=2)
    assert report.val_source == "carved from train"
    train, val = read_split(tmp_path / "ds", "train"), read_split(tmp_path / "ds", "val")
    assert Counter(r["intent"] for r in val) == dict.fromkeys({r["intent"] for r in train}, 2)
    assert not {r["id"] for r in train} & {r["id"] for r in val}


def _results(rows: list[dict]) -> dict:
    data = {
        "intents": 4,
        "unseen_intents": ["alarm_request"],
        "counts": {"train": 18, "val": 3, "test": 8},
        "val_source": "official",
        "oos": "excluded",
        "oos_counts": {"train": 0, "val": 0, "test": 0},
    }
    machine = {"cpu_cores": 2, "memory_gib": 23.5, "gpu": None, "torch": "2", "python": "3.11"}
    return {
        "name": "toy",
        "command": "python bench/public/run.py --datasets-dir d",
        "finished": "today",
        "commit": "abc",
        "machine": {**machine, "load_average_1m": 1.0, "load_average_1m_end": 1.0},
        "torch_threads": 1,
        "config": "configs/tiny-cpu.yaml",
        "overrides": [],
        "wall_s": 60.0,
        "datasets": ["toy"],
        "protocols": [
            {"dataset": "toy", "protocol": "unseen", "data": data, "rows": rows, "skipped": ""},
            {"dataset": "toy", "protocol": "oos", "data": {}, "rows": [], "skipped": "no out-of-scope records"},
        ],
    }


def test_report_block_replaced_in_place_with_failures_visible(tmp_path: Path) -> None:
    rows, rep = _load("rows"), _load("report")
    ok = rows.Row(method="SFT", decoding="generate", accuracy=0.5, macro_f1=0.4, train_s=3.0, eval_s=1.0)
    failed = rows.Row(method="SFT + GRPO", decoding="generate", error="RewardCollapseError: mean reward 0")
    results = _results([vars(ok), vars(failed)])
    compared = rows.Row(method="GRPO from base", decoding="generate", accuracy=0.25, protocol="grpo_from_base")
    broken = rows.Row(method="SFT, 1 epochs", decoding="", protocol="sft_vs_grpo", error="ValueError: boom")
    results["protocols"][0]["comparisons"] = [vars(compared), vars(broken)]
    report = tmp_path / "RESULTS.md"
    report.write_text("# Results\n\nprose before\n")
    rep.update_report(report, rep.render_block(results), results["name"])
    report.write_text(report.read_text() + "\nprose after\n")
    results["finished"] = "tomorrow"
    rep.update_report(report, rep.render_block(results), results["name"])

    text = report.read_text()
    start, end = rep.marks(results["name"])
    assert text.count(start) == 1 and text.count(end) == 1
    assert text.index("prose before") < text.index(start) < text.index(end) < text.index("prose after")
    assert "Measured tomorrow" in text and "Measured today" not in text
    table = [line for line in text.splitlines() if line.startswith("| unseen |")]
    assert table[0].startswith("| unseen | SFT | generate | 50.0 | 40.0 |")
    assert "RewardCollapseError" in table[1] and table[1].count("|") == table[0].count("|")
    assert "- `oos`: skipped (no out-of-scope records)" in text
    seed = [line for line in text.splitlines() if line.startswith(("| grpo_from_base |", "| sft_vs_grpo |"))]
    assert seed[0].startswith("| grpo_from_base | GRPO from base | 25.0 |")
    assert "ValueError: boom" in seed[1] and seed[1].count("|") == seed[0].count("|")


def test_grpo_epochs_counts_prompts_per_step() -> None:
    protocols = _load("protocols")
    from intentops.config import load_config

    cfg = load_config(
        overrides={"grpo__batch_size": 8, "grpo__num_generations": 4, "grpo__gradient_accumulation_steps": 3}
    )
    # 8 completions / 4 per prompt = 2 prompts per micro-batch, x3 accumulation = 6 prompts per step
    assert protocols.grpo_epochs(cfg, steps=10, n_train=30) == pytest.approx(2.0)


@pytest.fixture(scope="module")
def variants() -> ModuleType:
    return _load("variants")


def test_bundled_cross_lingual_split(variants: ModuleType, tmp_path: Path) -> None:
    example = ROOT / "examples" / "assistant"
    info = variants.prepare_bundled(
        example / RECORDS_FILE, example / CATALOG_FILE, tmp_path, max_intents=4, max_train_per_intent=6,
        max_test_per_intent=2,
    )  # fmt: skip
    assert (info["train_lang"], info["test_lang"], info["intents"]) == ("zh", "en", 4)
    same, cross = (tmp_path / "same", tmp_path / "cross")
    catalog = load_catalog(same / CATALOG_FILE)
    assert {"music_pause", "music_resume"} <= set(catalog.names), "the replaces group is always kept"
    assert read_split(same, "train") == read_split(cross, "train")
    assert {r["lang"] for r in read_split(same, "train") + read_split(same, "test")} == {"zh"}
    assert {r["lang"] for r in read_split(cross, "test")} == {"en"}
    assert Counter(r["intent"] for r in read_split(same, "train")) == dict.fromkeys(catalog.names, 5)  # 6 - 1 val
    assert not {r["id"] for r in read_split(same, "train")} & {r["id"] for r in read_split(same, "test")}
    assert info["counts"]["cross"]["test"] == info["counts"]["same"]["test"] == 8


def test_merge_and_split_through_replaces(variants: ModuleType, prep: ModuleType, tmp_path: Path) -> None:
    source = write_normalised(tmp_path / "toy.jsonl", n_intents=4, oos=False, bad_lines=False)
    prep.prepare(source, tmp_path / "ds", "in_domain")
    catalog = load_catalog(tmp_path / "ds" / CATALOG_FILE)
    group, merged = variants.pick_merge_group(catalog, seed=42)
    assert len(group) == 2 and merged == f"{group[0]}_or_{group[1]}"  # no replaces group: a seeded pair

    new = variants.merge_intents(tmp_path / "ds", group, merged, tmp_path / "merged")
    assert new.get(merged).replaces == tuple(group) and not set(group) & set(new.names)
    before, after = read_split(tmp_path / "ds", "test"), read_split(tmp_path / "merged", "test")
    for old, row in zip(before, after, strict=True):
        assert row["output"] == (f"{merged}()" if old["intent"] in group else old["output"])
        assert row["intent"] == parse_call(row["output"]).name
    assert variants.replaced_groups(new) == {}

    split = variants.with_replaces(tmp_path / "ds", group, merged, tmp_path / "split")
    assert variants.replaced_groups(split) == {merged: group}
    assert variants.pick_merge_group(split, seed=0) == (group, merged)

    # gold merged intent: an old-catalog answer naming a replaced intent counts only when mapped forward
    predictions = [
        {"gold_intent": merged, "intent": group[0]},
        {"gold_intent": merged, "intent": merged},
        {"gold_intent": merged, "intent": "other"},
        {"gold_intent": "other", "intent": "other"},
    ]
    assert variants.replaced_accuracy(predictions, new, [merged], mapped=False) == pytest.approx(1 / 3)
    assert variants.replaced_accuracy(predictions, new, [merged], mapped=True) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="parameterless"):  # PrepareError, as imported by variants.py
        variants.merge_intents(tmp_path / "ds", group[:1], merged, tmp_path / "bad")


@pytest.mark.slow
def test_run_smoke_end_to_end(tmp_path: Path) -> None:
    """The CI-sized benchmark: the chain on in_domain, every seed protocol, the JSON and the regenerated table."""
    data = tmp_path / "datasets"
    data.mkdir()
    write_normalised(data / "toy.jsonl")
    report = tmp_path / "RESULTS.md"
    report.write_text("# Results\n\nHand-written reading that must survive.\n")
    command = [
        sys.executable,
        str(BENCH / "run.py"),
        "--datasets-dir", str(data),
        "--datasets", "toy",
        "--smoke",
        "--results-dir", str(tmp_path / "results"),
        "--report", str(report),
        "--work-dir", str(tmp_path / "work"),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}  # the bench keeps its MLflow runs in the work dir
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]

    results = json.loads((tmp_path / "results" / "smoke.json").read_text())
    blocks = {block["protocol"]: block for block in results["protocols"]}
    assert set(blocks) == {"in_domain", "bundled"}
    block = blocks["in_domain"]
    methods = [row["method"] for row in block["rows"]]
    assert methods[:4] == ["TF-IDF + linear", "SFT", "SFT + GRPO", "SFT + GRPO + RCS"]
    assert block["rows"][4]["decoding"] == "label_scoring" and block["rows"][4]["method"] in methods[1:4]
    for row in [*block["rows"], *block["comparisons"], *blocks["bundled"]["comparisons"]]:
        assert not row["error"], row
        assert 0.0 <= row["accuracy"] <= 1.0 and row["train_s"] > 0
    model_costs = [row["train_s"] for row in block["rows"][1:4]]
    assert model_costs == sorted(model_costs), "training time is cumulative along the chain"
    assert block["data"]["intents"] == 4
    assert block["rows"][0]["accuracy"] >= 0.75, "one keyword per intent: the baseline must find it"

    compared = Counter(row["protocol"] for row in block["comparisons"])
    assert compared == dict.fromkeys(
        ["sft_vs_grpo", "grpo_from_base", "format_reward", "online_filtering", "uncertain_label"], 2
    )
    relabelled = [r for r in block["comparisons"] if r["protocol"] == "uncertain_label"][1]
    assert "relabelled uncertain()" in relabelled["note"] and "uncertain rate" in relabelled["note"]
    bundled = Counter(row["protocol"] for row in blocks["bundled"]["comparisons"])
    assert bundled == {"cross_lingual": 4, "catalog_change": 4}
    assert blocks["bundled"]["data"]["catalog_change"]["merged_intent"] == "music_control"

    text = report.read_text()
    assert "Hand-written reading that must survive." in text
    assert text.count("| in_domain | SFT + GRPO + RCS |") == 1
    assert text.count("| online_filtering |") == 2 and text.count("| cross_lingual |") == 4
    assert ("--smoke" in text and "no GPU" in text) or "GPU" in text
