"""Models by reference (`storage.models_uri`): the model artifact holds only model-ref.json, readers resolve it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from intentops import storage
from intentops.artifacts import MODEL_CARD, MODEL_REF_FILE, TRAIN_FILE, ModelFolder
from intentops.config import RunConfig
from intentops.io import write_jsonl
from intentops.models import read_model_card


def _trained_folder(sft_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the SFT model with the leftovers a training stage leaves next to it."""
    folder = tmp_path / "model"
    shutil.copytree(sft_model_dir, folder)
    (folder / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-3" / "optimizer.pt").write_bytes(b"x" * 100)
    (folder / "rejected_prompts.jsonl").write_text('{"id": "r1"}\n')
    return folder


def test_publish_by_reference_leaves_only_the_reference_and_resolves_back(
    tmp_path: Path, s3_bucket: str, sft_model_dir: Path
) -> None:
    folder = _trained_folder(sft_model_dir, tmp_path)
    weights = [p for p in sft_model_dir.iterdir() if p.is_file()]  # the SFT output's checkpoints/ stays behind
    model_files = sorted(p.name for p in weights)
    size = sum(p.stat().st_size for p in weights)
    uri = f"s3://{s3_bucket}/models/run-3/sft"

    ref = ModelFolder(folder).publish_by_reference(uri)

    assert ref["uri"] == uri and ref["size"] == size and ref["stage"] == "sft" and len(ref["sha256"]) == 64
    assert sorted(p.name for p in folder.iterdir()) == [MODEL_REF_FILE, "rejected_prompts.jsonl"]
    assert json.loads((folder / MODEL_REF_FILE).read_text()) == ref
    resolved = ModelFolder(folder).resolved(tmp_path / "cache")
    assert resolved.path != folder and resolved.path.is_relative_to(tmp_path / "cache")
    assert sorted(p.relative_to(resolved.path).as_posix() for p in resolved.path.rglob("*") if p.is_file()) == (
        model_files
    )
    assert resolved.card() == read_model_card(sft_model_dir)
    assert ModelFolder(sft_model_dir).resolved() == ModelFolder(sft_model_dir)  # a plain folder is itself


def test_a_referenced_model_changed_afterwards_is_refused(tmp_path: Path, s3_bucket: str, sft_model_dir: Path) -> None:
    folder = _trained_folder(sft_model_dir, tmp_path)
    uri = f"s3://{s3_bucket}/models/run-3/sft"
    ModelFolder(folder).publish_by_reference(uri)
    changed = tmp_path / "changed"
    shutil.copytree(sft_model_dir, changed)
    (changed / "config.json").write_text((changed / "config.json").read_text() + " ")
    storage.upload(changed, uri)
    with pytest.raises(ValueError, match=rf"{uri}: content hash .* differs from .*{MODEL_REF_FILE}"):
        ModelFolder(folder).resolved(tmp_path / "cache")


def test_a_broken_reference_file_is_named(tmp_path: Path) -> None:
    (tmp_path / MODEL_REF_FILE).write_text('{"uri": "s3://b/m"}')
    with pytest.raises(ValueError, match=rf"{MODEL_REF_FILE}: not a model reference"):
        ModelFolder(tmp_path).resolved()


def test_grpo_stage_reads_and_writes_models_by_reference(
    tmp_path: Path, s3_bucket: str, sft_model_dir: Path, small_dataset_dir: Path, training_config: RunConfig
) -> None:
    from intentops.stages.training import grpo
    from intentops.training.sft import load_split

    start = tmp_path / "sft-artifact"
    shutil.copytree(sft_model_dir, start)
    models = f"s3://{s3_bucket}/models"
    ModelFolder(start).publish_by_reference(f"{models}/run-5/sft")
    train = tmp_path / "hard" / TRAIN_FILE
    write_jsonl(train, load_split(small_dataset_dir / TRAIN_FILE)[:4])
    cfg = RunConfig.from_flat(
        {
            "grpo__stage2_max_steps": 1,
            "grpo__batch_size": 8,
            "grpo__num_generations": 4,
            "storage__models_uri": models,
            "model__cache_dir": str(tmp_path / "cache"),
        },
        base=training_config,
    )
    out = grpo(cfg, "grpo2", train, start, tmp_path / "grpo2", tmp_path / "rollouts2", "run-5")
    assert out.model["model_uri"] == f"{models}/run-5/grpo2" and out.model["model_bytes"] > 0
    assert sorted(p.name for p in (tmp_path / "grpo2").iterdir()) == [MODEL_REF_FILE, "rejected_prompts.jsonl"]
    card = ModelFolder(tmp_path / "grpo2").resolved(tmp_path / "cache").card()
    assert card["stage"] == "grpo2" and card["parent"]["stage"] == "sft" and card["training"]["steps"] == 1
    assert not (tmp_path / "grpo2" / MODEL_CARD).exists()
