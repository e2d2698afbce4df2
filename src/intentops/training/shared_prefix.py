"""SFT that runs the prompt prefix shared by a whole batch once, instead of once per example.

Every training prompt starts with the same system prompt (instructions and the rendered tool catalog); on the
bundled example that is about 9 in 10 of each sequence's tokens, and only the few answer tokens carry loss. The
trainer below finds the longest prefix every row of a batch shares, runs it once with batch size 1 (keeping the
key/value cache and its autograd graph), repeats the cache over the batch and runs only the rows' own tokens on top
of it. The loss and the gradients are those of the plain forward (the repeated cache sums its gradients back into
the one prefix pass); only the work changes. Batches without a long enough shared prefix (e.g. similar-example
few-shot prompts), padding-free batches and activation checkpointing (which re-runs layers and would extend the
cache twice) take TRL's own path.
"""

from __future__ import annotations

from typing import Any

from trl import SFTTrainer

from intentops.hf_names import cache_arg, checkpointing_on, output_cache

# Below this many shared tokens the extra prefix pass costs more than it saves.
MIN_SHARED_TOKENS = 16


def shared_prefix_length(input_ids: Any, attention_mask: Any, labels: Any) -> int:
    """Tokens every row shares from the start, stopping before the first position any row is trained on.

    The returned length leaves every loss-carrying position (and the position that predicts it) in the rows' own part.
    """
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)
    differs = (~same).nonzero()
    common = int(differs[0]) if len(differs) else input_ids.shape[1]
    trained = (labels != -100).any(dim=0).nonzero()
    first_trained = int(trained[0]) if len(trained) else input_ids.shape[1]
    return max(0, min(common, first_trained - 1, input_ids.shape[1] - 1))


class SharedPrefixSFTTrainer(SFTTrainer):
    """TRL's `SFTTrainer` (completion-only loss, its metrics) with the batch's shared prompt prefix computed once."""

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        if self.model.training and not return_outputs and not checkpointing_on(self.args):
            inputs = self._with_shared_prefix(model, inputs)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _with_shared_prefix(self, model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        """The batch as suffix tokens over a key/value cache of the shared prefix (unchanged when nothing is shared)."""
        input_ids, attention_mask, labels = inputs.get("input_ids"), inputs.get("attention_mask"), inputs.get("labels")
        if input_ids is None or attention_mask is None or labels is None or input_ids.shape[0] < 2:
            return inputs
        if set(inputs) - {"input_ids", "attention_mask", "labels"}:
            return inputs  # position ids, packing metadata, multimodal inputs: not a plain padded batch
        split = shared_prefix_length(input_ids, attention_mask, labels)
        if split < MIN_SHARED_TOKENS:
            return inputs
        prefix = model(
            input_ids=input_ids[:1, :split], attention_mask=attention_mask[:1, :split], use_cache=True, logits_to_keep=1
        )
        cache = output_cache(prefix)
        cache.batch_repeat_interleave(input_ids.shape[0])
        return {
            "input_ids": input_ids[:, split:],
            "attention_mask": attention_mask,  # the whole row: the suffix attends to the cached prefix
            "labels": labels[:, split:],
            cache_arg(model): cache,
        }
