"""GRPO stages on the tiny profile: one reward row per rollout, stage 2 on the mined set, pass-on, collapse guard."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from intentops.artifacts import MODEL_CARD, ROLLOUT_COLUMNS, ROLLOUTS_FILE
from intentops.config import RunConfig
from intentops.io import write_jsonl
from intentops.models import read_model_card
from intentops.prompting import PromptBuilder
from intentops.rewards import RewardWeights, score_completion
from intentops.training.curriculum import mine_hard_samples
from intentops.training.grpo import RewardCollapseError, run_grpo
from intentops.training.sft import load_split

STEPS, BATCH, GENERATIONS = 3, 8, 4


@pytest.fixture(scope="module")
def grpo_config(training_config: RunConfig) -> RunConfig:
    return RunConfig.from_flat(
        {
            "grpo__stage1_max_steps": STEPS,
            "grpo__stage2_max_steps": 2,
            "grpo__batch_size": BATCH,
            "grpo__num_generations": GENERATIONS,
            "grpo__logging_steps": 1,
            "grpo__learning_rate": 5e-5,
        },
        base=training_config,
    )


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory, sft_model_dir: Path, small_dataset_dir: Path, grpo_config):
    out = tmp_path_factory.mktemp("grpo") / "grpo1"
    return run_grpo(small_dataset_dir / "train.jsonl", sft_model_dir, grpo_config, out, stage="grpo1")


def test_stage1_logs_exactly_one_reward_row_per_rollout(stage1, small_dataset_dir: Path) -> None:
    rollouts = pd.read_parquet(stage1.rollouts_path)
    assert tuple(rollouts.columns) == ROLLOUT_COLUMNS
    assert len(rollouts) == STEPS * BATCH  # steps x (prompts per step x num_generations)
    assert sorted(rollouts["step"].unique()) == list(range(STEPS))
    for _, group in rollouts.groupby(["step", "sample_id"]):
        assert sorted(group["generation"]) == list(range(GENERATIONS))  # a full group per prompt
    assert (rollouts.groupby("step")["sample_id"].nunique() == BATCH // GENERATIONS).all()
    train_ids = {r["id"] for r in load_split(small_dataset_dir / "train.jsonl")}
    assert set(rollouts["sample_id"]) <= train_ids


def test_stage1_rollout_rewards_match_the_reward_functions(stage1, small_dataset_dir: Path, grpo_config) -> None:
    rollouts = pd.read_parquet(stage1.rollouts_path)
    reference = {r["id"]: r["output"] for r in load_split(small_dataset_dir / "train.jsonl")}
    builder = PromptBuilder.from_model_dir(stage1.model_dir)
    weights = RewardWeights.from_config(grpo_config.grpo)
    for row in rollouts.itertuples():
        expected = score_completion(row.completion, reference[row.sample_id], builder, weights)
        assert (row.reward_format, row.reward_intent, row.reward_params, row.reward_total) == (
            expected.format,
            expected.intent,
            expected.params,
            expected.total,
        )
    # thanks to the SFT warm-up, sampled rollouts are often well-formed (the random-init model never is: see the
    # collapse test), and some name the right intent
    assert rollouts["reward_format"].mean() >= 0.25 and rollouts["reward_intent"].max() == 1.0


def test_stage1_writes_a_model_card_and_mlflow_metrics(stage1, sft_model_dir: Path, grpo_config) -> None:
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM

    card = read_model_card(stage1.model_dir)
    assert card["stage"] == "grpo1" and card["parent"]["stage"] == "sft"
    assert card["training"]["steps"] == STEPS and card["training"]["rollouts"] == STEPS * BATCH
    assert card["catalog_hash"] == read_model_card(sft_model_dir)["catalog_hash"]
    AutoModelForCausalLM.from_pretrained(stage1.model_dir)
    client = MlflowClient(grpo_config.registry.tracking_uri)
    run_id = card["training"]["mlflow_run_id"]
    assert client.get_run(run_id).data.tags["intentops.stage"] == "grpo1"
    rewards = client.get_metric_history(run_id, "reward")
    assert [m.step for m in rewards] == list(range(1, STEPS + 1))
    assert client.get_metric_history(run_id, "rewards/format/mean")


def test_stage2_trains_on_the_mined_hard_samples_only(tmp_path: Path, stage1, small_dataset_dir: Path, grpo_config):
    mined = mine_hard_samples(
        stage1.rollouts_path, small_dataset_dir / "train.jsonl", grpo_config.mining, tmp_path / "m"
    )
    assert mined.hard > 0, "a 3-step tiny policy should not be perfect on every sample"
    result = run_grpo(tmp_path / "m" / "train.jsonl", stage1.model_dir, grpo_config, tmp_path / "g2", stage="grpo2")
    assert not result.skipped and result.train_records == mined.hard
    stage2 = pd.read_parquet(result.rollouts_path)
    assert len(stage2) == 2 * BATCH
    assert set(stage2["sample_id"]) <= set(mined.hard_ids)
    card = read_model_card(result.model_dir)
    assert card["stage"] == "grpo2" and card["parent"]["stage"] == "grpo1"


def test_stage2_passes_the_model_on_when_nothing_is_hard(tmp_path: Path, stage1, grpo_config) -> None:
    empty = tmp_path / "train.jsonl"
    write_jsonl(empty, [])
    result = run_grpo(empty, stage1.model_dir, grpo_config, tmp_path / "g2", stage="grpo2")
    assert result.skipped and "no hard samples" in result.reason and result.rollouts_path is None
    card = read_model_card(result.model_dir)
    assert card["stage"] == "grpo2" and "no hard samples" in card["skipped"]
    assert card["parent"]["stage"] == "grpo1"
    weights = "model.safetensors"
    assert (result.model_dir / weights).read_bytes() == (stage1.model_dir / weights).read_bytes()
    assert not (result.model_dir / ROLLOUTS_FILE).exists()


def test_stage1_refuses_an_empty_training_set(tmp_path: Path, sft_model_dir: Path, grpo_config) -> None:
    empty = tmp_path / "train.jsonl"
    write_jsonl(empty, [])
    with pytest.raises(ValueError, match="no training records"):
        run_grpo(empty, sft_model_dir, grpo_config, tmp_path / "out", stage="grpo1")


def test_collapse_guard_stops_a_broken_policy(
    tmp_path: Path, tiny_model_dir: Path, small_dataset_dir: Path, grpo_config
):
    cfg = RunConfig.from_flat(
        {"grpo__stage1_max_steps": 20, "grpo__collapse_patience": 2, "grpo__max_completion_length": 8},
        base=grpo_config,
    )
    out = tmp_path / "collapsed"
    # the random-init model never produces a parseable call: reward and format validity stay at 0
    with pytest.raises(RewardCollapseError, match="collapse_patience=2"):
        run_grpo(small_dataset_dir / "train.jsonl", tiny_model_dir, cfg, out, stage="grpo1")
    assert not (out / MODEL_CARD).exists()  # no model handed on
    kept = pd.read_parquet(out / "rollouts.collapsed.parquet")
    assert len(kept) == 2 * BATCH and kept["reward_total"].max() == 0.0


def test_use_vllm_without_vllm_is_a_clear_error(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, grpo_config
):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    cfg = RunConfig.from_flat({"grpo__use_vllm": True}, base=grpo_config)
    with pytest.raises(ValueError, match="vllm is not importable"):
        run_grpo(small_dataset_dir / "train.jsonl", sft_model_dir, cfg, tmp_path / "out")


def test_batch_must_hold_whole_groups(grpo_config):
    """Rejected when the configuration is built, before any stage runs (tests/test_config.py has the rule)."""
    with pytest.raises(ValueError, match=r"not divisible by grpo__num_generations=4"):
        RunConfig.from_flat({"grpo__batch_size": 6, "grpo__num_generations": 4}, base=grpo_config)


def test_overlong_prompts_are_reported_not_truncated(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, grpo_config
):
    records = load_split(small_dataset_dir / "train.jsonl")[:3]
    records[0] = {**records[0], "text": "很长的句子" * 200}
    train = tmp_path / "train.jsonl"
    write_jsonl(train, records)
    cfg = RunConfig.from_flat({"grpo__stage1_max_steps": 1, "grpo__max_prompt_length": 256}, base=grpo_config)
    result = run_grpo(train, sft_model_dir, cfg, tmp_path / "out")
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejected_prompts.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == [records[0]["id"]] and "max_prompt_length=256" in rejects[0]["reason"]
    assert set(pd.read_parquet(result.rollouts_path)["sample_id"]) == {records[1]["id"], records[2]["id"]}


def test_a_set_smaller_than_one_step_is_cycled(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, grpo_config
):
    train = tmp_path / "train.jsonl"
    one = load_split(small_dataset_dir / "train.jsonl")[:1]
    write_jsonl(train, one)
    result = run_grpo(train, sft_model_dir, grpo_config, tmp_path / "out", stage="grpo2")
    rollouts = pd.read_parquet(result.rollouts_path)
    assert len(rollouts) == 2 * BATCH and set(rollouts["sample_id"]) == {one[0]["id"]}
    assert sorted(rollouts[rollouts["step"] == 0]["generation"]) == list(range(BATCH))


def test_cli_grpo_stage2_pass_on(tmp_path: Path, stage1, grpo_config, capsys: pytest.CaptureFixture[str]) -> None:
    from intentops.cli import main

    empty = tmp_path / "train.jsonl"
    write_jsonl(empty, [])
    uri = grpo_config.registry.tracking_uri
    argv = ["train", "grpo", "--train", str(empty), "--model", str(stage1.model_dir), "--out", str(tmp_path / "g2")]
    assert main([*argv, "--stage", "grpo2", "--set", f"registry__tracking_uri={uri}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skipped"] is True and "no hard samples" in summary["reason"]
    assert read_model_card(tmp_path / "g2")["stage"] == "grpo2"
    assert main([*argv, "--stage", "grpo1", "--set", f"registry__tracking_uri={uri}"]) == 2  # usage error, named
    assert "no training records" in capsys.readouterr().err
