"""GRPO stages on the tiny profile: one reward row per rollout, stage 2 on the mined set, pass-on, collapse guard."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from intentops.artifacts import (
    CATALOG_FILE,
    COLLAPSED_ROLLOUTS_FILE,
    MODEL_CARD,
    REJECTED_PROMPTS_FILE,
    ROLLOUT_COLUMNS,
    ROLLOUTS_FILE,
    SCORES_FILE,
    TRAIN_FILE,
)
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
    return run_grpo(small_dataset_dir / TRAIN_FILE, sft_model_dir, grpo_config, out, stage="grpo1")


def test_stage1_logs_exactly_one_reward_row_per_rollout(stage1, small_dataset_dir: Path) -> None:
    rollouts = pd.read_parquet(stage1.rollouts_path)
    assert tuple(rollouts.columns) == ROLLOUT_COLUMNS
    assert len(rollouts) == STEPS * BATCH  # steps x (prompts per step x num_generations)
    assert sorted(rollouts["step"].unique()) == list(range(STEPS))
    for _, group in rollouts.groupby(["step", "sample_id"]):
        assert sorted(group["generation"]) == list(range(GENERATIONS))  # a full group per prompt
    assert (rollouts.groupby("step")["sample_id"].nunique() == BATCH // GENERATIONS).all()
    train_ids = {r["id"] for r in load_split(small_dataset_dir / TRAIN_FILE)}
    assert set(rollouts["sample_id"]) <= train_ids


def test_stage1_rollout_rewards_match_the_reward_functions(stage1, small_dataset_dir: Path, grpo_config) -> None:
    rollouts = pd.read_parquet(stage1.rollouts_path)
    reference = {r["id"]: r["output"] for r in load_split(small_dataset_dir / TRAIN_FILE)}
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


def test_stage1_scores_every_training_record_in_one_complete_pass(stage1, small_dataset_dir: Path, grpo_config) -> None:
    import pyarrow.parquet as pq

    from intentops.training.rollouts import KIND_METADATA, TRAIN_SET_HASH_METADATA, train_set_hash

    records = load_split(small_dataset_dir / TRAIN_FILE)
    table = pq.read_table(stage1.scores_path)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta[KIND_METADATA] == "scoring"
    assert json.loads(meta[TRAIN_SET_HASH_METADATA]) == train_set_hash(records)
    scores = table.to_pandas()
    assert tuple(scores.columns) == ROLLOUT_COLUMNS
    assert len(scores) == len(records) * GENERATIONS  # every record, G completions each, not just what was drawn
    for _, group in scores.groupby("sample_id"):
        assert sorted(group["generation"]) == list(range(GENERATIONS))
    assert set(scores["sample_id"]) == {r["id"] for r in records}
    reference = {r["id"]: r["output"] for r in records}
    builder = PromptBuilder.from_model_dir(stage1.model_dir)
    weights = RewardWeights.from_config(grpo_config.grpo)
    for row in scores.itertuples():
        expected = score_completion(row.completion, reference[row.sample_id], builder, weights)
        assert (row.reward_format, row.reward_intent, row.reward_params) == (
            expected.format,
            expected.intent,
            expected.params,
        )
    assert stage1.metrics["scored_records"] == len(records)


def test_scoring_backend_falls_back_to_transformers_without_vllm() -> None:
    import importlib.util

    from intentops.training.scoring import choose_backend

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    assert choose_backend("auto") == "transformers" and choose_backend("transformers") == "transformers"
    with pytest.raises(ValueError, match=r"mining\.score_backend=vllm but vllm is not importable"):
        choose_backend("vllm")


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
    mined = mine_hard_samples(stage1.scores_path, small_dataset_dir / TRAIN_FILE, grpo_config.mining, tmp_path / "m")
    assert mined.hard > 0, "a 3-step tiny policy should not be perfect on every sample"
    result = run_grpo(tmp_path / "m" / TRAIN_FILE, stage1.model_dir, grpo_config, tmp_path / "g2", stage="grpo2")
    assert not result.skipped and result.train_records == mined.hard
    stage2 = pd.read_parquet(result.rollouts_path)
    assert len(stage2) == 2 * BATCH
    assert set(stage2["sample_id"]) <= set(mined.hard_ids)
    card = read_model_card(result.model_dir)
    assert card["stage"] == "grpo2" and card["parent"]["stage"] == "grpo1"


def test_stage2_passes_the_model_on_when_nothing_is_hard(tmp_path: Path, stage1, grpo_config) -> None:
    empty = tmp_path / TRAIN_FILE
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
    empty = tmp_path / TRAIN_FILE
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
        run_grpo(small_dataset_dir / TRAIN_FILE, tiny_model_dir, cfg, out, stage="grpo1")
    assert not (out / MODEL_CARD).exists()  # no model handed on
    kept = pd.read_parquet(out / COLLAPSED_ROLLOUTS_FILE)
    assert len(kept) == 2 * BATCH and kept["reward_total"].max() == 0.0


def test_use_vllm_without_vllm_is_a_clear_error(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, grpo_config
):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    cfg = RunConfig.from_flat({"grpo__use_vllm": True}, base=grpo_config)
    with pytest.raises(ValueError, match="vllm is not importable"):
        run_grpo(small_dataset_dir / TRAIN_FILE, sft_model_dir, cfg, tmp_path / "out")


def test_batch_must_hold_whole_groups(grpo_config):
    """Rejected when the configuration is built, before any stage runs (tests/test_config.py has the rule)."""
    with pytest.raises(ValueError, match=r"not divisible by grpo__num_generations=4"):
        RunConfig.from_flat({"grpo__batch_size": 6, "grpo__num_generations": 4}, base=grpo_config)


def test_overlong_prompts_are_reported_not_truncated(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, grpo_config
):
    records = load_split(small_dataset_dir / TRAIN_FILE)[:3]
    records[0] = {**records[0], "text": "很长的句子" * 200}
    train = tmp_path / TRAIN_FILE
    write_jsonl(train, records)
    cfg = RunConfig.from_flat({"grpo__stage1_max_steps": 1, "grpo__max_prompt_length": 256}, base=grpo_config)
    result = run_grpo(train, sft_model_dir, cfg, tmp_path / "out")
    rejects = [json.loads(line) for line in (tmp_path / "out" / REJECTED_PROMPTS_FILE).read_text().splitlines()]
    assert [r["id"] for r in rejects] == [records[0]["id"]] and "max_prompt_length=256" in rejects[0]["reason"]
    assert set(pd.read_parquet(result.rollouts_path)["sample_id"]) == {records[1]["id"], records[2]["id"]}


def test_a_set_smaller_than_one_step_is_cycled(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, grpo_config
):
    train = tmp_path / TRAIN_FILE
    one = load_split(small_dataset_dir / TRAIN_FILE)[:1]
    write_jsonl(train, one)
    result = run_grpo(train, sft_model_dir, grpo_config, tmp_path / "out", stage="grpo2")
    rollouts = pd.read_parquet(result.rollouts_path)
    assert len(rollouts) == 2 * BATCH and set(rollouts["sample_id"]) == {one[0]["id"]}
    assert sorted(rollouts[rollouts["step"] == 0]["generation"]) == list(range(BATCH))


def test_cli_grpo_stage2_pass_on(tmp_path: Path, stage1, grpo_config, capsys: pytest.CaptureFixture[str]) -> None:
    from intentops.cli import main

    empty = tmp_path / TRAIN_FILE
    write_jsonl(empty, [])
    uri = grpo_config.registry.tracking_uri
    argv = ["train", "grpo", "--train", str(empty), "--model", str(stage1.model_dir), "--out", str(tmp_path / "g2")]
    assert main([*argv, "--stage", "grpo2", "--set", f"registry__tracking_uri={uri}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skipped"] is True and "no hard samples" in summary["reason"]
    assert read_model_card(tmp_path / "g2")["stage"] == "grpo2"
    assert main([*argv, "--stage", "grpo1", "--set", f"registry__tracking_uri={uri}"]) == 2  # usage error, named
    assert "no training records" in capsys.readouterr().err


# ---- GRPO without the SFT warm-up ---------------------------------------------------------------------------


def test_sft_disabled_hands_the_base_on_and_grpo_starts_from_it(
    tmp_path: Path, small_dataset_dir: Path, tiny_model_dir: Path, grpo_config, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    from intentops.cli import main
    from intentops.training.sft import run_sft

    no_sft = RunConfig.from_flat({"sft__enabled": False}, base=grpo_config)
    run_sft(small_dataset_dir, "", no_sft, tmp_path / "base")
    card = read_model_card(tmp_path / "base")
    assert card["stage"] == "base" and "sft.enabled=false" in card["skipped"] and card["training"]["steps"] == 0
    assert card["catalog_hash"] == read_model_card(tiny_model_dir)["catalog_hash"]
    assert not list((tmp_path / "base").glob(".base-*")) and not list((tmp_path / "base").glob(".staging-*"))
    # the tiny base is deterministic: untrained means the very same weights as the fixture's tiny model
    base, tiny = load_file(tmp_path / "base" / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert base.keys() == tiny.keys() and all(base[k].equal(tiny[k]) for k in base)
    uri = grpo_config.registry.tracking_uri
    argv = ["train", "sft", "--dataset", str(small_dataset_dir), "--out", str(tmp_path / "cli")]
    assert main([*argv, "--set", "sft__enabled=false", "--set", f"registry__tracking_uri={uri}"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stage"] == "base"

    train = tmp_path / TRAIN_FILE
    write_jsonl(train, load_split(small_dataset_dir / TRAIN_FILE)[:4])
    cfg = RunConfig.from_flat({"grpo__stage1_max_steps": 1}, base=grpo_config)
    result = run_grpo(train, tmp_path / "base", cfg, tmp_path / "g1")
    assert read_model_card(result.model_dir)["parent"]["stage"] == "base" and result.steps == 1


def test_grpo_runs_from_a_plain_hugging_face_folder_without_a_model_card(
    tmp_path: Path, small_dataset_dir: Path, tiny_model_dir: Path, grpo_config
) -> None:
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, plain, ignore=shutil.ignore_patterns(MODEL_CARD, CATALOG_FILE))
    dataset = tmp_path / "dataset"  # the prompt's catalog comes from the training file's dataset folder
    dataset.mkdir()
    shutil.copy(small_dataset_dir / CATALOG_FILE, dataset / CATALOG_FILE)
    write_jsonl(dataset / TRAIN_FILE, load_split(small_dataset_dir / TRAIN_FILE)[:4])
    cfg = RunConfig.from_flat({"grpo__stage1_max_steps": 1, "prompt__few_shot": "none"}, base=grpo_config)
    result = run_grpo(dataset / TRAIN_FILE, plain, cfg, tmp_path / "g1")
    card = read_model_card(result.model_dir)
    assert card["stage"] == "grpo1" and card["parent"] == {"stage": "pretrained", "base_model": str(plain)}
    assert card["catalog_hash"] == read_model_card(tiny_model_dir)["catalog_hash"]
    assert card["prompt"] == cfg.prompt.model_dump()
    assert len(pd.read_parquet(result.scores_path)) == 4 * GENERATIONS


# ---- grpo.algorithm: advantages on a hand-computed batch (two prompts x two generations) ----------------------

# rewards of [prompt 1: 3, 1 | prompt 2: 1, 1]
HAND_REWARDS = [3.0, 1.0, 1.0, 1.0]


def test_reinforce_pp_baseline_scales_group_centred_rewards_by_their_batch_std() -> None:
    import torch

    from intentops.training.advantages import advantages

    # group means 2 and 1 -> centred [1, -1, 0, 0]; unbiased std of those = sqrt(2/3) = 0.816497
    got = advantages("reinforce_pp_baseline", torch.tensor(HAND_REWARDS), num_generations=2)
    expected = [1 / (0.816497 + 1e-4), -1 / (0.816497 + 1e-4), 0.0, 0.0]
    assert got.tolist() == pytest.approx(expected, abs=1e-5)


def test_reinforce_pp_uses_the_batch_mean_and_std_without_a_group_baseline() -> None:
    import torch

    from intentops.training.advantages import advantages

    # batch mean 1.5 -> [1.5, -0.5, -0.5, -0.5]; unbiased std = sqrt(3 / 3) = 1
    got = advantages("reinforce_pp", torch.tensor(HAND_REWARDS), num_generations=2)
    assert got.tolist() == pytest.approx([1.5 / 1.0001, -0.5 / 1.0001, -0.5 / 1.0001, -0.5 / 1.0001], abs=1e-6)


def test_kl_is_subtracted_from_the_reward_before_the_advantages() -> None:
    import torch

    from intentops.training.advantages import advantages, kl_penalised

    rewards = kl_penalised(torch.tensor(HAND_REWARDS), torch.tensor([1.0, 0.0, 2.0, 0.0]), beta=0.5)
    assert rewards.tolist() == [2.5, 1.0, 0.0, 1.0]
    # group means 1.75 and 0.5 -> centred [0.75, -0.75, -0.5, 0.5]; unbiased std = sqrt(1.625 / 3) = 0.735980
    got = advantages("reinforce_pp_baseline", rewards, num_generations=2)
    scale = 0.735980 + 1e-4
    assert got.tolist() == pytest.approx([0.75 / scale, -0.75 / scale, -0.5 / scale, 0.5 / scale], abs=1e-5)
    assert kl_penalised(torch.tensor(HAND_REWARDS), torch.tensor([1.0, 0, 2, 0]), beta=0.0).tolist() == HAND_REWARDS


@pytest.mark.parametrize(
    ("algorithm", "config_class", "options"),
    [
        ("grpo", "GRPOConfig", {"scale_rewards": "group", "loss_type": "dapo", "beta": 0.04}),
        ("dr_grpo", "GRPOConfig", {"scale_rewards": "none", "loss_type": "dr_grpo", "beta": 0.04}),
        ("reinforce_pp_baseline", "GRPOConfig", {"beta": 0.04}),
        ("reinforce_pp", "GRPOConfig", {"beta": 0.04}),
        ("rloo", "RLOOConfig", {"beta": 0.04, "normalize_advantages": False}),
    ],
)
def test_each_algorithm_maps_onto_trl(tmp_path: Path, algorithm: str, config_class: str, options: dict) -> None:
    from intentops.training.grpo import grpo_training_args

    cfg = RunConfig.from_flat({"grpo__algorithm": algorithm, "grpo__beta": 0.04, "grpo__loss_type": "dapo"})
    args = grpo_training_args(cfg, tmp_path, max_steps=1, reward_weights=[1.0, 1.0, 1.0])
    assert type(args).__name__ == config_class
    assert {key: getattr(args, key) for key in options} == options


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
@pytest.mark.parametrize(("mode", "masked", "length"), [("answer", False, 64), ("thought", True, 256)])
def test_thought_mode_masks_truncated_completions(
    tmp_path: Path, algorithm: str, mode: str, masked: bool, length: int
) -> None:
    """A reasoning block cut off at the length limit is left out of the loss, not punished for its missing answer."""
    from intentops.training.grpo import grpo_training_args

    cfg = RunConfig.from_flat({"prompt__output_mode": mode, "grpo__algorithm": algorithm})
    args = grpo_training_args(cfg, tmp_path, max_steps=1, reward_weights=[1.0, 1.0, 1.0])
    assert (args.mask_truncated_completions, args.max_completion_length) == (masked, length)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_args_name_activation_checkpointing_without_a_deprecation_warning(
    tmp_path: Path, checkpointing: bool
) -> None:
    """transformers 5 renamed `gradient_checkpointing` (the old name warns on every GRPO stage, issue 14's log)."""
    import warnings

    from intentops.training.grpo import grpo_training_args

    cfg = RunConfig.from_flat({"grpo__gradient_checkpointing": checkpointing})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = grpo_training_args(cfg, tmp_path, max_steps=1, reward_weights=[1.0, 1.0, 1.0])
    assert [str(w.message) for w in caught if "checkpointing" in str(w.message)] == []
    assert args.gradient_checkpointing is checkpointing


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "reinforce_pp_baseline", "reinforce_pp", "rloo"])
def test_trainer_advantages_follow_the_algorithm(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, grpo_config, algorithm: str, monkeypatch
) -> None:
    """One real step per algorithm: the advantages the trainer hands to its loss, recomputed by hand from the
    rewards in the rollout log (beta 0: no KL term)."""
    import torch
    from trl import RLOOTrainer

    from intentops.training.trainer import intentops_grpo_trainer

    seen: list[list[float]] = []
    cls = RLOOTrainer if algorithm == "rloo" else intentops_grpo_trainer()
    original = cls._generate_and_score_completions

    def recording(self, inputs):
        output = original(self, inputs)
        seen.append(output["advantages"].tolist())
        return output

    monkeypatch.setattr(cls, "_generate_and_score_completions", recording)
    cfg = RunConfig.from_flat(
        {"grpo__stage1_max_steps": 1, "grpo__algorithm": algorithm, "grpo__beta": 0.0, "grpo__temperature": 1.5},
        base=grpo_config,
    )
    train = tmp_path / TRAIN_FILE
    write_jsonl(train, load_split(small_dataset_dir / TRAIN_FILE)[:4])
    result = run_grpo(train, sft_model_dir, cfg, tmp_path / "out")
    rewards = torch.tensor(pd.read_parquet(result.rollouts_path)["reward_total"].tolist())
    groups = rewards.view(-1, GENERATIONS)
    mean = groups.mean(dim=1, keepdim=True)
    expected = {
        "grpo": (groups - mean) / (groups.std(dim=1, keepdim=True) + 1e-4),
        "dr_grpo": groups - mean,
        "reinforce_pp_baseline": (groups - mean) / ((groups - mean).std() + 1e-4),
        "reinforce_pp": (rewards - rewards.mean()) / (rewards.std() + 1e-4),
        "rloo": groups - (groups.sum(dim=1, keepdim=True) - groups) / (GENERATIONS - 1),
    }[algorithm]
    assert [a for batch in seen for a in batch] == pytest.approx(expected.reshape(-1).tolist(), abs=1e-4)


