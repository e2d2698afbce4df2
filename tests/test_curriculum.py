"""Hard-sample mining on hand-made rollout logs: exactly the not-all-perfect samples, ratios, reports, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from intentops.config import MiningConfig
from intentops.io import read_jsonl, write_jsonl
from intentops.rewards import REWARD_WEIGHTS_METADATA
from intentops.training.curriculum import mine_hard_samples

INTENTS = ["play_music", "weather_search", "volume_down"]


@pytest.fixture
def train_path(tmp_path: Path) -> Path:
    records = [
        {"id": f"s{i}", "text": f"text {i}", "output": f"{INTENTS[i % 3]}()", "intent": INTENTS[i % 3], "extra": i}
        for i in range(12)
    ]
    path = tmp_path / "train.jsonl"
    write_jsonl(path, records)
    return path


def _rows(per_sample: dict[str, list[tuple[float, float, float]]], step: int, weights: list[float]) -> list[dict]:
    """Rollout rows: per sample id, (format, intent, params) for each generation."""
    return [
        {
            "sample_id": sample_id,
            "step": step,
            "generation": generation,
            "completion": "x",
            "reward_format": fmt,
            "reward_intent": intent,
            "reward_params": params,
            "reward_total": weights[0] * fmt + weights[1] * intent + weights[2] * params,
        }
        for sample_id, generations in per_sample.items()
        for generation, (fmt, intent, params) in enumerate(generations)
    ]


def _rollouts(path: Path, *steps: dict[str, list[tuple[float, float, float]]], weights=None) -> Path:
    """Write a rollout log with one entry of `steps` per training step, recording the weights like GRPO does."""
    weights = weights or [1.0, 1.0, 1.0]
    rows = [row for step, per_sample in enumerate(steps) for row in _rows(per_sample, step, weights)]
    table = pa.Table.from_pylist(rows).replace_schema_metadata({REWARD_WEIGHTS_METADATA: json.dumps(weights)})
    pq.write_table(table, path)
    return path


PERFECT = (1.0, 1.0, 1.0)


def test_selects_exactly_the_samples_with_an_imperfect_rollout(tmp_path: Path, train_path: Path) -> None:
    per_sample = {
        "s0": [PERFECT] * 4,
        "s1": [PERFECT, PERFECT, PERFECT, (1.0, 1.0, 0.0)],  # one rollout missed the params: hard
        "s2": [(0.0, 0.0, 0.0)] * 4,
        "s3": [PERFECT] * 4,
        "s4": [(1.0, 0.0, 0.0), PERFECT, PERFECT, PERFECT],
        "s5": [PERFECT] * 4,
    }
    rollouts = _rollouts(tmp_path / "r.parquet", per_sample)
    report = mine_hard_samples(rollouts, train_path, MiningConfig(), tmp_path / "out")
    selected = list(read_jsonl(tmp_path / "out" / "train.jsonl"))
    assert [r["id"] for r in selected] == ["s1", "s2", "s4"]  # training-file order
    assert selected[0] == next(r for r in read_jsonl(train_path) if r["id"] == "s1")  # every field kept
    assert report.hard_ids == ["s1", "s2", "s4"]
    assert (report.hard, report.easy, report.unscored, report.selected) == (3, 3, 6, 3)
    assert report.per_intent["weather_search"] == {"hard": 2, "easy": 0, "unscored": 2, "selected": 2}  # s1, s4
    assert sum(report.histogram["counts"]) == 6 and report.max_reward == 3.0
    saved = json.loads((tmp_path / "out" / "mining_report.json").read_text())
    assert saved["hard_ids"] == report.hard_ids
    markdown = (tmp_path / "out" / "mining_report.md").read_text()
    assert "3 hard of 6 scored samples" in markdown and "| play_music |" in markdown


def test_threshold_mix_ratio_unscored_and_last_steps(tmp_path: Path, train_path: Path) -> None:
    per_sample = {f"s{i}": [PERFECT] * 4 for i in range(8)}
    per_sample["s0"] = [PERFECT, PERFECT, PERFECT, (0.0, 0.0, 0.0)]  # 75% perfect
    per_sample["s1"] = [PERFECT, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]  # 25% perfect
    rollouts = _rollouts(tmp_path / "r.parquet", per_sample)

    lenient = mine_hard_samples(rollouts, train_path, MiningConfig(hard_threshold=0.5), tmp_path / "a")
    assert lenient.hard_ids == ["s1"]

    mixed = mine_hard_samples(rollouts, train_path, MiningConfig(easy_per_hard=2.0, seed=3), tmp_path / "b")
    ids = [r["id"] for r in read_jsonl(tmp_path / "b" / "train.jsonl")]
    assert mixed.hard == 2 and mixed.easy_selected == 4 and len(ids) == 6
    assert {"s0", "s1"} <= set(ids) and set(ids) <= {f"s{i}" for i in range(8)}
    mine_hard_samples(rollouts, train_path, MiningConfig(easy_per_hard=2.0, seed=3), tmp_path / "c")
    assert [r["id"] for r in read_jsonl(tmp_path / "c" / "train.jsonl")] == ids  # seeded

    with_unscored = mine_hard_samples(rollouts, train_path, MiningConfig(include_unscored=True), tmp_path / "d")
    assert with_unscored.selected == 2 + 4  # s8..s11 were never rolled out

    # the later step is all perfect: scoring only it finds nothing hard
    all_perfect = {sample_id: [PERFECT] * 4 for sample_id in per_sample}
    two_steps = _rollouts(tmp_path / "r2.parquet", per_sample, all_perfect)
    recent = mine_hard_samples(two_steps, train_path, MiningConfig(last_steps_only=1), tmp_path / "e")
    assert recent.hard == 0 and recent.steps_used == [1]


def test_perfect_is_judged_with_the_weights_used(tmp_path: Path, train_path: Path) -> None:
    # params weighted 0: a rollout with wrong params still earns the maximum reward, so it is not hard
    per_sample = {"s0": [(1.0, 1.0, 0.0)] * 4, "s1": [(1.0, 0.0, 0.0)] * 4}
    rollouts = _rollouts(tmp_path / "r.parquet", per_sample, weights=[1.0, 1.0, 0.0])
    report = mine_hard_samples(rollouts, train_path, MiningConfig(), tmp_path / "out")
    assert report.hard_ids == ["s1"] and report.max_reward == 2.0


def test_nothing_hard_writes_an_empty_set_and_says_so(tmp_path: Path, train_path: Path) -> None:
    rollouts = _rollouts(tmp_path / "r.parquet", {"s0": [PERFECT] * 4, "s1": [PERFECT] * 4})
    report = mine_hard_samples(rollouts, train_path, MiningConfig(), tmp_path / "out")
    assert report.hard == 0 and report.selected == 0
    assert (tmp_path / "out" / "train.jsonl").read_text() == ""
    assert "no hard samples" in report.message
    assert "no hard samples" in (tmp_path / "out" / "mining_report.md").read_text()


def test_rollouts_from_another_training_set_are_an_error(tmp_path: Path, train_path: Path) -> None:
    rollouts = _rollouts(tmp_path / "r.parquet", {"other-1": [PERFECT] * 2})
    with pytest.raises(ValueError, match="none of its 1 sample ids"):
        mine_hard_samples(rollouts, train_path, MiningConfig(), tmp_path / "out")
    pq.write_table(pa.table({"sample_id": ["s0"], "step": [0]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="lacks column"):
        mine_hard_samples(tmp_path / "bad.parquet", train_path, MiningConfig(), tmp_path / "out")


def test_cli_mine(tmp_path: Path, train_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from intentops.cli import main

    rollouts = _rollouts(tmp_path / "r.parquet", {"s0": [PERFECT] * 2, "s1": [(0.0, 0.0, 0.0)] * 2})
    code = main(
        [
            "train",
            "mine",
            "--rollouts",
            str(rollouts),
            "--train",
            str(train_path),
            "--out",
            str(tmp_path / "out"),
            "--set",
            "mining__easy_per_hard=1",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["hard"] == 1 and summary["selected"] == 2
    assert (
        main(
            [
                "train",
                "mine",
                "--rollouts",
                str(tmp_path / "no.parquet"),
                "--train",
                str(train_path),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
