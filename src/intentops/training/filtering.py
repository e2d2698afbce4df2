"""Online difficulty filtering (`grpo.online_filtering`): a prompt group whose completions all score the same has
zero advantage everywhere, so it gives no gradient and only dilutes the batch. Such groups are dropped and the batch
is refilled with freshly sampled prompts (up to `MAX_REFILL_ROUNDS` extra generation rounds; what is still missing
then is filled back with dropped groups, which keeps the batch shape TRL expects). The dropped share is logged.

These helpers work on the dictionary TRL's `_generate_and_score_completions` returns: one row per completion,
prompts left-padded, completions and per-token values right-padded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MAX_REFILL_ROUNDS = 4
_LEFT_PADDED = ("prompt_ids", "prompt_mask")
_PER_ROW = ("advantages",)
_PER_TOKEN = (
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "importance_sampling_ratio",
    "tool_mask",
)


def informative_groups(rewards: torch.Tensor, num_generations: int, tol: float = 1e-6) -> torch.Tensor:
    """Per group of `num_generations` consecutive completions: True when their rewards are not all equal."""
    grouped = rewards.view(-1, num_generations)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values) > tol


def select_rows(output: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The rows (completions) of a scored batch where `rows` (bool) is True; every other key is dropped."""
    unknown = set(output) - {*_LEFT_PADDED, *_PER_ROW, *_PER_TOKEN, "num_items_in_batch"}
    if unknown:
        raise ValueError(f"grpo.online_filtering cannot merge batches with {', '.join(sorted(unknown))}")
    return {key: value[rows] for key, value in output.items() if key != "num_items_in_batch" and value is not None}


def concat_rows(parts: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Stack scored batches: prompts padded on the left, completions and per-token values on the right;
    `num_items_in_batch` is the merged batch's completion-token count."""
    import torch
    import torch.nn.functional as F

    merged: dict[str, Any] = {}
    for key in parts[0]:
        values = [part[key] for part in parts]
        if key in _PER_ROW or values[0].dim() == 1:
            merged[key] = torch.cat(values)
            continue
        width = max(v.size(1) for v in values)
        fill = pad_token_id if key in ("prompt_ids", "completion_ids") else 0
        left = key in _LEFT_PADDED
        merged[key] = torch.cat(
            [F.pad(v, (width - v.size(1), 0) if left else (0, width - v.size(1)), value=fill) for v in values]
        )
    merged["num_items_in_batch"] = merged["completion_mask"].sum()
    return merged