def test_reinforce_pp_puts_the_kl_in_the_reward(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, grpo_config, monkeypatch
) -> None:
    """Two real steps with beta > 0: the advantages are the batch-normalised rewards minus beta x the summed KL of
    each completion, and the KL is logged (the loss itself has no KL term)."""
    import torch

    from intentops.training.trainer import intentops_grpo_trainer

    cls = intentops_grpo_trainer()
    kls: list[list[float]] = []
    seen: list[list[float]] = []
    original_kl, original_score = cls._sequence_kl, cls._generate_and_score_completions

    def recording_kl(self, output):
        kl = original_kl(self, output)
        kls.append(kl.tolist())
        return kl

    def recording(self, inputs):
        output = original_score(self, inputs)
        seen.append(output["advantages"].tolist())
        return output

    monkeypatch.setattr(cls, "_sequence_kl", recording_kl)
    monkeypatch.setattr(cls, "_generate_and_score_completions", recording)
    beta = 0.5
    cfg = RunConfig.from_flat(
        {
            "grpo__stage1_max_steps": 2,
            "grpo__algorithm": "reinforce_pp",
            "grpo__beta": beta,
            "grpo__learning_rate": 1e-3,
        },
        base=grpo_config,
    )
    train = tmp_path / TRAIN_FILE
    write_jsonl(train, load_split(small_dataset_dir / TRAIN_FILE)[:4])
    result = run_grpo(train, sft_model_dir, cfg, tmp_path / "out")
    rollouts = pd.read_parquet(result.rollouts_path)
    assert len(kls) == 2 and any(abs(v) > 1e-6 for v in kls[1])  # the policy moved away from the reference
    for step, (kl, advantage) in enumerate(zip(kls, seen, strict=True)):
        rewards = torch.tensor(rollouts[rollouts["step"] == step]["reward_total"].tolist()) - beta * torch.tensor(kl)
        expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
        assert advantage == pytest.approx(expected.tolist(), abs=1e-4)
    from mlflow import MlflowClient

    card = read_model_card(result.model_dir)
    history = MlflowClient(cfg.registry.tracking_uri).get_metric_history(card["training"]["mlflow_run_id"], "kl")
    assert history  # logged by the override, since the loss no longer computes it


