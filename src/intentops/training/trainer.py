"""The TRL trainer behind GRPO stages 1 and 2: TRL's RLOOTrainer for `grpo.algorithm=rloo`, otherwise a GRPOTrainer
subclass that replaces the advantages for the REINFORCE++ family (`intentops.training.advantages`) and, with
`grpo.online_filtering`, drops groups without reward variety and refills the batch (`intentops.training.filtering`).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from intentops.training.advantages import ALGORITHMS, OVERRIDDEN, advantages, kl_penalised
from intentops.training.filtering import MAX_REFILL_ROUNDS, concat_rows, informative_groups, select_rows

if TYPE_CHECKING:
    import torch

FILTERED_SHARE_METRIC = "filtering/dropped_group_share"
REFILL_ROUNDS_METRIC = "filtering/refill_rounds"


def make_trainer(algorithm: str, online_filtering: bool = False, **kwargs: Any) -> Any:
    """The TRL trainer for `algorithm`: RLOOTrainer for rloo, else GRPOTrainer with the advantage override."""
    if algorithm == "rloo":
        if online_filtering:
            raise ValueError("grpo.online_filtering needs GRPOTrainer; it is not available for grpo.algorithm=rloo")
        from trl import RLOOTrainer

        return RLOOTrainer(**kwargs)
    return intentops_grpo_trainer()(algorithm=algorithm, online_filtering=online_filtering, **kwargs)


@cache
def intentops_grpo_trainer() -> type:
    """GRPOTrainer with the REINFORCE++ advantages (a class built lazily: TRL is imported only when training)."""
    from trl import GRPOTrainer

    class IntentOpsGRPOTrainer(GRPOTrainer):
        """Replaces TRL's advantages for the REINFORCE++ family (other algorithms pass straight through) and
        filters uninformative groups when asked.

        TRL computes the advantages inline in `_generate_and_score_completions`; the rewards it gathered across
        processes are kept from `_calculate_rewards`, the KL penalty is computed from the reference log-probs TRL
        produced (beta > 0), and the process's slice of the new advantages replaces TRL's. The loss is then
        computed with beta 0, since the KL is already in the reward.
        """

        def __init__(self, *args: Any, algorithm: str = "grpo", online_filtering: bool = False, **kwargs: Any):
            if algorithm not in ALGORITHMS or algorithm == "rloo":
                raise ValueError(f"IntentOpsGRPOTrainer cannot run grpo.algorithm={algorithm!r}")
            self.algorithm = algorithm
            self.online_filtering = online_filtering
            super().__init__(*args, **kwargs)
            if online_filtering and self.accelerator.num_processes > 1:
                raise ValueError("grpo.online_filtering runs on one process only; turn it off for multi-GPU runs")
            if online_filtering and self.num_iterations > 1:
                raise ValueError("grpo.online_filtering needs num_iterations=1")

        def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> Any:
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._gathered_rewards = rewards_per_func
            return rewards_per_func

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            output = self._scored(inputs)
            return self._filtered(output) if self.online_filtering else output

        def _rewards(self) -> torch.Tensor:
            """The weighted total reward of every completion of the batch just scored (all processes)."""
            per_func = self._gathered_rewards
            return (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)

        def _scored(self, inputs: Any) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            if self.algorithm not in OVERRIDDEN:
                return output
            import torch

            rewards = self._rewards()
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
                        self.model,
                        ids,
                        attention,
                        output["completion_ids"].size(1),
                        batch_size=self.args.per_device_train_batch_size,
                    )
            per_token = (policy - ref) * mask
            stats = self.accelerator.reduce(torch.stack([per_token.sum(), mask.sum().float()]), reduction="sum")
            self._metrics["train"]["kl"].append((stats[0] / stats[1].clamp(min=1.0)).item())
            return gather(per_token.sum(dim=-1))

        def _filtered(self, output: dict[str, Any]) -> dict[str, Any]:
            """Drop groups whose rewards are all equal and refill from newly drawn prompts (see module docstring)."""
            g = self.num_generations
            keep = informative_groups(self._rewards(), g)
            groups, have = len(keep), int(keep.sum())
            self._metrics["train"][FILTERED_SHARE_METRIC].append(1 - have / groups)
            parts = [select_rows(output, keep.repeat_interleave(g))]
            dropped = select_rows(output, (~keep).repeat_interleave(g))
            rounds = 0
            while have < groups and rounds < MAX_REFILL_ROUNDS:
                rounds += 1
                extra = self._scored(self._draw_prompts(groups - have, rounds))
                fresh = informative_groups(self._rewards(), g)
                fresh &= fresh.cumsum(0) <= groups - have  # only as many as are missing
                parts.append(select_rows(extra, fresh.repeat_interleave(g)))
                have += int(fresh.sum())
            if have < groups:  # still short: keep the batch shape with dropped groups (they add no gradient)
                parts.append({key: value[: (groups - have) * g] for key, value in dropped.items()})
            self._metrics["train"][REFILL_ROUNDS_METRIC].append(float(rounds))
            return concat_rows(parts, self.processing_class.pad_token_id)

        def _draw_prompts(self, count: int, round_: int) -> list[dict[str, Any]]:
            """`count` training prompts drawn at random (seeded by step and round), each repeated per generation."""
            import torch

            generator = torch.Generator().manual_seed(self.args.seed + 1000 * self.state.global_step + round_)
            picks = torch.randint(len(self.train_dataset), (count,), generator=generator).tolist()
            return [self.train_dataset[i] for i in picks for _ in range(self.num_generations)]

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
