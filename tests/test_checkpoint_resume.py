"""Run-scoped checkpoints: a killed stage resumes in a fresh pod from the uploaded checkpoint (moto S3 in server
mode), broken checkpoints are named and skipped, a changed resume key starts fresh and says so."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from transformers import TrainerCallback

from intentops import storage
from intentops.artifacts import MODEL_CARD, TRAIN_FILE
from intentops.config import RunConfig
from intentops.models import read_model_card
from intentops.training.checkpoints import (
    KEY_FILE,
    RemoteCheckpoints,
    check_model_weights,
    newest_usable,
)

KEY = {"train_sha256": "abc", "base_model": "tiny", "sft": {"epochs": 2}}
LOGGER = "intentops.training.checkpoints"


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the checkpoint module logged (the moto server logs every request too)."""
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def _checkpoint(folder: Path, step: int, truncate: bool = False, state: str | None = None) -> Path:
    """A small stand-in for a trainer checkpoint: trainer_state.json and one safetensors file."""
    import torch
    from safetensors.torch import save_file

    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(path / "model.safetensors"))
    if truncate:
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[:-40])
    (path / "trainer_state.json").write_text(state if state is not None else json.dumps({"global_step": step}))
    return path


def test_a_truncated_local_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, caplog) -> None:
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 6, truncate=True)
    _checkpoint(tmp_path, 8, state="{not json")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert newest_usable(tmp_path) == str(tmp_path / "checkpoint-4")
    lines = _lines(caplog)
    assert len(lines) == 2
    assert "checkpoint-8/trainer_state.json: not valid JSON" in lines[0] and "falling back" in lines[0]
    assert "checkpoint-6/model.safetensors: truncated or corrupted" in lines[1]


def test_no_usable_local_checkpoint_means_none(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 3, truncate=True)
    assert newest_usable(tmp_path) is None
    assert newest_usable(tmp_path / "absent") is None


def test_truncated_input_weights_are_named(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path, 1, truncate=True)
    with pytest.raises(ValueError, match=r"checkpoint-1/model\.safetensors: truncated or corrupted safetensors"):
        check_model_weights(folder)
    check_model_weights(_checkpoint(tmp_path, 2))  # an intact folder passes