# ---- collapse guard on hand-made log histories --------------------------------------------------------------


def _guard(**rules):
    from intentops.training.callbacks import CollapseGuard, CollapseRules

    return CollapseGuard(CollapseRules(total_weight=3.0, **{"patience": 4, **rules}))


def _replay(guard, history: list[tuple[int, dict]]) -> int | None:
    """Feed (global_step, logs) entries; the step at which the guard stopped training, or None."""
    from types import SimpleNamespace

    from intentops.training.callbacks import RewardCollapseError

    for step, logs in history:
        try:
            guard.on_log(None, SimpleNamespace(global_step=step), None, logs=logs)
        except RewardCollapseError:
            return step
    return None


def _log(reward=2.5, fmt=1.0, intent=0.9, zero_std=0.2, kl=0.01, length=6.0) -> dict:
    return {
        "reward": reward,
        "rewards/format/mean": fmt,
        "rewards/intent/mean": intent,
        "frac_reward_zero_std": zero_std,
        "kl": kl,
        "completions/mean_length": length,
    }


def test_collapse_patience_counts_optimizer_steps_not_logged_steps() -> None:
    # logged every 2 steps; zero reward from step 4 on -> 2 + 2 = 4 collapsed optimizer steps at step 6
    history = [(2, _log()), (4, _log(reward=0.0, intent=0.0)), (6, _log(reward=0.0, intent=0.0))]
    assert _replay(_guard(), history) == 6
    # a healthy log in between resets the streak
    history = [(2, _log()), (4, _log(reward=0.0)), (6, _log()), (8, _log(reward=0.0)), (10, _log())]
    assert _replay(_guard(), history) is None


