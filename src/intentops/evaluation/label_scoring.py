"""Label scoring: rank every catalog label by how likely the model is to answer with it, then fill in arguments.

A label is scored on what a trained model writes for it (`intentops.evaluation.label_paths`): the tokens every answer
for the label begins with, then, where the argument bracket merges with what follows (`(Grandma`, `()`), the
probability mass of every token that begins with the rest of the label's answer prefix. With the tiny profile's copy
tokens `name(` is one token and nothing is left to sum over. All labels are scored in ONE forward pass per batch:
each row holds its prompt followed by the labels' token trie, and a 4D attention mask lets every trie node see the
prompt and its own ancestors only, so each label is scored exactly as if it were appended alone while shared prefixes
(`music_`) and the prompt's cache are computed once.

Two normalisations: `vocabulary` takes each token's probability against the whole vocabulary (the model's own
probability of the label); `catalog` against only the tokens some label can take at that point, i.e. the
distribution a decoder constrained to the catalog chooses from. `catalog` projects the hidden states onto just those
rows of the output head, and drops trie nodes where only one continuation is possible, which is most of the cost.
Two rankings: the sum of the label's log-probabilities, or their mean per scored token (lowest perplexity).

The best label wins, a softmax over the label scores is its confidence, and only intents that take parameters get a
short greedy `generate` (optionally grammar-constrained), continuing from the prompt cache after the label's path.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from intentops.catalog import UNCERTAIN_INTENT
from intentops.evaluation.decoding import (
    PrefixCache,
    assemble_tensors,
    greedy_continue,
    greedy_tails,
    left_pad,
    make_cache,
    plan_batches,
    prefix_ids,
    progress_bar,
    stop_token_ids,
    tokenize_prompts,
)
from intentops.evaluation.label_paths import NO_ARGUMENTS, LabelPath, LabelTrie, label_paths
from intentops.evaluation.predictors import Prediction, Predictor, prediction_from_completion
from intentops.hf_names import cache_arg, output_cache
from intentops.prompting import PromptBuilder

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Normalization = Literal["vocabulary", "catalog"]
# Rows waiting for argument completion are completed together once this many batches' worth have been scored.
COMPLETION_POOL = 4


@dataclass
class ScoredBatch:
    """Label scores of one batch plus what argument completion continues from: the rows and their prompt cache."""

    scores: torch.Tensor  # (rows, labels) float32 log-probabilities, on CPU
    input_ids: torch.Tensor  # (rows, T) `[prefix][pad][suffix]`
    attention_mask: torch.Tensor  # (rows, T)
    prompt_layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values) of those T positions

    def select(self, rows: Sequence[int]) -> ScoredBatch:
        index = torch.tensor(list(rows), dtype=torch.long, device=self.input_ids.device)
        return ScoredBatch(
            self.scores[index.cpu()],
            self.input_ids[index],
            self.attention_mask[index],
            [(keys[index], values[index]) for keys, values in self.prompt_layers],
        )

    @staticmethod
    def concat(parts: Sequence[ScoredBatch], n_prefix: int, pad_id: int) -> ScoredBatch:
        """The rows of several batches as one: narrower rows get masked padding after the shared prefix, where each
        batch already has its own, so every row keeps its positions and sees the same tokens."""
        width = max(part.input_ids.shape[1] for part in parts)

        def widen(tensor: torch.Tensor, dim: int, gap: int, fill: int) -> torch.Tensor:
            if not gap:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = gap
            head, tail = tensor.split([n_prefix, tensor.shape[dim] - n_prefix], dim=dim)
            return torch.cat([head, tensor.new_full(shape, fill), tail], dim=dim)

        gaps = [width - part.input_ids.shape[1] for part in parts]
        return ScoredBatch(
            torch.cat([part.scores for part in parts]),
            torch.cat([widen(p.input_ids, 1, gap, pad_id) for p, gap in zip(parts, gaps, strict=True)]),
            torch.cat([widen(p.attention_mask, 1, gap, 0) for p, gap in zip(parts, gaps, strict=True)]),
            [
                tuple(
                    torch.cat(
                        [widen(p.prompt_layers[layer][kv], 2, gap, 0) for p, gap in zip(parts, gaps, strict=True)]
                    )
                    for kv in (0, 1)
                )
                for layer in range(len(parts[0].prompt_layers))
            ],
        )


@dataclass
class _Waiting:
    """Rows of one scored batch that still need their arguments, and what their predictions carry."""

    scored: ScoredBatch
    indices: list[int]
    best: list[int]
    confidences: list[float]
    latency_s: float


def _trie_attention(
    model: PreTrainedModel, attention: torch.Tensor, n_prefix: int, trie: LabelTrie
) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive 4D mask and position ids for `[suffix][trie nodes]` queries over `[prefix][suffix][nodes]` keys."""
    device = attention.device
    rows, width = attention.shape
    n_suffix, n_nodes = width - n_prefix, len(trie.nodes)
    real = attention.bool()
    causal = torch.ones(n_suffix, width, dtype=torch.bool, device=device).tril(diagonal=n_prefix)
    ancestry = torch.tensor(trie.ancestry(), dtype=torch.bool, device=device).reshape(n_nodes, n_nodes)
    allowed = torch.cat(
        [
            torch.cat([causal[None] & real[:, None, :], real.new_zeros(rows, n_suffix, n_nodes)], dim=2),
            torch.cat([real[:, None, :].expand(rows, n_nodes, width), ancestry.expand(rows, -1, -1)], dim=2),
        ],
        dim=1,
    )
    additive = torch.zeros(allowed.shape, dtype=model.dtype, device=device)
    additive.masked_fill_(~allowed, torch.finfo(model.dtype).min)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    node_positions = (
        attention.sum(-1, keepdim=True) + torch.tensor(trie.depths(), dtype=torch.long, device=device)[None, :]
    )
    return additive[:, None], torch.cat([positions[:, n_prefix:], node_positions], dim=1)


