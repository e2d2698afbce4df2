"""How rewards become advantages: `grpo.algorithm` mapped onto TRL.

- grpo: TRL's GRPOTrainer as is (group mean and std, KL as a loss term with coefficient beta).
- dr_grpo: GRPOTrainer with `scale_rewards="none"` and `loss_type="dr_grpo"` (group mean only, no length bias).
- reinforce_pp_baseline: rewards minus beta x KL, centred by their group mean, then divided by the std of the centred
  values over the whole batch (TRL has no such option: `IntentOpsGRPOTrainer` replaces the advantages).
- reinforce_pp: rewards minus beta x KL, centred and scaled by the whole batch's mean and std, no group baseline
  (also replaced in `IntentOpsGRPOTrainer`).
- rloo: TRL's RLOOTrainer (leave-one-out baseline, KL in the reward).

"KL in the reward" is the sum over a completion's tokens of log pi(t) - log pi_ref(t), times beta, subtracted from
that completion's reward (the same first-order estimate RLOOTrainer uses); the loss then has no KL term.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from intentops.config import GrpoConfig

ALGORITHMS = ("grpo", "dr_grpo", "reinforce_pp_baseline", "reinforce_pp", "rloo")
# Algorithms whose advantages IntentOpsGRPOTrainer computes itself (with the KL penalty moved into the reward).
OVERRIDDEN = ("reinforce_pp_baseline", "reinforce_pp")
EPS = 1e-4  # TRL's guard against a zero std


def trainer_options(grpo: GrpoConfig) -> dict[str, Any]:
    """The TRL config fields that select `grpo.algorithm` (for GRPOConfig, or RLOOConfig when it is rloo)."""
    if grpo.algorithm == "rloo":
        return {"beta": grpo.beta, "normalize_advantages": False}
    if grpo.algorithm == "dr_grpo":
        return {"beta": grpo.beta, "scale_rewards": "none", "loss_type": "dr_grpo"}
    # grpo scales per group; the REINFORCE++ family replaces the advantages, so TRL's scaling is irrelevant there.
    return {"beta": grpo.beta, "scale_rewards": "group", "loss_type": grpo.loss_type}


def kl_penalised(rewards: torch.Tensor, kl: torch.Tensor | None, beta: float) -> torch.Tensor:
    """Each completion's reward minus beta x its summed per-token KL to the reference (unchanged when beta is 0)."""
    if kl is None or beta == 0.0:
        return rewards
    return rewards - beta * kl


def reinforce_pp_baseline(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Group-centred rewards divided by the (unbiased) std of all centred rewards in the batch."""
    centred = rewards - rewards.view(-1, num_generations).mean(dim=1).repeat_interleave(num_generations)
    return centred / (centred.std() + EPS)


def reinforce_pp(rewards: torch.Tensor) -> torch.Tensor:
    """Rewards centred and scaled by the batch's mean and (unbiased) std: no per-prompt baseline."""
    return (rewards - rewards.mean()) / (rewards.std() + EPS)


def advantages(algorithm: str, rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Advantages of a gathered batch (groups of `num_generations` consecutive completions) for an overridden
    algorithm; `rewards` already include the KL penalty."""
    if algorithm == "reinforce_pp_baseline":
        return reinforce_pp_baseline(rewards, num_generations)
    if algorithm == "reinforce_pp":
        return reinforce_pp(rewards)
    raise ValueError(f"TRL computes the advantages of grpo.algorithm={algorithm!r} itself")


def make_trainer(algorithm: str, **kwargs: Any) -> Any:
    """The TRL trainer for `algorithm`: RLOOTrainer for rloo, else GRPOTrainer with the advantage override."""
    if algorithm == "rloo":
        from trl import RLOOTrainer

        return RLOOTrainer(**kwargs)
    return intentops_grpo_trainer()(algorithm=algorithm, **kwargs)


@cache
def intentops_grpo_trainer() -> type:
    """GRPOTrainer with the REINFORCE++ advantages (a class built lazily: TRL is imported only when training)."""
    from trl import GRPOTrainer

    class IntentOpsGRPOTrainer(GRPOTrainer):
        """Replaces TRL's advantages for the REINFORCE++ family; other algorithms pass straight through.

        TRL computes the advantages inline in `_generate_and_score_completions`; the rewards it gathered across
        processes are kept from `_calculate_rewards`, the KL penalty is computed from the reference log-probs TRL
        produced (beta > 0), and the process's slice of the new advantages replaces TRL's. The loss is then
        computed with beta 0, since the KL is already in the reward.
        """

        def __init__(self, *args: Any, algorithm: str = "grpo", **kwargs: Any) -> None:
            if algorithm not in ALGORITHMS or algorithm == "rloo":
                raise ValueError(f"IntentOpsGRPOTrainer cannot run grpo.algorithm={algorithm!r}")
            self.algorithm = algorithm
            super().__init__(*args, **kwargs)

        def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> Any:
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._gathered_rewards = rewards_per_func
            return rewards_per_func

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            if self.algorithm not in OVERRIDDEN:
                return output
            import torch

            per_func = self._gathered_rewards
            rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
            kl = self._sequence_kl(output)
            rewards = kl_penalised(rewards, kl, self.beta)
            local = len(output["advantages"])
            advantage = torch.nan_to_num(advantages(self.algorithm, rewards, self.num_generations), nan=0.0)
            start = self.accelerator.process_index * local
            output["advantages"] = advantage[start : start + local].to(output["advantages"].device)
            output.pop("ref_per_token_logps", None)
            return output

        def _sequence_kl(self, output: dict[str, Any]) -> torch.Tensor | None:
            """Per completion, summed log pi - log pi_ref over its tokens, gathered over processes; also logged."""
            import torch
            from accelerate.utils import gather

            ref = output.get("ref_per_token_logps")
            if ref is None:
                return None
            mask = output["completion_mask"]
            policy = output.get("old_per_token_logps")
            if policy is None:  # on-policy step: TRL skipped these log-probs, so compute them once here
                ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
                attention = torch.cat([output["prompt_mask"], mask], dim=1)
                with torch.no_grad():
                    policy, _, _ = self._get_per_token_logps_and_entropies(
                        self.model, ids, attention, output["completion_ids"].size(1), batch_size=len(ids)
                    )
            per_token = (policy - ref) * mask
            stats = self.accelerator.reduce(torch.stack([per_token.sum(), mask.sum().float()]), reduction="sum")
            self._metrics["train"]["kl"].append((stats[0] / stats[1].clamp(min=1.0)).item())
            return gather(per_token.sum(dim=-1))

        def _compute_loss(self, model: Any, inputs: Any) -> Any:
            if self.algorithm not in OVERRIDDEN:
                return super()._compute_loss(model, inputs)
            with _beta(self, 0.0):
                return super()._compute_loss(model, inputs)

    return IntentOpsGRPOTrainer


@contextmanager
def _beta(trainer: Any, value: float) -> Any:
    saved = trainer.beta
    trainer.beta = value
    try:
        yield
    finally:
        trainer.beta = saved