def test_a_drop_of_the_intent_reward_from_its_first_value_is_collapse() -> None:
    # 2.9/3 -> stuck on a parseable but wrong call: format 1, intent 0.2 < 0.25 x 0.95, reward share 0.4 > 0.05
    history = [(1, _log(reward=2.9, intent=0.95))] + [(s, _log(reward=1.2, intent=0.2)) for s in range(2, 7)]
    assert _replay(_guard(), history) == 5
    mild = [(1, _log(reward=2.9, intent=0.95))] + [(s, _log(reward=2.0, intent=0.3)) for s in range(2, 9)]
    assert _replay(_guard(), mild) is None  # 0.3 >= 0.25 x 0.95


def test_zero_variance_groups_count_as_collapse_only_while_the_reward_is_not_perfect() -> None:
    stuck = [(s, _log(reward=1.0, intent=0.9, zero_std=1.0)) for s in range(1, 6)]  # one wrong answer everywhere
    assert _replay(_guard(), stuck) == 4
    solved = [(s, _log(reward=3.0, intent=1.0, zero_std=1.0)) for s in range(1, 6)]  # every rollout perfect
    assert _replay(_guard(), solved) is None
    assert _replay(_guard(zero_std_share=1.0), stuck) is None  # 1 = off


def test_kl_and_completion_length_guards() -> None:
    assert _replay(_guard(), [(s, _log(kl=6.0)) for s in range(1, 6)]) == 4
    assert _replay(_guard(max_kl=0.0), [(s, _log(kl=6.0)) for s in range(1, 6)]) is None  # 0 = off
    longer = [(1, _log(length=6.0))] + [(s, _log(length=30.0)) for s in range(2, 7)]  # 5x the first length
    assert _replay(_guard(), longer) == 5
    shorter = [(1, _log(length=8.0))] + [(s, _log(length=1.0)) for s in range(2, 7)]
    assert _replay(_guard(), shorter) == 5
    assert _replay(_guard(length_ratio=0.0), longer) is None
    # thought mode: the reasoning starts empty and may grow; a shrinking completion is still a collapse sign
    assert _replay(_guard(length_may_grow=True), longer) is None
    assert _replay(_guard(length_may_grow=True), shorter) == 5


