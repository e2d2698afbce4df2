"""How rewards become advantages: `grpo.algorithm` mapped onto TRL.

- grpo: TRL's GRPOTrainer as is (group mean and std, KL as a loss term with coefficient beta).
- dr_grpo: GRPOTrainer with `scale_rewards="none"` and `loss_type="dr_grpo"` (group mean only, no length bias).
- reinforce_pp_baseline: rewards minus beta x KL, centred by their group mean, then divided by the std of the centred
  values over the whole batch (TRL has no such option: `intentops.training.trainer` replaces the advantages).
- reinforce_pp: rewards minus beta x KL, centred and scaled by the whole batch's mean and std, no group baseline
  (also replaced there).
- rloo: TRL's RLOOTrainer (leave-one-out baseline, KL in the reward).

"KL in the reward" is the sum over a completion's tokens of log pi(t) - log pi_ref(t), times beta, subtracted from
that completion's reward (the same first-order estimate RLOOTrainer uses); the loss then has no KL term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from intentops.config import GrpoConfig

ALGORITHMS = ("grpo", "dr_grpo", "reinforce_pp_baseline", "reinforce_pp", "rloo")
# Algorithms whose advantages the IntentOps trainer computes itself (with the KL penalty moved into the reward).
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
