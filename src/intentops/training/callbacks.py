"""Trainer callbacks shared by the SFT and GRPO stages: per-step MLflow metrics and readable progress lines.

The metrics go to whatever MLflow run is active (the stage's nested run from `intentops.tracking.stage_run`), with
the optimizer step as the MLflow step, so SFT loss and GRPO reward curves line up with the rollout log.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

log = logging.getLogger(__name__)


def _mlflow_key(name: str) -> str:
    """MLflow metric names allow alphanumerics and `_ - . / space`; TRL names like `rewards/format/mean` pass."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in name)


class MlflowStepMetrics(TrainerCallback):
    """Log every numeric value the trainer logs to the active MLflow run, stepped by the optimizer step."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        import mlflow

        if not state.is_world_process_zero or not logs or mlflow.active_run() is None:
            return
        metrics = {
            _mlflow_key(f"{self.prefix}{key}"): float(value)
            for key, value in logs.items()
            if isinstance(value, numbers.Number) and not isinstance(value, bool) and math.isfinite(float(value))
        }
        if metrics:
            mlflow.log_metrics(metrics, step=state.global_step)


class ProgressLog(TrainerCallback):
    """One log line per logged step (`stage step/max: key=value ...`), readable in a pod's log without tqdm."""

    def __init__(self, stage: str, keys: tuple[str, ...]) -> None:
        self.stage = stage
        self.keys = keys

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        shown = " ".join(f"{key}={logs[key]:.4g}" for key in self.keys if isinstance(logs.get(key), numbers.Number))
        if shown:
            log.info("%s step %d/%d: %s", self.stage, state.global_step, state.max_steps, shown)
