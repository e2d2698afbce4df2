"""Hard-sample mining on hand-made scoring passes: exactly the not-all-perfect samples, the params knob, coverage,
set-hash and missing-score errors, ratios, reports, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from intentops.artifacts import MINING_REPORT_JSON, MINING_REPORT_MD, TRAIN_FILE
from intentops.config import MiningConfig
from intentops.io import read_jsonl, write_jsonl
from intentops.training.curriculum import mine_hard_samples
from intentops.training.rollouts import (
    GENERATIONS_METADATA,
    SKIPPED_METADATA,
    TRAIN_SET_HASH_METADATA,
    rollout_schema,
    train_set_hash,
)

INTENTS = ["play_music", "weather_search", "volume_down"]
PERFECT = (1.0, 1.0, 1.0)
WRONG = (0.0, 0.0, 0.0)


@pytest.fixture
def records() -> list[dict]:
    return [
        {"id": f"s{i}", "text": f"text {i}", "output": f"{INTENTS[i % 3]}()", "intent": INTENTS[i % 3], "extra": i}
        for i in range(6)
    ]


@pytest.fixture
def train_path(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / TRAIN_FILE
    write_jsonl(path, records)
    return path


def _scores(
    path: Path,
    per_sample: dict[str, list[tuple[float, float, float]]],
    records: list[dict],
    *,
    weights=(1.0, 1.0, 1.0),
    kind: str = "scoring",
    skipped: list[str] | None = None,
) -> Path:
    """A scoring-pass log: per sample id, (format, intent, params) for each of its completions."""
    rows = [
        {
            "sample_id": sample_id,
            "step": 0,
            "generation": generation,
            "completion": "x",
            "reward_format": f,
            "reward_intent": i,
            "reward_params": p,
            "reward_total": weights[0] * f + weights[1] * i + weights[2] * p,
        }
        for sample_id, generations in per_sample.items()
        for generation, (f, i, p) in enumerate(generations)
    ]
    meta = {
        TRAIN_SET_HASH_METADATA: train_set_hash(records),
        SKIPPED_METADATA: skipped or [],
        GENERATIONS_METADATA: max(len(g) for g in per_sample.values()),
    }
    pq.write_table(pa.Table.from_pylist(rows, schema=rollout_schema(list(weights), kind, **meta)), path)
    return path


def test_selects_exactly_the_samples_with_an_imperfect_completion(tmp_path: Path, train_path, records) -> None:
    per_sample = {
        "s0": [PERFECT] * 4,
        "s1": [PERFECT, PERFECT, PERFECT, (1.0, 0.0, 0.0)],  # one wrong intent: hard
        "s2": [WRONG] * 4,
        "s3": [PERFECT] * 4,
        "s4": [(0.0, 1.0, 1.0), PERFECT, PERFECT, PERFECT],  # one broken format: hard
        "s5": [PERFECT, PERFECT, (1.0, 1.0, 0.0), PERFECT],  # wrong params only: easy by default
    }
    scores = _scores(tmp_path / "s.parquet", per_sample, records)
    report = mine_hard_samples(scores, train_path, MiningConfig(), tmp_path / "out")
    selected = list(read_jsonl(tmp_path / "out" / TRAIN_FILE))
    assert [r["id"] for r in selected] == ["s1", "s2", "s4"]  # training-file order
    assert selected[0] == records[1]  # every field kept
    assert (report.hard, report.easy, report.selected, report.scored, report.coverage) == (3, 3, 3, 6, 1.0)
    # s1 and s4 are weather_search (i % 3 == 1), s2 and s5 volume_down, s0 and s3 play_music
    assert report.per_intent["weather_search"] == {"records": 2, "hard": 2, "selected": 2, "hard_share": 1.0}
    assert report.per_intent["volume_down"]["hard_share"] == 0.5
    assert report.per_intent["play_music"]["hard_share"] == 0.0
    # score = perfect completions out of 4: s2 0/4; s1, s4 3/4; s0, s3, s5 4/4
    assert report.score_histogram == {"0/4": 1, "1/4": 0, "2/4": 0, "3/4": 2, "4/4": 3}
    assert sum(report.reward_histogram["counts"]) == 6 and report.max_reward == 3.0
    ui = report.ui_metadata()
    assert ui["coverage"] == 1.0 and ui["hard_share"] == 0.5 and ui["hard_share/weather_search"] == 1.0
    assert json.loads((tmp_path / "out" / MINING_REPORT_JSON).read_text())["hard_ids"] == ["s1", "s2", "s4"]
    markdown = (tmp_path / "out" / MINING_REPORT_MD).read_text()
    assert "3 hard of 6 scored samples" in markdown and "| weather_search | 2 | 2 | 100.0% | 2 |" in markdown

    strict = mine_hard_samples(scores, train_path, MiningConfig(hard_includes_params=True), tmp_path / "p")
    assert strict.hard_ids == ["s1", "s2", "s4", "s5"]  # the params knob makes s5 hard


def test_threshold_and_mix_ratio(tmp_path: Path, train_path: Path, records) -> None:
    per_sample = {f"s{i}": [PERFECT] * 4 for i in range(6)}
    per_sample["s0"] = [PERFECT, PERFECT, PERFECT, WRONG]  # 3/4 perfect
    per_sample["s1"] = [PERFECT, WRONG, WRONG, WRONG]  # 1/4 perfect
    scores = _scores(tmp_path / "s.parquet", per_sample, records)
    assert mine_hard_samples(scores, train_path, MiningConfig(hard_threshold=0.5), tmp_path / "a").hard_ids == ["s1"]
    assert mine_hard_samples(scores, train_path, MiningConfig(hard_threshold=0.75), tmp_path / "t").hard_ids == ["s1"]

    mixed = mine_hard_samples(scores, train_path, MiningConfig(easy_per_hard=1.5, seed=3), tmp_path / "b")
    ids = [r["id"] for r in read_jsonl(tmp_path / "b" / TRAIN_FILE)]
    assert mixed.hard == 2 and mixed.easy_selected == 3 and len(ids) == 5 and {"s0", "s1"} <= set(ids)
    mine_hard_samples(scores, train_path, MiningConfig(easy_per_hard=1.5, seed=3), tmp_path / "c")
    assert [r["id"] for r in read_jsonl(tmp_path / "c" / TRAIN_FILE)] == ids  # seeded


def test_a_record_without_a_score_is_an_error_naming_it(tmp_path: Path, train_path: Path, records) -> None:
    per_sample = {f"s{i}": [PERFECT] * 2 for i in range(6) if i != 4}
    scores = _scores(tmp_path / "s.parquet", per_sample, records)
    with pytest.raises(ValueError, match=r"train\.jsonl:5: record 's4' has no score .*1 records lack one"):
        mine_hard_samples(scores, train_path, MiningConfig(), tmp_path / "out")
    # a record the pass skipped for an over-long prompt is reported, not an error
    skipped = _scores(tmp_path / "k.parquet", per_sample, records, skipped=["s4"])
    report = mine_hard_samples(skipped, train_path, MiningConfig(), tmp_path / "out")
    assert (report.scored, report.skipped, report.skipped_ids, report.coverage) == (5, 1, ["s4"], 5 / 6)


def test_a_log_from_another_training_set_or_of_training_rollouts_is_refused(
    tmp_path: Path, train_path: Path, records
) -> None:
    per_sample = {f"s{i}": [PERFECT] * 2 for i in range(6)}
    other = _scores(tmp_path / "o.parquet", per_sample, records[:5])  # hash of a different set
    with pytest.raises(ValueError, match=r"is not .*train\.jsonl"):
        mine_hard_samples(other, train_path, MiningConfig(), tmp_path / "out")
    training = _scores(tmp_path / "t.parquet", per_sample, records, kind="training")
    with pytest.raises(ValueError, match="a training rollout log, not the scoring pass"):
        mine_hard_samples(training, train_path, MiningConfig(), tmp_path / "out")
    pq.write_table(pa.table({"sample_id": ["s0"], "step": [0]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="lacks column"):
        mine_hard_samples(tmp_path / "bad.parquet", train_path, MiningConfig(), tmp_path / "out")


def test_set_hash_is_order_free_and_content_sensitive(records) -> None:
    assert train_set_hash(records) == train_set_hash(list(reversed(records)))
    assert train_set_hash(records) != train_set_hash(records[:-1])


def test_nothing_hard_writes_an_empty_set_and_says_so(tmp_path: Path, train_path: Path, records) -> None:
    scores = _scores(tmp_path / "s.parquet", {f"s{i}": [PERFECT] * 2 for i in range(6)}, records)
    report = mine_hard_samples(scores, train_path, MiningConfig(), tmp_path / "out")
    assert report.hard == 0 and report.selected == 0
    assert (tmp_path / "out" / TRAIN_FILE).read_text() == ""
    assert "no hard samples" in (tmp_path / "out" / MINING_REPORT_MD).read_text()


def test_cli_mine(tmp_path: Path, train_path: Path, records, capsys: pytest.CaptureFixture[str]) -> None:
    from intentops.cli import main

    per_sample = {f"s{i}": [PERFECT] * 2 for i in range(6)}
    per_sample["s1"] = [WRONG] * 2
    scores = _scores(tmp_path / "s.parquet", per_sample, records)
    argv = ["train", "mine", "--train", str(train_path), "--out", str(tmp_path / "out")]
    assert main([*argv, "--rollouts", str(scores), "--set", "mining__easy_per_hard=1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["hard"] == 1 and summary["selected"] == 2 and summary["coverage"] == 1.0
    assert main([*argv, "--rollouts", str(tmp_path / "no.parquet")]) == 2
