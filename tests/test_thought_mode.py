"""Thought mode end to end on the tiny model, in the paper's ReAct template.

SFT teaches `Thought:` / `Action: <calls>` / `Finish!` with an empty reasoning (the greedy check after SFT reads
the strict template back); GRPO then runs on that model with the thought-mode completion length and truncated
completions masked, scoring every rollout through the same builder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from intentops.artifacts import TRAIN_FILE
from intentops.config import RunConfig
from intentops.models import read_model_card
from intentops.prompting import PromptBuilder
from intentops.rewards import RewardWeights, score_completion


@pytest.fixture(scope="module")
def react_config(training_config: RunConfig) -> RunConfig:
    return RunConfig.from_flat(
        {
            "prompt__output_mode": "thought",
            "prompt__thought_template": "react",
            # 0: the thought-mode defaults (tiny-cpu.yaml's 24 tokens are for answers)
            "grpo__max_completion_length": 0,
            "evaluation__max_new_tokens": 0,
            "grpo__stage1_max_steps": 2,
            "grpo__batch_size": 4,
            "grpo__num_generations": 2,
            "grpo__logging_steps": 1,
            "grpo__learning_rate": 5e-5,
        },
        base=training_config,
    )


@pytest.fixture(scope="module")
def react_sft_dir(tmp_path_factory: pytest.TempPathFactory, small_dataset_dir: Path, react_config: RunConfig) -> Path:
    from intentops.training.sft import run_sft

    return run_sft(small_dataset_dir, "", react_config, tmp_path_factory.mktemp("react") / "sft")


def test_sft_teaches_the_react_template_with_an_empty_reasoning(react_sft_dir: Path, react_config: RunConfig) -> None:
    assert (react_config.grpo.max_completion_length, react_config.evaluation.max_new_tokens) == (256, 256)
    card = read_model_card(react_sft_dir)
    assert card["prompt"]["thought_template"] == "react"
    builder = PromptBuilder.from_model_dir(react_sft_dir)
    assert builder.target("volume_down()") == "Thought:\nAction: volume_down()\nFinish!"
    # greedy answers of the warmed-up model on training records: the strict template, read back by the builder
    assert card["training"]["train_check"]["format_valid"] >= 0.9


def test_grpo_in_react_mode_scores_rollouts_through_the_template(
    tmp_path: Path, react_sft_dir: Path, small_dataset_dir: Path, react_config: RunConfig
) -> None:
    from intentops.training.grpo import run_grpo

    result = run_grpo(small_dataset_dir / TRAIN_FILE, react_sft_dir, react_config, tmp_path / "grpo1", stage="grpo1")
    rollouts = pd.read_parquet(result.rollouts_path)
    assert len(rollouts) == 2 * 4
    builder = PromptBuilder.from_model_dir(result.model_dir)
    weights = RewardWeights.from_config(react_config.grpo)
    outputs = {
        str(r["id"]): r["output"] for r in pd.read_json(small_dataset_dir / TRAIN_FILE, lines=True).to_dict("records")
    }
    for row in rollouts.itertuples():
        expected = score_completion(row.completion, outputs[row.sample_id], builder, weights)
        assert (row.reward_format, row.reward_intent, row.reward_params) == (
            expected.format,
            expected.intent,
            expected.params,
        )
    # the warmed-up policy writes the template's lines (sampled at temperature 1, the calls inside are often broken)
    skeleton = rollouts["completion"].map(lambda c: c.startswith("Thought:") and "\nAction: " in c and "Finish!" in c)
    assert skeleton.mean() >= 0.75 and rollouts["reward_format"].mean() > 0