def _edge_log_probs(
    logits: torch.Tensor, columns: Sequence[int] | None, trie: LabelTrie, normalization: Normalization
) -> torch.Tensor:
    """(rows, edges) log-probability of each edge from (rows, positions, columns) logits.

    `columns` maps logit columns to token ids (None: the whole vocabulary, in order). The normaliser is the whole
    vocabulary or, for `catalog`, the tokens some label takes at that position.
    """
    device = logits.device
    column_of = {t: c for c, t in enumerate(columns)} if columns is not None else None
    col = (lambda t: column_of[t]) if column_of is not None else (lambda t: t)
    n_positions, n_columns = logits.shape[1], logits.shape[2]
    if normalization == "vocabulary":
        normaliser = torch.logsumexp(logits, dim=-1)  # (rows, positions)
    else:
        member = torch.zeros(n_positions, n_columns, dtype=torch.bool, device=device)
        for position in range(n_positions):
            member[position, [col(t) for t in trie.allowed(position)]] = True
        normaliser = torch.logsumexp(logits.masked_fill(~member, float("-inf")), dim=-1)
    out = logits.new_empty(logits.shape[0], len(trie.edges))
    singles = [e for e, (_, tokens) in enumerate(trie.edges) if len(tokens) == 1]
    if singles:
        position = torch.tensor([trie.edges[e][0] for e in singles], device=device)
        column = torch.tensor([col(trie.edges[e][1][0]) for e in singles], device=device)
        out[:, singles] = logits[:, position, column] - normaliser[:, position]
    for e, (position, tokens) in enumerate(trie.edges):
        if len(tokens) > 1:
            index = torch.tensor([col(t) for t in tokens], device=device)
            out[:, e] = torch.logsumexp(logits[:, position, index], dim=-1) - normaliser[:, position]
    return out


def score_label_batch(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    trie: LabelTrie,
    pad_id: int,
    prefix: PrefixCache | None = None,
    normalization: Normalization = "vocabulary",
) -> ScoredBatch:
    """Log-probability of every label after every prompt, in ONE forward pass per batch (see the module docstring).

    Hidden states are kept only at the scoring positions (the last prompt token and the trie nodes) and projected
    onto the whole output head (`vocabulary`) or onto the rows of the tokens the trie takes there (`catalog`).
    """
    device = model.device
    n_prefix = len(prefix) if prefix is not None else 0
    input_ids, attention = assemble_tensors(sequences, prefix_ids(prefix), pad_id, device)
    rows, width = input_ids.shape
    n_suffix, n_nodes = width - n_prefix, len(trie.nodes)
    additive, positions = _trie_attention(model, attention, n_prefix, trie)
    tokens = torch.tensor(trie.tokens(), dtype=torch.long, device=device).reshape(1, n_nodes)
    cache = prefix.expand(rows) if prefix is not None else make_cache(model, None)
    head = model.get_output_embeddings()
    columns = None if normalization == "vocabulary" else sorted({t for _, edge in trie.edges for t in edge})
    with torch.inference_mode():
        out = model.get_decoder()(
            input_ids=torch.cat([input_ids[:, n_prefix:], tokens.expand(rows, -1)], dim=1),
            attention_mask=additive,
            position_ids=positions,
            use_cache=True,
            **{cache_arg(model): cache},
        )
        hidden = out.last_hidden_state[:, n_suffix - 1 :]  # last prompt token, then the nodes
        if columns is None:
            logits = head(hidden).float()
        else:
            index = torch.tensor(columns, device=device)
            bias = head.bias[index] if head.bias is not None else None
            logits = torch.nn.functional.linear(hidden, head.weight[index], bias).float()
        edge_logp = _edge_log_probs(logits, columns, trie, normalization)
        label_of = [(e, label) for label, path in enumerate(trie.paths) for e in path]
        scores = edge_logp.new_zeros(rows, trie.n_labels)
        if label_of:
            edge, label = (torch.tensor(column, device=device) for column in zip(*label_of, strict=True))
            scores = scores.index_add(1, label, edge_logp[:, edge])
        prompt_layers = [(layer.keys[:, :, :width], layer.values[:, :, :width]) for layer in output_cache(out).layers]
    return ScoredBatch(scores.cpu(), input_ids, attention, prompt_layers)