# ---- online difficulty filtering ----------------------------------------------------------------------------


def test_groups_without_reward_variety_are_found_and_batches_merge_with_padding() -> None:
    import torch

    from intentops.training.filtering import concat_rows, informative_groups, select_rows

    rewards = torch.tensor([3.0, 3.0, 1.0, 2.0, 0.0, 0.0])  # groups of 2: uniform, varied, uniform
    assert informative_groups(rewards, 2).tolist() == [False, True, False]
    first = {
        "prompt_ids": torch.tensor([[5, 6], [5, 6], [7, 8], [7, 8]]),
        "prompt_mask": torch.ones(4, 2, dtype=torch.long),
        "completion_ids": torch.tensor([[1, 2, 3], [1, 0, 0], [4, 0, 0], [4, 4, 0]]),
        "completion_mask": torch.tensor([[1, 1, 1], [1, 0, 0], [1, 0, 0], [1, 1, 0]]),
        "advantages": torch.tensor([0.0, 0.0, 0.7, -0.7]),
        "num_items_in_batch": torch.tensor(7),
    }
    kept = select_rows(first, torch.tensor([False, False, True, True]))
    refill = {
        "prompt_ids": torch.tensor([[9], [9]]),
        "prompt_mask": torch.tensor([[1], [1]]),
        "completion_ids": torch.tensor([[2, 2, 2, 2], [3, 0, 0, 0]]),
        "completion_mask": torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]]),
        "advantages": torch.tensor([0.5, -0.5]),
    }
    merged = concat_rows([kept, refill], pad_token_id=0)
    assert merged["prompt_ids"].tolist() == [[7, 8], [7, 8], [0, 9], [0, 9]]  # prompts padded on the left
    assert merged["prompt_mask"].tolist() == [[1, 1], [1, 1], [0, 1], [0, 1]]
    assert merged["completion_ids"].tolist() == [[4, 0, 0, 0], [4, 4, 0, 0], [2, 2, 2, 2], [3, 0, 0, 0]]
    assert merged["advantages"].tolist() == pytest.approx([0.7, -0.7, 0.5, -0.5])
    assert int(merged["num_items_in_batch"]) == 1 + 2 + 4 + 1
    with pytest.raises(ValueError, match="cannot merge batches with pixel_values"):
        select_rows({**first, "pixel_values": torch.zeros(4)}, torch.ones(4, dtype=torch.bool))


