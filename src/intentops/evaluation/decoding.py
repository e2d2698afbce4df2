"""Transformers decoding primitives shared by the predictors: batch planning, the shared prompt-prefix cache, greedy.

Batching is planned by pure functions (`plan_batches`, `common_prefix_length`, `assemble`) so the bench and the tests
can compare strategies on the same inputs. The token prefix every prompt shares (the system prompt with the catalog,
usually >90% of the prompt) is run through the model once and its key/value cache reused by every batch, as vLLM's
automatic prefix caching does in serving.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from intentops.evaluation.predictors import chat_prompts
from intentops.hf_names import cache_arg, output_cache
from intentops.prompting import PromptBuilder

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache, LogitsProcessor, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

MIN_SHARED_PREFIX = 16  # tokens; a shorter shared prefix is not worth a separate forward pass
# greedy_tails drops stopped rows once they are at least 1 / COMPACT_SHARE of the batch (each drop copies the cache).
COMPACT_SHARE = 4


def plan_batches(lengths: Sequence[int], batch_size: int, sort_by_length: bool = True) -> list[list[int]]:
    """Indices grouped into batches of at most `batch_size`.

    Sorted by length (longest first), each batch holds prompts of similar length, so padding adds few tokens and an
    out-of-memory error shows up on the first batch rather than the last.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)) if sort_by_length else range(len(lengths))
    order = list(order)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence shares, leaving each at least one token of its own.

    The last prompt token must go through the model with its own row, since its logits start the answer.
    """
    if not sequences:
        return 0
    limit = min(len(s) for s in sequences) - 1
    # what every sequence shares is what the lexicographically first and last share (compared in C, not per token)
    first, last = min(map(list, sequences)), max(map(list, sequences))
    length = 0
    while length < limit and first[length] == last[length]:
        length += 1
    return max(length, 0)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Left-padded token ids and their attention mask (1 = real token)."""
    width = max((len(s) for s in sequences), default=0)
    ids = [[pad_id] * (width - len(s)) + list(s) for s in sequences]
    mask = [[0] * (width - len(s)) + [1] * len(s) for s in sequences]
    return ids, mask


def assemble(
    sequences: Sequence[Sequence[int]], prefix_ids: Sequence[int], pad_id: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Rows laid out `[shared prefix][padding][own suffix]` with their attention masks.

    The padding sits after the shared prefix, so one cached prefix serves every row; positions come from the mask,
    so each row sees exactly the token positions it would have alone.
    """
    n = len(prefix_ids)
    for index, sequence in enumerate(sequences):
        if list(sequence[:n]) != list(prefix_ids) or len(sequence) <= n:
            raise ValueError(f"sequence {index} does not extend the shared prefix of {n} tokens")
    ids, mask = left_pad([s[n:] for s in sequences], pad_id)
    return [list(prefix_ids) + row for row in ids], [[1] * n + row for row in mask]


def assemble_tensors(
    sequences: Sequence[Sequence[int]], prefix_ids: Sequence[int], pad_id: int, device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """`assemble` as (rows, T) tensors on `device`; the shared prefix is converted once, not once per row."""
    import torch

    n = len(prefix_ids)
    for index, sequence in enumerate(sequences):
        if len(sequence) <= n or list(sequence[:n]) != list(prefix_ids):
            raise ValueError(f"sequence {index} does not extend the shared prefix of {n} tokens")
    ids, mask = left_pad([s[n:] for s in sequences], pad_id)
    rows = len(sequences)
    head = torch.tensor(list(prefix_ids), dtype=torch.long, device=device).expand(rows, n)
    input_ids = torch.cat([head, torch.tensor(ids, dtype=torch.long, device=device)], dim=1)
    attention = torch.cat(
        [torch.ones(rows, n, dtype=torch.long, device=device), torch.tensor(mask, dtype=torch.long, device=device)],
        dim=1,
    )
    return input_ids, attention


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS plus the model's generation-config EOS ids."""
    ids: list[int] = []
    configured = model.generation_config.eos_token_id
    for candidate in [tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])]:
        if candidate is not None and candidate not in ids:
            ids.append(int(candidate))
    return ids


