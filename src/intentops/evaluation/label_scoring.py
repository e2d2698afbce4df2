"""Label scoring: rank every catalog label by how likely the model is to answer with it, then fill in arguments.

A label is scored on what a trained model writes for it: the bare name's tokens, then one token that opens the
argument list. Byte-level BPE merges the bracket with what follows (`()`, `(Grandma`, `();`), so that last token is not
one fixed id: it is the probability mass of every token that begins with `(` (intents with parameters) or `()`
(parameterless intents and `uncertain`). All labels are scored in ONE forward pass per batch: each row holds its
prompt followed by the labels' token trie, and a 4D attention mask lets every trie node see the prompt and its own
ancestors only, so each label is scored exactly as if it were appended alone while shared prefixes (`music_`) and
the prompt's cache are computed once.

Two normalisations: `vocabulary` takes each token's probability against the whole vocabulary (the model's own
probability of the label); `catalog` against only the tokens some label can take at that point, i.e. the
distribution a decoder constrained to the catalog chooses from. `catalog` projects the hidden states onto just those
rows of the output head, and drops trie nodes where only one continuation is possible, which is most of the cost.

The best label wins, a softmax over the label scores is its confidence, and only intents that take parameters get a
short greedy `generate` (optionally grammar-constrained), continuing from the prompt cache after the chosen name.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from transformers import LogitsProcessor

from intentops.catalog import UNCERTAIN_INTENT
from intentops.evaluation.decoding import (
    PrefixCache,
    assemble,
    greedy_continue,
    left_pad,
    make_cache,
    plan_batches,
    prefix_ids,
    progress_bar,
    stop_token_ids,
    tokenize_prompts,
)
from intentops.evaluation.predictors import Prediction, Predictor, prediction_from_completion
from intentops.prompting import PromptBuilder

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Normalization = Literal["vocabulary", "catalog"]
_PROBE_USER_TEXT = "probe"
OPEN_ARGUMENTS, NO_ARGUMENTS = "(", "()"


def label_name_ids(tokenizer: PreTrainedTokenizerBase, builder: PromptBuilder, names: Sequence[str]) -> list[list[int]]:
    """Token ids of each label name exactly as they follow the generation prompt.

    BPE may merge across the prompt/answer boundary, so each name is tokenized after a real rendered prompt and the
    prompt's own tokens are stripped; only if the prompt tokens are not a prefix (a merge did happen) is the name
    tokenized on its own.
    """
    probe = tokenizer.apply_chat_template(
        builder.messages(_PROBE_USER_TEXT), add_generation_prompt=True, tokenize=False
    )
    base = tokenizer(probe, add_special_tokens=False)["input_ids"]
    result = []
    for name in names:
        joint = tokenizer(probe + name, add_special_tokens=False)["input_ids"]
        if joint[: len(base)] == base and len(joint) > len(base):
            result.append(joint[len(base) :])
        else:
            log.debug("label %r merges with the prompt when tokenized; scoring its standalone tokens", name)
            result.append(tokenizer(name, add_special_tokens=False)["input_ids"])
        if not result[-1]:
            raise ValueError(f"label {name!r} tokenizes to nothing")
    return result


def tokens_starting_with(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Every ordinary token whose text begins with `text` (special tokens excluded; added non-special tokens, such
    as the tiny tokenizer's whole-word call tokens, are ordinary text the model can emit)."""
    special = {index for index, token in tokenizer.added_tokens_decoder.items() if token.special}
    skip = set(tokenizer.all_special_ids) | special
    ids = sorted(i for i in tokenizer.get_vocab().values() if i not in skip)
    texts = tokenizer.batch_decode([[i] for i in ids])
    found = [i for i, piece in zip(ids, texts, strict=True) if piece.startswith(text)]
    if not found:
        raise ValueError(f"no token of the vocabulary begins with {text!r}")
    return found


