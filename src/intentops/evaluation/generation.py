"""Batched greedy generation with transformers, free or restricted to the catalog's call grammar.

Prompts are grouped by length so a batch wastes little compute on padding, and the shared prompt prefix is computed
once (`decoding.PrefixCache`). With `constrained`, every step may only choose tokens that keep the answer a valid
call to a catalog label (`constrained.CallGrammarProcessor`), the decoding vLLM `structured_outputs` applies in
serving. The answer is read back with `PromptBuilder.extract`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from intentops.evaluation.decoding import (
    PrefixCache,
    greedy_generate,
    plan_batches,
    progress_bar,
    stop_token_ids,
    tokenize_prompts,
)
from intentops.evaluation.predictors import Prediction, Predictor, prediction_from_completion
from intentops.prompting import PromptBuilder

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from intentops.evaluation.constrained import TokenGrammar
    from intentops.evaluation.copying import CopyingGrammar


def token_grammar(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    builder: PromptBuilder,
    copy_arguments: bool = False,
) -> TokenGrammar | CopyingGrammar:
    """The catalog call grammar serving enforces, over this tokenizer's tokens (argument values copied from the
    utterance with `copy_arguments`)."""
    from intentops.evaluation.constrained import CallGrammar, TokenGrammar
    from intentops.evaluation.copying import CopyingGrammar

    grammar = TokenGrammar(CallGrammar.for_builder(builder), tokenizer, stop_token_ids(model, tokenizer))
    return CopyingGrammar(grammar) if copy_arguments else grammar


class GenerationPredictor(Predictor):
    """Batched greedy generation (`prefix_cache=False` runs every prompt in full; `constrained` as served)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        builder: PromptBuilder,
        *,
        batch_size: int = 32,
        max_new_tokens: int = 64,
        sort_by_length: bool = True,
        prefix_cache: bool = True,
        constrained: bool = False,
        copy_arguments: bool = False,
        progress: bool = True,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.builder = builder
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.sort_by_length = sort_by_length
        self.prefix_cache = prefix_cache
        self.progress = progress
        self.grammar = token_grammar(model, tokenizer, builder, copy_arguments) if constrained else None

    name = "generate"

    @property
    def constrained(self) -> bool:
        return self.grammar is not None

    @property
    def copy_arguments(self) -> bool:
        return hasattr(self.grammar, "base")

    def unconstrained(self) -> GenerationPredictor:
        free = copy.copy(self)
        free.grammar = None
        return free

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        from intentops.evaluation.constrained import CallGrammarProcessor

        sequences = tokenize_prompts(self.tokenizer, self.builder, texts)
        prefix = PrefixCache.shared_by(self.model, sequences) if self.prefix_cache and sequences else None
        results: list[Prediction | None] = [None] * len(texts)
        with progress_bar(len(texts), "constrained generate" if self.constrained else "generate", self.progress) as bar:
            for batch in plan_batches([len(s) for s in sequences], self.batch_size, self.sort_by_length):
                start = time.perf_counter()
                processor = (
                    CallGrammarProcessor(self.grammar, self.max_new_tokens, sources=[texts[i] for i in batch])
                    if self.grammar is not None
                    else None
                )
                completions = greedy_generate(
                    self.model, self.tokenizer, [sequences[i] for i in batch], self.max_new_tokens, prefix, processor
                )
                latency = time.perf_counter() - start
                for index, completion in zip(batch, completions, strict=True):
                    results[index] = prediction_from_completion(
                        self.builder, texts[index], completion, latency_s=latency
                    )
                bar.update(len(batch))
        return [r for r in results if r is not None]