def shared_head(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> str:
    """The longest text every prompt starts with that ends right after a special token.

    Special tokens are split out before BPE runs, so no merge crosses that cut: the head can be tokenized once.
    """
    if not prompts:
        return ""
    first, last = min(prompts), max(prompts)  # their common prefix is every prompt's
    length = 0
    while length < len(first) and first[length] == last[length]:
        length += 1
    common = first[:length]
    specials = {*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()}
    return common[: max((common.rfind(token) + len(token) for token in specials if token in common), default=0)]


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, builder: PromptBuilder, texts: Sequence[str]
) -> list[list[int]]:
    """Token ids of each utterance's full prompt (chat template with the generation prompt).

    The system prompt with the catalog is most of every prompt; it is tokenized once, not once per utterance.
    """
    prompts = chat_prompts(tokenizer, builder, texts)
    head = shared_head(tokenizer, prompts)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"] if head else []
    tails = tokenizer([prompt[len(head) :] for prompt in prompts], add_special_tokens=False)["input_ids"]
    return [head_ids + tail for tail in tails]


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="utt", disable=not enabled)


# ---- the shared prompt prefix ----------------------------------------------------------------------------------


def make_cache(model: PreTrainedModel, layers: Sequence[tuple[torch.Tensor, torch.Tensor]] | None) -> DynamicCache:
    """A key/value cache holding `layers` (per layer (keys, values)), or an empty one."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=layers, config=model.config) if layers else DynamicCache(config=model.config)


class PrefixCache:
    """The key/value cache of the token prefix all prompts share, computed once and reused by every batch."""

    def __init__(self, model: PreTrainedModel, prefix_ids: Sequence[int]) -> None:
        import torch

        self.model = model
        self.ids = list(prefix_ids)
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([self.ids], device=model.device), use_cache=True, logits_to_keep=1)
        self.layers = [(layer.keys, layer.values) for layer in output_cache(out).layers]

    @classmethod
    def shared_by(
        cls, model: PreTrainedModel, sequences: Sequence[Sequence[int]], min_tokens: int = MIN_SHARED_PREFIX
    ) -> PrefixCache | None:
        """The cache of the prefix shared by `sequences`, or None when it is shorter than `min_tokens`."""
        length = common_prefix_length(sequences)
        if length < min_tokens:
            return None
        log.debug("caching the %d-token prompt prefix shared by %d prompts", length, len(sequences))
        return cls(model, sequences[0][:length])

    def __len__(self) -> int:
        return len(self.ids)

    def expand(self, batch_size: int) -> DynamicCache:
        """A fresh cache holding the prefix for `batch_size` rows (a view: the prefix is not copied per row)."""
        return make_cache(
            self.model, [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in self.layers]
        )


def prefix_ids(prefix: PrefixCache | None) -> list[int]:
    return prefix.ids if prefix is not None else []


# ---- greedy decoding -------------------------------------------------------------------------------------------


def greedy_continue(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    cache: DynamicCache | None = None,
    logits_processor: LogitsProcessor | None = None,
) -> torch.Tensor:
    """New tokens of a greedy `generate` over already laid-out rows; `cache` holds a leading part of them.

    `logits_processor` (e.g. the catalog call grammar) restricts the tokens each step may choose.
    """
    import torch
    from transformers import LogitsProcessorList

    kwargs: dict[str, Any] = {"cache": cache} if cache is not None else {}
    if logits_processor is not None:
        kwargs["logits_processor"] = LogitsProcessorList([logits_processor])
    with torch.inference_mode():
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=list(eos_ids),
            **kwargs,
        )
    return generated[:, input_ids.shape[1] :]


@cache
def _append_layer_class() -> type:
    import torch
    from transformers.cache_utils import DynamicLayer

    class AppendLayer(DynamicLayer):
        """A DynamicLayer with room to grow: a new position is written in place, where DynamicLayer concatenates
        (copies) the whole cache at every step; rows leave with `batch_select_indices` as usual."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, spare: int) -> None:
            super().__init__()
            self.length = keys.shape[-2]
            self.buffers = []
            for tensor in (keys, values):
                buffer = tensor.new_empty(*tensor.shape[:-2], self.length + spare, tensor.shape[-1])
                buffer[..., : self.length, :] = tensor
                self.buffers.append(buffer)
            self.device, self.is_initialized = keys.device, True
            self._view()

        def _view(self) -> None:
            self.keys, self.values = (buffer[..., : self.length, :] for buffer in self.buffers)

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            end = self.length + key_states.shape[-2]
            if end > self.buffers[0].shape[-2]:  # out of room: grow (a copy, as DynamicLayer makes every step)
                self.buffers = [
                    torch.cat([b, b.new_empty(*b.shape[:-2], end - b.shape[-2], b.shape[-1])], dim=-2)
                    for b in self.buffers
                ]
            for buffer, states in zip(self.buffers, (key_states, value_states), strict=True):
                buffer[..., self.length : end, :] = states
            self.length = end
            self._view()
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.buffers = [buffer[indices, ...] for buffer in self.buffers]
            self._view()

    return AppendLayer


