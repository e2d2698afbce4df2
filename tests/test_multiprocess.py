"""Training stages in several processes (one per GPU on a cluster): here two CPU processes in a gloo group.

Before the CPU-aware process state, every torchrun worker on a CPU took itself for the main process: each opened its
own MLflow stage run and wrote the model folder (world size 1 twice instead of one group of 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from intentops.artifacts import ROLLOUTS_FILE, TRAIN_FILE, ModelFolder
from intentops.config import RunConfig
from intentops.training.launch import (
    WORKER_ENV,
    TrainingLaunchError,
    in_worker,
    launch_command,
    processes_for,
    run_in_processes,
)


def test_launch_command_starts_one_torchrun_worker_per_process(tmp_path: Path) -> None:
    command = launch_command(4, tmp_path / "spec.json")
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in command and "--nproc_per_node=4" in command
    assert command[-3:] == ["-m", "intentops.training.launch", str(tmp_path / "spec.json")]


def test_process_count_comes_from_the_knob_else_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    cfg = RunConfig()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert processes_for(cfg) == 1  # CPU: one process
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert processes_for(cfg) == 8  # one per GPU the pod sees
    cfg.cluster.training_processes = 2
    assert processes_for(cfg) == 2
    monkeypatch.setenv(WORKER_ENV, "1")
    assert in_worker()


def test_failed_workers_raise_with_their_exit_status_and_log(tmp_path: Path) -> None:
    cfg = RunConfig()
    with pytest.raises(
        TrainingLaunchError,
        match=r"2 training processes failed \(exit status 1\): rank \d: FileNotFoundError: .*no-such-data",
    ):
        run_in_processes(
            "sft", cfg, 2, dataset_dir=str(tmp_path / "no-such-data"), base_model="", out_dir=str(tmp_path / "m")
        )
    assert not ModelFolder(tmp_path / "m").exists()


def _runs_per_stage(tracking_uri: str) -> dict[str, int]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    counts: dict[str, int] = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            counts[run.info.run_name] = counts.get(run.info.run_name, 0) + 1
    return counts


@pytest.mark.slow
def test_sft_and_grpo_in_two_processes_make_one_model_one_log_one_run(
    training_config: RunConfig, small_dataset_dir: Path, tmp_path: Path
) -> None:
    from intentops.stages.training import grpo, sft_warmup

    cfg = training_config.model_copy(deep=True)
    cfg.registry.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.cluster.gpus_per_training_stage = 0  # CPU processes: more than one per (absent) GPU is allowed
    cfg.cluster.training_processes = 2
    cfg.sft.epochs = 1
    cfg.sft.check_samples = 0
    cfg.grpo.stage1_max_steps = 2
    cfg.grpo.batch_size = 4
    cfg.grpo.num_generations = 4

    sft_dir = tmp_path / "sft"
    sft_warmup(cfg, small_dataset_dir, sft_dir)
    card = ModelFolder(sft_dir).card()
    assert card["training"]["processes"] == 2

    outputs = grpo(cfg, "grpo1", small_dataset_dir / TRAIN_FILE, sft_dir, tmp_path / "grpo1", tmp_path / "rollouts")
    assert ModelFolder(tmp_path / "grpo1").card()["training"]["processes"] == 2
    import pandas as pd

    rollouts = pd.read_parquet(tmp_path / "rollouts" / ROLLOUTS_FILE)
    # Both ranks' completions, gathered into one log: 4 per process per step.
    assert rollouts.groupby("step").size().to_dict() == {0: 8, 1: 8}
    assert outputs.model["steps"] == 2
    assert _runs_per_stage(cfg.registry.tracking_uri) == {"sft": 1, "grpo1": 1}


def test_more_processes_than_gpus_fails_when_the_config_loads() -> None:
    from intentops.config import load_config

    with pytest.raises(
        ValueError, match="cluster__training_processes: 4 processes on cluster__gpus_per_training_stage=2"
    ):
        load_config(overrides={"cluster__gpus_per_training_stage": 2, "cluster__training_processes": 4})
    assert load_config(overrides={"cluster__gpus_per_training_stage": 0, "cluster__training_processes": 2})