class LabelScoringPredictor(Predictor):
    """Label scoring plus short argument completion.

    `length_normalized` ranks by the mean per-token log-probability (lowest perplexity) instead of the sum; the sum
    is the default because it is the probability of the answer, while the mean favours labels whose extra tokens are
    near-certain (long names). `constrained` keeps the argument completion inside the catalog call grammar.
    """

    name = "label_scoring"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        builder: PromptBuilder,
        *,
        batch_size: int = 32,
        max_new_tokens: int = 64,
        length_normalized: bool = False,
        normalization: Normalization = "vocabulary",
        constrained: bool = False,
        copy_arguments: bool = False,
        prefix_cache: bool = True,
        progress: bool = True,
    ) -> None:
        if model.config._attn_implementation.startswith("flash"):
            raise ValueError("label scoring needs sdpa or eager attention (it passes a custom 4D attention mask)")
        if normalization not in ("vocabulary", "catalog"):
            raise ValueError(f"label normalization {normalization!r}: expected vocabulary or catalog")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.builder = builder
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.length_normalized = length_normalized
        self.normalization = normalization
        self.prefix_cache = prefix_cache
        self.progress = progress
        continuations = builder.label_continuations()
        self.labels = list(continuations)
        self.names = [continuations[label].removesuffix("(") for label in self.labels]
        self.takes_arguments = [
            label != UNCERTAIN_INTENT and bool(builder.catalog.get(label).parameters) for label in self.labels
        ]
        self.paths: list[LabelPath] = label_paths(tokenizer, builder, self.names, self.takes_arguments, self.labels)
        self.full_trie = LabelTrie.build([p.tokens for p in self.paths], [p.openers for p in self.paths])
        self.trie = self.full_trie.for_catalog() if normalization == "catalog" else self.full_trie
        self.eos_ids = stop_token_ids(model, tokenizer)
        self.grammar = None
        if constrained:
            from intentops.evaluation.generation import token_grammar

            self.grammar = token_grammar(model, tokenizer, builder, copy_arguments)

    @property
    def constrained(self) -> bool:
        return self.grammar is not None

    @property
    def copy_arguments(self) -> bool:
        return hasattr(self.grammar, "base")

    def unconstrained(self) -> LabelScoringPredictor:
        free = copy.copy(self)
        free.grammar = None
        return free

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def score(self, texts: Sequence[str]) -> list[list[float]]:
        """The ranking score of every label for every text (rows follow `texts`, columns `self.labels`)."""
        sequences, prefix = self._prepare(texts)
        scores: list[list[float]] = [[] for _ in texts]
        for batch in plan_batches([len(s) for s in sequences], self.batch_size):
            scored = self._score([sequences[i] for i in batch], prefix)
            for index, row in zip(batch, self._ranked(scored.scores).tolist(), strict=True):
                scores[index] = row
        return scores

    def _score(self, sequences: Sequence[Sequence[int]], prefix: PrefixCache | None) -> ScoredBatch:
        return score_label_batch(self.model, sequences, self.trie, self.pad_id, prefix, self.normalization)

    def _prepare(self, texts: Sequence[str]) -> tuple[list[list[int]], PrefixCache | None]:
        sequences = tokenize_prompts(self.tokenizer, self.builder, texts)
        prefix = PrefixCache.shared_by(self.model, sequences) if self.prefix_cache and sequences else None
        return sequences, prefix

    def _ranked(self, scores: torch.Tensor) -> torch.Tensor:
        if not self.length_normalized:
            return scores
        return scores / torch.tensor([path.steps for path in self.paths], dtype=scores.dtype)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Score each batch; rows whose label takes arguments wait until COMPLETION_POOL batches' worth have been
        scored and are completed together: a greedy step costs a fixed overhead plus its rows, so fewer, fuller
        completion passes are cheaper (rows that stopped leave the pass)."""
        sequences, prefix = self._prepare(texts)
        n_prefix = len(prefix) if prefix is not None else 0
        results: list[Prediction | None] = [None] * len(texts)
        waiting: list[_Waiting] = []
        with progress_bar(len(texts), "label scoring", self.progress) as bar:
            for batch in plan_batches([len(s) for s in sequences], self.batch_size):
                start = time.perf_counter()
                scored = self._score([sequences[i] for i in batch], prefix)
                ranked = self._ranked(scored.scores)
                best = ranked.argmax(dim=1).tolist()
                confidences = ranked.softmax(dim=1).max(dim=1).values.tolist()
                need = [row for row, b in enumerate(best) if self.takes_arguments[b]]
                if need:
                    picked = scored.select(need)
                    waiting.append(
                        _Waiting(
                            picked,
                            [batch[r] for r in need],
                            [best[r] for r in need],
                            [confidences[r] for r in need],
                            0.0,
                        )
                    )
                latency = time.perf_counter() - start
                if need:
                    waiting[-1].latency_s = latency
                for row, index in enumerate(batch):
                    if not self.takes_arguments[best[row]]:  # complete without generating: `name()`
                        results[index] = prediction_from_completion(
                            self.builder,
                            texts[index],
                            self.names[best[row]] + NO_ARGUMENTS,
                            confidence=confidences[row],
                            latency_s=latency,
                        )
                bar.update(len(batch) - len(need))
                if sum(len(w.indices) for w in waiting) >= COMPLETION_POOL * self.batch_size:
                    bar.update(self._complete_waiting(waiting, texts, results, n_prefix))
                    waiting = []
            bar.update(self._complete_waiting(waiting, texts, results, n_prefix))
        return [r for r in results if r is not None]

    def _complete_waiting(
        self, waiting: list[_Waiting], texts: Sequence[str], results: list[Prediction | None], n_prefix: int
    ) -> int:
        """Complete the arguments of every waiting row in one pass; a row's latency is its batch's scoring plus it."""
        if not waiting:
            return 0
        start = time.perf_counter()
        scored = (
            waiting[0].scored
            if len(waiting) == 1
            else ScoredBatch.concat([w.scored for w in waiting], n_prefix, self.pad_id)
        )
        sources = [texts[index] for w in waiting for index in w.indices]
        completions = iter(self._complete(scored, [b for w in waiting for b in w.best], sources))
        spent = time.perf_counter() - start
        for group in waiting:
            for index, confidence in zip(group.indices, group.confidences, strict=True):
                results[index] = prediction_from_completion(
                    self.builder,
                    texts[index],
                    next(completions),
                    confidence=confidence,
                    latency_s=group.latency_s + spent,
                )
        return sum(len(w.indices) for w in waiting)

    def _complete(self, scored: ScoredBatch, best: list[int], sources: Sequence[str]) -> list[str]:
        """Each row's answer: the chosen label's `name()`, or its path's text and a greedy continuation (arguments)."""
        from intentops.evaluation.constrained import CallGrammarProcessor

        completions = [self.names[b] + NO_ARGUMENTS for b in best]
        need = [row for row, b in enumerate(best) if self.takes_arguments[b]]
        if not need:
            return completions
        device = self.model.device
        rows = torch.tensor(need, device=device)
        paths = [self.paths[best[row]] for row in need]
        label_rows, label_mask = left_pad([path.tokens for path in paths], self.pad_id)
        input_ids = torch.cat([scored.input_ids[rows], torch.tensor(label_rows, device=device)], dim=1)
        attention = torch.cat([scored.attention_mask[rows], torch.tensor(label_mask, device=device)], dim=1)
        layers = scored.prompt_layers
        if len(need) < len(best):
            layers = [(keys[rows], values[rows]) for keys, values in layers]
        if self.grammar is not None:
            processor = CallGrammarProcessor(
                self.grammar,
                self.max_new_tokens,
                [self.grammar.state_after(path.text, sources[row]) for row, path in zip(need, paths, strict=True)],
            )
            tails: Sequence[Sequence[int]] | torch.Tensor = greedy_continue(
                self.model,
                input_ids,
                attention,
                self.max_new_tokens,
                self.pad_id,
                self.eos_ids,
                make_cache(self.model, layers),
                processor,
            )
        else:  # the first token opens the argument list, as scored (where the path left an opening set); then free
            tails = greedy_tails(
                self.model, input_ids, attention, self.max_new_tokens, self.eos_ids, layers, [p.openers for p in paths]
            )
        for row, path, tail in zip(
            need, paths, self.tokenizer.batch_decode(tails, skip_special_tokens=True), strict=True
        ):
            completions[row] = path.text + tail
        return completions