def growing_cache(
    model: PreTrainedModel, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], spare: int
) -> DynamicCache:
    """A cache holding `layers` with room for `spare` more positions per layer written in place (full-attention
    layers; any other kind is filled as `make_cache` does)."""
    from transformers.cache_utils import DynamicLayer

    result = make_cache(model, None)
    append = _append_layer_class()
    for index, (keys, values) in enumerate(layers):
        if index < len(result.layers) and type(result.layers[index]) is DynamicLayer:
            result.layers[index] = append(keys, values, spare)
        elif index < len(result.layers):
            result.layers[index].update(keys, values)
        else:
            return make_cache(model, layers)
    return result


def greedy_tails(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_ids: Sequence[int],
    cached_layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    first_allowed: Sequence[Sequence[int]] | None = None,
) -> list[list[int]]:
    """Greedy new tokens per row (ending with the stop token when one came), `generate`'s answers without its
    per-step overhead: the cache grows in place, and rows that have stopped leave the batch, so a step costs what
    the rows still writing cost.

    `cached_layers` (per layer (keys, values)) hold a leading part of the laid-out rows; `first_allowed[row]`
    restricts the row's first token (empty: free). Used where no logits processor follows the rows' own states
    (label scoring's argument completion).
    """
    import torch

    rows = input_ids.shape[0]
    tails: list[list[int]] = [[] for _ in range(rows)]
    if rows == 0 or max_new_tokens < 1:
        return tails
    stop = torch.tensor(list(eos_ids), device=input_ids.device)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cached = cached_layers[0][0].shape[-2] if cached_layers else 0
    cache = growing_cache(model, cached_layers, input_ids.shape[1] - cached + max_new_tokens)
    active = torch.arange(rows, device=input_ids.device)
    with torch.inference_mode():
        out = model(
            input_ids=input_ids[:, cached:],
            attention_mask=attention_mask,
            position_ids=positions[:, cached:],
            use_cache=True,
            logits_to_keep=1,
            **{cache_arg(model): cache},
        )
        logits = out.logits[:, -1]
        if first_allowed is not None:
            keep = torch.zeros_like(logits, dtype=torch.bool)
            for row, tokens in enumerate(first_allowed):
                keep[row, list(tokens) if tokens else slice(None)] = True
            logits = logits.masked_fill(~keep, float("-inf"))
        position = positions[:, -1]
        writing = torch.ones(rows, dtype=torch.bool, device=input_ids.device)  # per active row: not stopped yet
        # the decode steps' additive 4D mask, with room for every new column (0: attend), so the model takes it as
        # is instead of building one from the 2D mask at every step
        width = attention_mask.shape[1]
        additive = torch.zeros(rows, 1, 1, width + max_new_tokens, dtype=model.dtype, device=input_ids.device)
        additive[:, 0, 0, :width].masked_fill_(attention_mask == 0, torch.finfo(model.dtype).min)
        for step in range(max_new_tokens):
            chosen = logits.argmax(dim=-1)
            for row, token, live in zip(active.tolist(), chosen.tolist(), writing.tolist(), strict=True):
                if live:
                    tails[row].append(token)
            writing &= ~torch.isin(chosen, stop)
            stopped = len(active) - int(writing.sum())
            if step == max_new_tokens - 1 or stopped == len(active):
                break
            if stopped * COMPACT_SHARE >= len(active):  # compacting copies the cache: only once enough have stopped
                kept = writing.nonzero().squeeze(1)
                active, chosen, position, additive = active[kept], chosen[kept], position[kept], additive[kept]
                writing = writing[kept]
                for layer in cache.layers:
                    layer.batch_select_indices(kept)
            width += 1
            position = position + 1
            out = model(
                input_ids=chosen[:, None],
                attention_mask=additive[..., :width],
                position_ids=position[:, None],
                use_cache=True,
                **{cache_arg(model): cache},
            )
            logits = out.logits[:, -1]
    return tails


def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequences: Sequence[Sequence[int]],
    max_new_tokens: int,
    prefix: PrefixCache | None = None,
    logits_processor: LogitsProcessor | None = None,
) -> list[str]:
    """Greedy completions of one batch of tokenized prompts, reusing `prefix` when given (stops at any EOS)."""
    import torch

    ids, mask = assemble(sequences, prefix_ids(prefix), tokenizer.pad_token_id)
    new_tokens = greedy_continue(
        model,
        torch.tensor(ids, device=model.device),
        torch.tensor(mask, device=model.device),
        max_new_tokens,
        tokenizer.pad_token_id,
        stop_token_ids(model, tokenizer),
        prefix.expand(len(sequences)) if prefix is not None else None,
        logits_processor,
    )
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