@dataclass(frozen=True)
class LabelTrie:
    """The labels as a token trie over the answer, and the edges a label's score adds up.

    `nodes` are the token prefixes fed to the model after the prompt (each stands for its last token). A scoring
    position is 0 for the prompt's last token, p > 0 for node p - 1. `edges[e] = (position, tokens)`: the log of the
    probability mass of `tokens` at that position; `paths[label]` lists the label's edges, name tokens first, then its
    argument-opening set. Shared prefixes share edges.
    """

    nodes: tuple[tuple[int, ...], ...]
    edges: tuple[tuple[int, tuple[int, ...]], ...]
    paths: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, names: Sequence[Sequence[int]], openers: Sequence[Sequence[int]]) -> LabelTrie:
        """The trie of label names `names[l]`, each followed by one token of the set `openers[l]`."""
        nodes: dict[tuple[int, ...], int] = {}
        for ids in names:
            if not ids:
                raise ValueError("a label name has no tokens")
            for end in range(1, len(ids) + 1):
                nodes.setdefault(tuple(ids[:end]), len(nodes))
        edges: dict[tuple[int, tuple[int, ...]], int] = {}
        paths = []
        for ids, opener in zip(names, openers, strict=True):
            path = []
            for end in range(len(ids) + 1):
                position = 1 + nodes[tuple(ids[:end])] if end else 0
                tokens = (ids[end],) if end < len(ids) else tuple(sorted(set(opener)))
                path.append(edges.setdefault((position, tokens), len(edges)))
            paths.append(tuple(path))
        return cls(tuple(nodes), tuple(edges), tuple(paths))

    @property
    def n_labels(self) -> int:
        return len(self.paths)

    def lengths(self) -> list[int]:
        """Tokens each label's score covers (its name plus the opening token)."""
        return [len(path) for path in self.paths]

    def allowed(self, position: int) -> list[int]:
        """Every token some label takes at `position`."""
        return sorted({t for p, tokens in self.edges if p == position for t in tokens})

    def for_catalog(self) -> LabelTrie:
        """The same scores under catalog normalisation with less work: a position where only one edge leaves has
        probability 1 there, so its edge is dropped, and nodes that neither score nor lead to a scoring node go too."""
        edges_at: dict[int, int] = {}
        for position, _ in self.edges:
            edges_at[position] = edges_at.get(position, 0) + 1
        kept_edges = [e for e, (position, _) in enumerate(self.edges) if edges_at[position] > 1]
        scoring = {self.nodes[position - 1] for e in kept_edges if (position := self.edges[e][0]) > 0}
        nodes = [node for node in self.nodes if any(s[: len(node)] == node for s in scoring)]
        new_position = {0: 0, **{1 + self.nodes.index(node): 1 + i for i, node in enumerate(nodes)}}
        renumber = {e: i for i, e in enumerate(kept_edges)}
        edges = tuple((new_position[self.edges[e][0]], self.edges[e][1]) for e in kept_edges)
        paths = tuple(tuple(renumber[e] for e in path if e in renumber) for path in self.paths)
        return LabelTrie(tuple(nodes), edges, paths)

    def tokens(self) -> list[int]:
        """The token each node feeds to the model."""
        return [node[-1] for node in self.nodes]

    def depths(self) -> list[int]:
        return [len(node) - 1 for node in self.nodes]

    def ancestry(self) -> list[list[bool]]:
        """ancestry[n][m]: node m is node n or one of its ancestors, i.e. what node n may attend to."""
        return [[n_prefix[: len(m_prefix)] == m_prefix for m_prefix in self.nodes] for n_prefix in self.nodes]


@dataclass
class ScoredBatch:
    """Label scores of one batch plus what argument completion continues from: the rows and their prompt cache."""

    scores: torch.Tensor  # (rows, labels) float32 log-probabilities, on CPU
    input_ids: torch.Tensor  # (rows, T) `[prefix][pad][suffix]`
    attention_mask: torch.Tensor  # (rows, T)
    prompt_layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values) of those T positions


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
    ids, mask = assemble(sequences, prefix_ids(prefix), pad_id)
    input_ids = torch.tensor(ids, device=device)
    attention = torch.tensor(mask, device=device)
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
            cache=cache,
            use_cache=True,
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
        prompt_layers = [(layer.keys[:, :, :width], layer.values[:, :, :width]) for layer in out.cache.layers]
    return ScoredBatch(scores.cpu(), input_ids, attention, prompt_layers)