def test_online_filtering_drops_uniform_groups_and_refills_the_batch(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, grpo_config, monkeypatch
) -> None:
    from mlflow import MlflowClient

    from intentops.training.filtering import MAX_REFILL_ROUNDS
    from intentops.training.trainer import FILTERED_SHARE_METRIC, REFILL_ROUNDS_METRIC, intentops_grpo_trainer

    cls = intentops_grpo_trainer()
    original = cls._filtered
    batches: list[tuple[list[float], float]] = []

    def recording(self, output):
        merged = original(self, output)
        batches.append((merged["advantages"].tolist(), self._metrics["train"][REFILL_ROUNDS_METRIC][-1]))
        return merged

    monkeypatch.setattr(cls, "_filtered", recording)
    # format-only reward: the warmed-up model often writes valid calls in every completion -> uniform groups
    cfg = RunConfig.from_flat(
        {
            "grpo__stage1_max_steps": 2,
            "grpo__online_filtering": True,
            "grpo__reward_intent_weight": 0.0,
            "grpo__reward_params_weight": 0.0,
            "grpo__temperature": 1.5,
        },
        base=grpo_config,
    )
    train = tmp_path / TRAIN_FILE
    write_jsonl(train, load_split(small_dataset_dir / TRAIN_FILE)[:8])
    result = run_grpo(train, sft_model_dir, cfg, tmp_path / "out")
    assert len(batches) == 2
    for advantages, rounds in batches:
        assert len(advantages) == BATCH  # the shape TRL expects, whatever was dropped
        groups = [advantages[i : i + GENERATIONS] for i in range(0, BATCH, GENERATIONS)]
        uniform = sum(all(a == 0 for a in group) for group in groups)
        assert uniform == 0 or rounds == MAX_REFILL_ROUNDS  # refilled unless the refill rounds ran out
    run_id = read_model_card(result.model_dir)["training"]["mlflow_run_id"]
    shares = MlflowClient(cfg.registry.tracking_uri).get_metric_history(run_id, FILTERED_SHARE_METRIC)
    assert [m.step for m in shares] == [1, 2] and all(0 <= m.value <= 1 for m in shares)
    assert any(m.value > 0 for m in shares)  # seeded: the second step drops half its groups and refills them
    rollouts = pd.read_parquet(result.rollouts_path)
    assert len(rollouts) >= 2 * BATCH  # refills are rolled out (and logged) too