def test_remote_restore_skips_a_corrupted_newest_checkpoint(tmp_path: Path, s3_bucket: str, caplog) -> None:
    remote = RemoteCheckpoints.from_config(f"s3://{s3_bucket}/ckpt", "run-1", "sft", KEY)
    assert remote is not None and remote.prefix == f"s3://{s3_bucket}/ckpt/run-1/sft"
    scratch = tmp_path / "pod1"
    remote.save(_checkpoint(scratch, 2), keep=3)
    remote.save(_checkpoint(scratch, 4, truncate=True), keep=3)
    fresh = tmp_path / "pod2" / "checkpoints"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        restored = remote.restore(fresh)
    assert restored == str(fresh / "checkpoint-2")
    assert json.loads((fresh / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    assert not (fresh / "checkpoint-4").exists()
    messages = _lines(caplog)
    assert any(f"checkpoint s3://{s3_bucket}/ckpt/run-1/sft/checkpoint-4 is unusable" in m for m in messages)
    assert f"resuming from s3://{s3_bucket}/ckpt/run-1/sft/checkpoint-2 (step 2)" in messages


def test_a_changed_resume_key_starts_fresh_and_says_what_changed(tmp_path: Path, s3_bucket: str, caplog) -> None:
    uri = f"s3://{s3_bucket}/ckpt"
    RemoteCheckpoints.from_config(uri, "run-1", "sft", KEY).save(_checkpoint(tmp_path / "a", 5), keep=2)
    other = RemoteCheckpoints.from_config(uri, "run-1", "sft", {**KEY, "train_sha256": "def"})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert other.restore(tmp_path / "b") is None
    assert _lines(caplog) == [
        f"not resuming from the checkpoints in {uri}/run-1/sft: train_sha256 changed since; training from the start"
    ]
    assert not (tmp_path / "b" / "checkpoint-5").exists()


def test_unfinished_uploads_are_skipped_and_old_ones_pruned(tmp_path: Path, s3_bucket: str) -> None:
    remote = RemoteCheckpoints.from_config(f"s3://{s3_bucket}/ckpt", "r", "grpo1", KEY)
    for step in (1, 2, 3):
        remote.save(_checkpoint(tmp_path / "a", step), keep=2)
    assert storage.list_folders(remote.prefix) == ["checkpoint-2", "checkpoint-3"]
    incomplete = json.dumps({"complete": False, "files": {}}).encode()
    bucket_key = f"ckpt/r/grpo1/checkpoint-3/{storage.UPLOAD_MANIFEST}"
    storage.s3_client().put_object(Bucket=s3_bucket, Key=bucket_key, Body=incomplete)
    assert remote.restore(tmp_path / "b") == str(tmp_path / "b" / "checkpoint-2")


def test_local_folder_location_works_like_s3(tmp_path: Path) -> None:
    remote = RemoteCheckpoints.from_config(str(tmp_path / "pvc"), None, "sft", KEY)
    remote.save(_checkpoint(tmp_path / "a", 7), keep=2)
    assert (tmp_path / "pvc" / "local" / "sft" / "checkpoint-7" / KEY_FILE).is_file()
    assert remote.restore(tmp_path / "b") == str(tmp_path / "b" / "checkpoint-7")


def test_checkpoint_uri_is_a_pipeline_knob_with_a_description() -> None:
    from intentops.config import flat_fields

    field = next(f for f in flat_fields() if f.name == "storage__checkpoint_uri")
    assert field.default == "" and "<pipeline_run_id>/<stage>" in field.description
    pipeline = (Path(__file__).parents[1] / "pipelines" / "training_pipeline.yaml").read_text()
    assert "storage__checkpoint_uri" in pipeline


_STAGE_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from transformers import TrainerCallback
    from intentops.config import load_config
    from intentops.training.sft import run_sft

    class Slow(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(0.5)

    logging.basicConfig(level=logging.INFO)
    dataset, base, config, out, run_id = sys.argv[1:]
    run_sft(dataset, base, load_config(config), out, pipeline_run_id=run_id, callbacks=[Slow()])
    """
)


class _RecordSteps(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.steps.append(state.global_step)


def test_a_killed_sft_stage_resumes_in_a_fresh_pod_from_s3(
    tmp_path: Path,
    s3_bucket: str,
    tiny_model_dir: Path,
    small_dataset_dir: Path,
    training_config: RunConfig,
    caplog,
) -> None:
    from intentops.training.sft import load_split, run_sft

    uri = f"s3://{s3_bucket}/checkpoints"
    cfg = RunConfig.from_flat(
        {
            "sft__epochs": 2,
            "sft__batch_size": 16,
            "sft__save_steps": 3,
            "sft__check_samples": 0,
            "storage__checkpoint_uri": uri,
        },
        base=training_config,
    )
    config = tmp_path / "run.yaml"
    cfg.to_yaml(config)
    first_pod = tmp_path / "pod1" / "sft"
    args = [str(small_dataset_dir), str(tiny_model_dir), str(config), str(first_pod), "run-7"]
    log_file = (tmp_path / "pod1.log").open("w")
    process = subprocess.Popen([sys.executable, "-c", _STAGE_SCRIPT, *args], stdout=log_file, stderr=subprocess.STDOUT)
    prefix = f"{uri}/run-7/sft"
    deadline = time.monotonic() + 600
    try:
        while not storage.upload_finished(f"{prefix}/checkpoint-3"):
            assert process.poll() is None, (tmp_path / "pod1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint uploaded within 10 minutes"
            time.sleep(0.5)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        log_file.close()
    assert process.returncode == -signal.SIGKILL
    assert not (first_pod / MODEL_CARD).exists()  # killed mid-run: no model

    second_pod = tmp_path / "pod2" / "sft"  # a retried pod: fresh scratch and output folder
    steps = _RecordSteps()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run_sft(small_dataset_dir, str(tiny_model_dir), cfg, second_pod, pipeline_run_id="run-7", callbacks=[steps])
    card = read_model_card(second_pod)
    resumed = card["training"]["resumed_from"]
    step = int(resumed.rsplit("-", 1)[1])
    total = 2 * -(-len(load_split(small_dataset_dir / TRAIN_FILE)) // 16)
    assert step >= 3 and step % 3 == 0 and resumed == str(second_pod / "checkpoints" / f"checkpoint-{step}")
    assert f"resuming from {prefix}/checkpoint-{step} (step {step})" in _lines(caplog)
    assert steps.steps == list(range(step + 1, total + 1))  # global step > 0 at start, no restart from zero
    assert card["training"]["steps"] == total
    assert card["stage"] == "sft" and (second_pod / "model.safetensors").is_file()
    assert not list(second_pod.glob(".staging*"))


class _Interrupt(RuntimeError):
    pass


class _CrashAfterFirstSave(TrainerCallback):
    """Runs after UploadCheckpoints (extra callbacks come last), so the checkpoint is uploaded when it fires."""

    def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        raise _Interrupt(f"simulated crash after saving step {state.global_step}")


def test_a_crashed_grpo_stage_resumes_and_says_the_rollout_log_restarts(
    tmp_path: Path, s3_bucket: str, sft_model_dir: Path, small_dataset_dir: Path, training_config: RunConfig, caplog
) -> None:
    import pandas as pd

    from intentops.io import write_jsonl
    from intentops.training.grpo import run_grpo
    from intentops.training.sft import load_split

    train = tmp_path / "hard" / TRAIN_FILE
    write_jsonl(train, load_split(small_dataset_dir / TRAIN_FILE)[:4])
    cfg = RunConfig.from_flat(
        {
            "grpo__stage2_max_steps": 4,
            "grpo__save_steps": 2,
            "grpo__batch_size": 8,
            "grpo__num_generations": 4,
            "grpo__logging_steps": 1,
            "storage__checkpoint_uri": f"s3://{s3_bucket}/ckpt",
        },
        base=training_config,
    )
    with pytest.raises(_Interrupt):
        run_grpo(train, sft_model_dir, cfg, tmp_path / "pod1", "grpo2", "run-9", callbacks=[_CrashAfterFirstSave()])
    steps = _RecordSteps()
    with caplog.at_level(logging.INFO):
        result = run_grpo(train, sft_model_dir, cfg, tmp_path / "pod2", "grpo2", "run-9", callbacks=[steps])
    assert f"resuming from s3://{s3_bucket}/ckpt/run-9/grpo2/checkpoint-2 (step 2)" in _lines(caplog)
    assert any("the rollout log holds only the steps after it" in r.getMessage() for r in caplog.records)
    assert steps.steps == [3, 4] and result.steps == 4
    card = read_model_card(tmp_path / "pod2")
    assert card["training"]["resumed_from"] == str(tmp_path / "pod2" / "checkpoints" / "checkpoint-2")
    assert set(pd.read_parquet(result.rollouts_path)["step"]) == {2, 3}


def test_a_start_model_with_truncated_weights_is_named(
    tmp_path: Path, sft_model_dir: Path, small_dataset_dir: Path, training_config: RunConfig
) -> None:
    import shutil

    from intentops.training.grpo import run_grpo

    start = tmp_path / "start"
    shutil.copytree(sft_model_dir, start, ignore=shutil.ignore_patterns("checkpoints"))
    weights = start / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{weights}: truncated or corrupted safetensors file"):
        run_grpo(small_dataset_dir / TRAIN_FILE, start, training_config, tmp_path / "out", "grpo1")


def test_a_failed_upload_does_not_stop_training(tmp_path: Path, s3_server: str, caplog) -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from intentops.training.callbacks import UploadCheckpoints

    remote = RemoteCheckpoints.from_config("s3://no-such-bucket-here/ckpt", "r", "sft", KEY)
    _checkpoint(tmp_path, 4)
    state = TrainerState(global_step=4)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    with caplog.at_level(logging.WARNING, logger="intentops.training.callbacks"):
        UploadCheckpoints(remote, keep=2).on_save(args, state, TrainerControl())
    assert any("checkpoint-4 was not uploaded" in r.getMessage() for r in caplog.records)