class FirstTokenProcessor(LogitsProcessor):
    """Restricts each row's first generated token to its own set (the opening tokens its label was scored on)."""

    def __init__(self, allowed: Sequence[Sequence[int]]) -> None:
        self.allowed = allowed
        self.first_call = True

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.first_call:
            return scores
        self.first_call = False
        keep = torch.zeros_like(scores, dtype=torch.bool)
        for row, tokens in enumerate(self.allowed):
            keep[row, list(tokens)] = True
        return scores.masked_fill(~keep, float("-inf"))


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
        self.name_ids = label_name_ids(tokenizer, builder, self.names)
        opening = {text: tokens_starting_with(tokenizer, text) for text in (OPEN_ARGUMENTS, NO_ARGUMENTS)}
        self.openers = [opening[OPEN_ARGUMENTS if args else NO_ARGUMENTS] for args in self.takes_arguments]
        self.full_trie = LabelTrie.build(self.name_ids, self.openers)
        self.trie = self.full_trie.for_catalog() if normalization == "catalog" else self.full_trie
        self.eos_ids = stop_token_ids(model, tokenizer)
        self.grammar = None
        if constrained:
            from intentops.evaluation.generation import token_grammar

            self.grammar = token_grammar(model, tokenizer, builder)

    @property
    def constrained(self) -> bool:
        return self.grammar is not None

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
        return scores / torch.tensor(self.full_trie.lengths(), dtype=scores.dtype)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        sequences, prefix = self._prepare(texts)
        results: list[Prediction | None] = [None] * len(texts)
        with progress_bar(len(texts), "label scoring", self.progress) as bar:
            for batch in plan_batches([len(s) for s in sequences], self.batch_size):
                start = time.perf_counter()
                scored = self._score([sequences[i] for i in batch], prefix)
                ranked = self._ranked(scored.scores)
                best = ranked.argmax(dim=1).tolist()
                confidences = ranked.softmax(dim=1).max(dim=1).values.tolist()
                completions = self._complete(scored, best)
                latency = time.perf_counter() - start
                for row, index in enumerate(batch):
                    results[index] = prediction_from_completion(
                        self.builder, texts[index], completions[row], confidence=confidences[row], latency_s=latency
                    )
                bar.update(len(batch))
        return [r for r in results if r is not None]

    def _complete(self, scored: ScoredBatch, best: list[int]) -> list[str]:
        """Each row's answer: the chosen label's `name()`, or its name and a greedy continuation (the arguments)."""
        from intentops.evaluation.constrained import CallGrammarProcessor

        completions = [self.names[b] + NO_ARGUMENTS for b in best]
        need = [row for row, b in enumerate(best) if self.takes_arguments[b]]
        if not need:
            return completions
        device = self.model.device
        rows = torch.tensor(need, device=device)
        label_rows, label_mask = left_pad([self.name_ids[best[row]] for row in need], self.pad_id)
        input_ids = torch.cat([scored.input_ids[rows], torch.tensor(label_rows, device=device)], dim=1)
        attention = torch.cat([scored.attention_mask[rows], torch.tensor(label_mask, device=device)], dim=1)
        cache = make_cache(self.model, [(k[rows], v[rows]) for k, v in scored.prompt_layers])
        if self.grammar is not None:
            starts = [(self.grammar.grammar.after_label(self.names[best[row]]), b"") for row in need]
            processor: LogitsProcessor = CallGrammarProcessor(self.grammar, self.max_new_tokens, starts)
        else:  # the first token opens the argument list, as scored; the rest is free
            processor = FirstTokenProcessor([self.openers[best[row]] for row in need])
        tails = greedy_continue(
            self.model, input_ids, attention, self.max_new_tokens, self.pad_id, self.eos_ids, cache, processor
        )
        for row, tail in zip(need, self.tokenizer.batch_decode(tails, skip_special_tokens=True), strict=True):
            completions[row] = self.names[best[row]] + tail
        return completions