def test_filtering_keeps_varied_groups_and_refills_from_new_prompts_on_a_hand_batch() -> None:
    """`_filtered` on a stand-in trainer: batch [uniform, varied] -> keep the varied group, draw one prompt, whose
    refill batch [varied, uniform] contributes its first group."""
    from collections import defaultdict
    from types import SimpleNamespace

    import torch

    from intentops.training.trainer import FILTERED_SHARE_METRIC, REFILL_ROUNDS_METRIC, intentops_grpo_trainer

    def batch(rewards: list[float], tag: int) -> dict:
        n = len(rewards)
        return {
            "prompt_ids": torch.full((n, 1), tag),
            "prompt_mask": torch.ones(n, 1, dtype=torch.long),
            "completion_ids": torch.arange(n).view(n, 1) + 10 * tag,
            "completion_mask": torch.ones(n, 1, dtype=torch.long),
            "advantages": torch.tensor(rewards) - torch.tensor(rewards).mean(),
            "num_items_in_batch": torch.tensor(n),
        }

    queue = [[1.0, 0.0, 2.0, 2.0]]  # the refill round's rewards: varied, then uniform
    draws: list[int] = []
    trainer = SimpleNamespace(
        num_generations=2,
        _metrics={"train": defaultdict(list)},
        processing_class=SimpleNamespace(pad_token_id=0),
        _current=torch.tensor([3.0, 3.0, 1.0, 0.0]),  # first batch: uniform group, varied group
    )
    trainer._rewards = lambda: trainer._current

    def scored(inputs):
        trainer._current = torch.tensor(queue.pop(0))
        return batch(trainer._current.tolist(), tag=2)

    trainer._scored = scored
    trainer._draw_prompts = lambda count, round_: draws.append(count) or ["prompt"] * (2 * count)
    merged = intentops_grpo_trainer()._filtered(trainer, batch([3.0, 3.0, 1.0, 0.0], tag=1))
    assert draws == [1]  # one group was missing
    assert merged["prompt_ids"].view(-1).tolist() == [1, 1, 2, 2]  # kept group of batch 1, first group of the refill
    assert merged["completion_ids"].view(-1).tolist() == [12, 13, 20, 21]
    assert trainer._metrics["train"][FILTERED_SHARE_METRIC] == [0.5]
    assert trainer._metrics["train"][REFILL_ROUNDS_METRIC] == [1.0]


