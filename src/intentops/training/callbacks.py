"""Trainer callbacks shared by the SFT and GRPO stages: per-step MLflow metrics, readable progress lines and the
GRPO collapse guard.

The metrics go to whatever MLflow run is active (the stage's nested run from `intentops.tracking.stage_run`), with
the optimizer step as the MLflow step, so SFT loss and GRPO reward curves line up with the rollout log.
`UploadCheckpoints` copies each saved checkpoint to the run-scoped location (`intentops.training.checkpoints`).
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

if TYPE_CHECKING:
    from intentops.training.checkpoints import RemoteCheckpoints

log = logging.getLogger(__name__)

# Keys TRL's GRPO and RLOO trainers log (reward function names "format" and "intent" from intentops.rewards).
FORMAT_KEY = "rewards/format/mean"
INTENT_KEY = "rewards/intent/mean"
ZERO_STD_KEY = "frac_reward_zero_std"
KL_KEY = "kl"
LENGTH_KEY = "completions/mean_length"


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


class UploadCheckpoints(TrainerCallback):
    """After the trainer saves `checkpoint-N`, upload it to the run-scoped location (main process only), so a
    retried pod resumes from it; the `keep` newest uploads are kept. A failed upload is logged, not fatal."""

    def __init__(self, remote: RemoteCheckpoints, keep: int) -> None:
        self.remote = remote
        self.keep = keep

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        from intentops.storage import StorageError

        try:
            self.remote.save(Path(args.output_dir) / f"checkpoint-{state.global_step}", self.keep)
        except StorageError as exc:  # the local checkpoint is intact: training goes on, a retry resumes earlier
            log.warning("checkpoint-%d was not uploaded (%s); training goes on", state.global_step, exc)


class RewardCollapseError(RuntimeError):
    """GRPO's policy collapsed (reward, intent reward, rollout variety, KL or length): it must not be handed on."""


@dataclass(frozen=True)
class CollapseRules:
    """When a logged GRPO step counts as collapsed (see `GrpoConfig.collapse_*`); 0 switches a ratio rule off."""

    total_weight: float
    threshold: float = 0.05
    patience: int = 20
    intent_drop: float = 0.25
    zero_std_share: float = 0.9
    max_kl: float = 5.0
    length_ratio: float = 4.0
    # Thought mode: the reasoning starts empty (the SFT target) and is meant to grow in RL, so only a shrinking
    # length is a collapse sign; max_completion_length bounds the growth (truncated rollouts are masked out).
    length_may_grow: bool = False

    @classmethod
    def from_config(cls, grpo: Any, total_weight: float, thought: bool = False) -> CollapseRules:
        return cls(
            total_weight=total_weight,
            threshold=grpo.collapse_threshold,
            patience=grpo.collapse_patience,
            intent_drop=grpo.collapse_intent_drop,
            zero_std_share=grpo.collapse_zero_std_share,
            max_kl=grpo.collapse_max_kl,
            length_ratio=grpo.collapse_length_ratio,
            length_may_grow=thought,
        )


class CollapseGuard(TrainerCallback):
    """Stops GRPO with `RewardCollapseError` once a collapse sign has held for `patience` optimizer steps.

    Signs, each checked on every logged step: the mean reward share or the format validity at or below
    `threshold`; the intent reward below `intent_drop` x its first logged value; at least `zero_std_share` of the
    groups with no reward variety while the reward is not near perfect (stuck on one answer, no gradient); KL above
    `max_kl`; mean completion length outside [first / length_ratio, first x length_ratio] (only below it in thought
    mode, whose reasoning may grow). A logged step stands for
    the optimizer steps since the previous log, so the streak counts those, whatever `logging_steps` is.
    """

    def __init__(self, rules: CollapseRules) -> None:
        self.rules = rules
        self.streak_steps = 0
        self.last_step = 0
        self.first: dict[str, float] = {}

    def signs(self, logs: dict[str, Any]) -> list[str]:
        """The collapse signs present in one logged step (and remember the first values the ratios refer to)."""
        rules = self.rules
        for key in (INTENT_KEY, LENGTH_KEY):
            if key in logs and key not in self.first:
                self.first[key] = float(logs[key])
        found = []
        share = float(logs["reward"]) / rules.total_weight
        if share <= rules.threshold:
            found.append(f"mean reward share {share:.3f} <= {rules.threshold}")
        validity = logs.get(FORMAT_KEY)
        if validity is not None and float(validity) <= rules.threshold:
            found.append(f"format validity {float(validity):.3f} <= {rules.threshold}")
        intent, first_intent = logs.get(INTENT_KEY), self.first.get(INTENT_KEY, 0.0)
        if intent is not None and first_intent > 0 and float(intent) < rules.intent_drop * first_intent:
            found.append(f"intent reward {float(intent):.3f} < {rules.intent_drop} x first {first_intent:.3f}")
        zero_std = logs.get(ZERO_STD_KEY)
        if (
            zero_std is not None
            and rules.zero_std_share < 1
            and float(zero_std) >= rules.zero_std_share
            and share < 1 - rules.threshold
        ):
            found.append(f"{float(zero_std):.0%} of groups without reward variety at reward share {share:.3f}")
        kl = logs.get(KL_KEY)
        if kl is not None and rules.max_kl > 0 and float(kl) > rules.max_kl:
            found.append(f"KL {float(kl):.3f} > {rules.max_kl}")
        length, first_length = logs.get(LENGTH_KEY), self.first.get(LENGTH_KEY, 0.0)
        if length is not None and rules.length_ratio > 0 and first_length > 0:
            ratio = float(length) / first_length
            if (ratio > rules.length_ratio and not rules.length_may_grow) or ratio < 1 / rules.length_ratio:
                found.append(f"completion length {float(length):.1f} is {ratio:.2f} x the first {first_length:.1f}")
        return found

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "reward" not in logs:
            return
        signs = self.signs(logs)
        steps = state.global_step - self.last_step
        self.last_step = state.global_step
        self.streak_steps = self.streak_steps + steps if signs else 0
        if self.streak_steps >= self.rules.patience:
            raise RewardCollapseError(
                f"policy collapse at step {state.global_step}: {'; '.join(signs)}; signs held for "
                f"{self.streak_steps} optimizer steps (grpo.collapse_patience={self.rules.patience}); no model was "
                f"written. Check the SFT warm-up, the learning rate, beta and the reward weights (grpo.collapse_*)."
            )