def test_cli_score_then_mine(tmp_path: Path, stage1, small_dataset_dir: Path, grpo_config, capsys) -> None:
    from intentops.cli import main

    train = small_dataset_dir / TRAIN_FILE
    uri = ["--set", f"registry__tracking_uri={grpo_config.registry.tracking_uri}"]
    argv = ["train", "score", "--model", str(stage1.model_dir), "--train", str(train), "--out", str(tmp_path / "s")]
    assert main([*argv, "--set", "mining__score_generations=2", *uri]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    records = load_split(train)
    assert (summary["records"], summary["scored"], summary["generations"]) == (len(records), len(records), 2)
    assert summary["backend"] == "transformers" or summary["backend"] == "vllm"
    scores = tmp_path / "s" / SCORES_FILE
    assert len(pd.read_parquet(scores)) == 2 * len(records)
    assert main(["train", "mine", "--rollouts", str(scores), "--train", str(train), "--out", str(tmp_path / "m")]) == 0
    mined = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert mined["scored"] == len(records) and mined["coverage"] == 1.0


def test_scoring_pass_through_the_vllm_backend(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, grpo_config, monkeypatch
) -> None:
    """vLLM is not installed here: a stand-in module checks what the pass asks of `vllm.LLM.chat` (chat prompts,
    n = G, the rollout temperature and length) and that its answers are scored in record order."""
    import importlib.machinery
    import sys
    import types

    from intentops.training.scoring import score_training_set

    calls: dict = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            calls["sampling"] = kwargs

    class LLM:
        def __init__(self, model, **kwargs):
            calls["model"] = model

        def chat(self, conversations, params, use_tqdm=False):
            calls["conversations"] = conversations
            n = calls["sampling"]["n"]
            return [
                types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"answer{i}-{k}") for k in range(n)])
                for i in range(len(conversations))
            ]

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    records = load_split(small_dataset_dir / TRAIN_FILE)[:3]
    builder = PromptBuilder.from_model_dir(sft_model_dir)
    cfg = RunConfig.from_flat({"mining__score_backend": "vllm", "mining__score_generations": 2}, base=grpo_config)
    result = score_training_set(
        sft_model_dir, records, builder, cfg, tmp_path / "s.parquet", skip_ids=[records[2]["id"]]
    )
    assert result.backend == "vllm" and (result.scored, result.skipped) == (2, 1)
    assert calls["model"] == str(sft_model_dir)
    assert calls["conversations"] == [builder.messages(r["text"]) for r in records[:2]]
    assert calls["sampling"]["n"] == 2 and calls["sampling"]["temperature"] == cfg.grpo.temperature
    assert calls["sampling"]["max_tokens"] == cfg.grpo.max_completion_length
    scores = pd.read_parquet(tmp_path / "s.parquet")
    assert list(zip(scores["sample_id"], scores["generation"], scores["completion"], strict=True)) == [
        (records[0]["id"], 0, "answer0-0"),
        (records[0]["id"], 1, "answer0-1"),
        (records[1]["id"], 0, "answer1-0"),
        (records[1]["id"], 1, "answer1-1"),
    ]
    assert (scores["reward_format"] == 0).all()  # "answerN-k" is no call
