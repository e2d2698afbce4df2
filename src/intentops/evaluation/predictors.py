"""Turn test utterances into predicted calls, three ways behind one interface.

- `GenerationPredictor`: batched greedy decoding with transformers `generate`. Prompts are grouped by length so a
  batch wastes little compute on padding, and the token prefix every prompt shares (the system prompt with the
  catalog, usually >90% of the prompt) is run through the model once and its key/value cache reused by every batch,
  as vLLM's automatic prefix caching does in serving. The answer is read back with `PromptBuilder.extract`.
- `LabelScoringPredictor`: ranks the intents by likelihood instead of generating. Every catalog intent's continuation
  (`weather_search(` or `#3(`) is scored as the assistant's answer in ONE forward pass per batch: each row holds its
  prompt followed by the labels' token trie, and a 4D attention mask lets every trie node see the prompt and its own
  ancestors only, so all labels are scored exactly as if each were appended alone, and shared label prefixes
  (`music_`) are computed once. The best label wins, a softmax over the label scores is its confidence, and only
  intents that take parameters get a short greedy `generate`, continuing from the prompt cache after the chosen
  label, to fill in the arguments.
- `VllmPredictor`: vLLM offline batch inference (greedy), used when vllm is importable.

`make_predictor` picks one from `cfg.evaluation.decoding`. Batching is planned by pure functions (`plan_batches`,
`common_prefix_length`, `assemble`) so the bench and the tests can compare strategies on the same inputs.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.catalog import UNCERTAIN_INTENT
from intentops.config import RunConfig
from intentops.prompting import PromptBuilder

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DECODINGS = ("generate", "label_scoring", "vllm", "auto")
MIN_SHARED_PREFIX = 16  # tokens; a shorter shared prefix is not worth a separate forward pass
_PROBE_USER_TEXT = "probe"


@dataclass
class Prediction:
    """One answer: the raw completion, the canonical call string (None = broken format) and what it means."""

    text: str
    raw: str
    call: str | None
    intent: str | None
    params: list[str] | None
    confidence: float | None = None
    latency_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prediction_from_completion(
    builder: PromptBuilder,
    text: str,
    completion: str,
    *,
    confidence: float | None = None,
    latency_s: float | None = None,
) -> Prediction:
    """Read the call out of a completion (via the prompt builder, which knows the output format)."""
    calls = builder.extract_calls(completion)
    if not calls:
        return Prediction(text, completion, None, None, None, confidence, latency_s)
    call = builder.extract(completion)
    return Prediction(text, completion, call, calls[0].name, list(calls[0].args), confidence, latency_s)


class Predictor(ABC):
    """Predicts the call for each utterance; `name` is recorded in the metrics."""

    name: str = "predictor"

    @abstractmethod
    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """One Prediction per text, in input order."""


# ---- batching (pure) -------------------------------------------------------------------------------------------


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
    first = sequences[0]
    length = 0
    while length < limit and all(s[length] == first[length] for s in sequences):
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


def chat_prompts(tokenizer: PreTrainedTokenizerBase, builder: PromptBuilder, texts: Sequence[str]) -> list[str]:
    """The full prompt text (chat template with the generation prompt) for each utterance."""
    return [
        tokenizer.apply_chat_template(builder.messages(text), add_generation_prompt=True, tokenize=False)
        for text in texts
    ]


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS plus the model's generation-config EOS ids."""
    ids: list[int] = []
    configured = model.generation_config.eos_token_id
    for candidate in [tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])]:
        if candidate is not None and candidate not in ids:
            ids.append(int(candidate))
    return ids


# ---- the shared prompt prefix ----------------------------------------------------------------------------------


def _cache(model: PreTrainedModel, layers: Sequence[tuple[torch.Tensor, torch.Tensor]] | None) -> DynamicCache:
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
        self.layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]

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
        return _cache(
            self.model, [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in self.layers]
        )


def _prefix_ids(prefix: PrefixCache | None) -> list[int]:
    return prefix.ids if prefix is not None else []


def greedy_continue(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    cache: DynamicCache | None = None,
) -> torch.Tensor:
    """New tokens of a greedy `generate` over already laid-out rows; `cache` holds a leading part of them."""
    import torch

    kwargs: dict[str, Any] = {"past_key_values": cache} if cache is not None else {}
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


def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequences: Sequence[Sequence[int]],
    max_new_tokens: int,
    prefix: PrefixCache | None = None,
) -> list[str]:
    """Greedy completions of one batch of tokenized prompts, reusing `prefix` when given (stops at any EOS)."""
    import torch

    ids, mask = assemble(sequences, _prefix_ids(prefix), tokenizer.pad_token_id)
    new_tokens = greedy_continue(
        model,
        torch.tensor(ids, device=model.device),
        torch.tensor(mask, device=model.device),
        max_new_tokens,
        tokenizer.pad_token_id,
        stop_token_ids(model, tokenizer),
        prefix.expand(len(sequences)) if prefix is not None else None,
    )
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="utt", disable=not enabled)


def _tokenize(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(prompts), add_special_tokens=False)["input_ids"]


# ---- batched generation ----------------------------------------------------------------------------------------


class GenerationPredictor(Predictor):
    """Batched greedy generation with transformers (`prefix_cache=False` runs every prompt in full)."""

    name = "generate"

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

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        sequences = _tokenize(self.tokenizer, chat_prompts(self.tokenizer, self.builder, texts))
        prefix = PrefixCache.shared_by(self.model, sequences) if self.prefix_cache and sequences else None
        results: list[Prediction | None] = [None] * len(texts)
        with _progress(len(texts), "generate", self.progress) as bar:
            for batch in plan_batches([len(s) for s in sequences], self.batch_size, self.sort_by_length):
                start = time.perf_counter()
                completions = greedy_generate(
                    self.model, self.tokenizer, [sequences[i] for i in batch], self.max_new_tokens, prefix
                )
                latency = time.perf_counter() - start
                for index, completion in zip(batch, completions, strict=True):
                    results[index] = prediction_from_completion(
                        self.builder, texts[index], completion, latency_s=latency
                    )
                bar.update(len(batch))
        return [r for r in results if r is not None]


# ---- label scoring (rank the intents by likelihood) -------------------------------------------------------------


def label_token_ids(
    tokenizer: PreTrainedTokenizerBase, builder: PromptBuilder, continuations: Sequence[str]
) -> list[list[int]]:
    """Token ids of each label continuation exactly as they follow the generation prompt.

    BPE may merge across the prompt/answer boundary, so each continuation is tokenized after a real rendered prompt
    and the prompt's own tokens are stripped; only if the prompt tokens are not a prefix (a merge did happen) is the
    continuation tokenized on its own.
    """
    probe = tokenizer.apply_chat_template(
        builder.messages(_PROBE_USER_TEXT), add_generation_prompt=True, tokenize=False
    )
    base = tokenizer(probe, add_special_tokens=False)["input_ids"]
    result = []
    for continuation in continuations:
        joint = tokenizer(probe + continuation, add_special_tokens=False)["input_ids"]
        if joint[: len(base)] == base and len(joint) > len(base):
            result.append(joint[len(base) :])
        else:
            log.debug("label %r merges with the prompt when tokenized; scoring its standalone tokens", continuation)
            result.append(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        if not result[-1]:
            raise ValueError(f"label continuation {continuation!r} tokenizes to nothing")
    return result


@dataclass(frozen=True)
class LabelTrie:
    """The label continuations as a token trie: shared prefixes (`music_`) are scored once, not once per label.

    Node n stands for the proper prefix `prefixes[n]` of one or more labels; fed its last token, its logits give the
    next token of every label that continues it. `first` holds each label's first token (scored from the prompt's
    last position) and `steps` every later token as (node, target token, label).
    """

    prefixes: tuple[tuple[int, ...], ...]
    first: tuple[int, ...]
    steps: tuple[tuple[int, int, int], ...]

    @classmethod
    def build(cls, label_ids: Sequence[Sequence[int]]) -> LabelTrie:
        index: dict[tuple[int, ...], int] = {}
        steps = []
        for label, ids in enumerate(label_ids):
            if not ids:
                raise ValueError(f"label {label} has no tokens")
            for position in range(1, len(ids)):
                node = index.setdefault(tuple(ids[:position]), len(index))
                steps.append((node, ids[position], label))
        return cls(tuple(index), tuple(ids[0] for ids in label_ids), tuple(steps))

    @property
    def n_labels(self) -> int:
        return len(self.first)

    def tokens(self) -> list[int]:
        return [prefix[-1] for prefix in self.prefixes]

    def depths(self) -> list[int]:
        return [len(prefix) - 1 for prefix in self.prefixes]

    def ancestry(self) -> list[list[bool]]:
        """ancestry[n][m]: node m is node n or one of its ancestors, i.e. what node n may attend to."""
        return [[n_prefix[: len(m_prefix)] == m_prefix for m_prefix in self.prefixes] for n_prefix in self.prefixes]


@dataclass
class ScoredBatch:
    """Label scores of one batch plus what argument completion continues from: the rows and their prompt cache."""

    scores: torch.Tensor  # (rows, labels) float32 log-likelihoods, on CPU
    input_ids: torch.Tensor  # (rows, T) `[prefix][pad][suffix]`
    attention_mask: torch.Tensor  # (rows, T)
    prompt_layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values) of those T positions


def score_label_batch(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    trie: LabelTrie,
    pad_id: int,
    prefix: PrefixCache | None = None,
) -> ScoredBatch:
    """Log-likelihood of every label continuation after every prompt, in ONE forward pass per batch.

    Each row holds its prompt (after the cached shared prefix) followed by the label trie's nodes. A 4D mask keeps
    the prompt causal and lets each trie node attend to the prompt and to its own ancestors only, so every label is
    scored exactly as if it were appended to the prompt alone; logits are computed only where they are needed (the
    last prompt token and the trie nodes).
    """
    import torch

    device = model.device
    n_prefix = len(prefix) if prefix is not None else 0
    ids, mask = assemble(sequences, _prefix_ids(prefix), pad_id)
    input_ids = torch.tensor(ids, device=device)
    attention = torch.tensor(mask, device=device)
    rows, width = input_ids.shape
    n_suffix, n_nodes = width - n_prefix, len(trie.prefixes)
    real = attention.bool()

    # queries: suffix tokens then trie nodes; keys: prefix + suffix + trie nodes
    causal = torch.ones(n_suffix, width, dtype=torch.bool, device=device).tril(diagonal=n_prefix)
    suffix_rows = causal[None] & real[:, None, :]
    node_rows = real[:, None, :].expand(rows, n_nodes, width)
    ancestry = torch.tensor(trie.ancestry(), dtype=torch.bool, device=device).reshape(n_nodes, n_nodes)
    allowed = torch.cat(
        [
            torch.cat([suffix_rows, torch.zeros(rows, n_suffix, n_nodes, dtype=torch.bool, device=device)], dim=2),
            torch.cat([node_rows, ancestry.expand(rows, -1, -1)], dim=2),
        ],
        dim=1,
    )
    additive = torch.zeros(allowed.shape, dtype=model.dtype, device=device)
    additive.masked_fill_(~allowed, torch.finfo(model.dtype).min)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    node_positions = attention.sum(-1, keepdim=True) + torch.tensor(trie.depths(), device=device)[None, :]
    tokens = torch.tensor(trie.tokens(), dtype=torch.long, device=device).reshape(1, n_nodes)
    keep = torch.arange(n_suffix - 1, n_suffix + n_nodes, device=device)  # last prompt token, then the nodes
    cache = prefix.expand(rows) if prefix is not None else _cache(model, None)
    with torch.inference_mode():
        out = model(
            input_ids=torch.cat([input_ids[:, n_prefix:], tokens.expand(rows, -1)], dim=1),
            attention_mask=additive[:, None],
            position_ids=torch.cat([positions[:, n_prefix:], node_positions], dim=1),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=keep,
        )
        logits = out.logits.float()  # (rows, 1 + nodes, vocab)
        normaliser = torch.logsumexp(logits, dim=-1)
        first = torch.tensor(trie.first, device=device)
        scores = logits[:, 0, first] - normaliser[:, :1]
        if trie.steps:
            node, target, label = (torch.tensor(column, device=device) for column in zip(*trie.steps, strict=True))
            step_logp = logits[:, 1 + node, target] - normaliser[:, 1 + node]
            scores = scores.index_add(1, label, step_logp)
        prompt_layers = [(layer.keys[:, :, :width], layer.values[:, :, :width]) for layer in out.past_key_values.layers]
    return ScoredBatch(scores.cpu(), input_ids, attention, prompt_layers)


class LabelScoringPredictor(Predictor):
    """Rank every intent by its likelihood after the prompt, then complete the chosen call's arguments briefly.

    Labels are ranked by the log-likelihood of their continuation; with `length_normalized` by the mean per-token
    log-likelihood, i.e. the lowest perplexity, as the paper phrases it. The sum is the default because the mean
    rewards labels whose extra tokens are near-certain (long names), while the sum is the probability of the answer.
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
        prefix_cache: bool = True,
        progress: bool = True,
    ) -> None:
        if model.config._attn_implementation.startswith("flash"):
            raise ValueError("label scoring needs sdpa or eager attention (it passes a custom 4D attention mask)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.builder = builder
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.length_normalized = length_normalized
        self.prefix_cache = prefix_cache
        self.progress = progress
        continuations = builder.label_continuations()
        self.labels = list(continuations)
        self.continuations = [continuations[name] for name in self.labels]
        self.label_ids = label_token_ids(tokenizer, builder, self.continuations)
        self.trie = LabelTrie.build(self.label_ids)
        self.takes_arguments = [
            name != UNCERTAIN_INTENT and bool(builder.catalog.get(name).parameters) for name in self.labels
        ]
        self.eos_ids = stop_token_ids(model, tokenizer)

    def score(self, texts: Sequence[str]) -> list[list[float]]:
        """The ranking score of every label for every text (rows follow `texts`, columns `self.labels`)."""
        sequences, prefix = self._prepare(texts)
        scores: list[list[float]] = [[] for _ in texts]
        for batch in plan_batches([len(s) for s in sequences], self.batch_size):
            scored = score_label_batch(self.model, [sequences[i] for i in batch], self.trie, self.pad_id, prefix)
            for index, row in zip(batch, self._ranked(scored.scores).tolist(), strict=True):
                scores[index] = row
        return scores

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def _prepare(self, texts: Sequence[str]) -> tuple[list[list[int]], PrefixCache | None]:
        sequences = _tokenize(self.tokenizer, chat_prompts(self.tokenizer, self.builder, texts))
        prefix = PrefixCache.shared_by(self.model, sequences) if self.prefix_cache and sequences else None
        return sequences, prefix

    def _ranked(self, scores: torch.Tensor) -> torch.Tensor:
        if not self.length_normalized:
            return scores
        import torch

        return scores / torch.tensor([len(ids) for ids in self.label_ids], dtype=scores.dtype)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        sequences, prefix = self._prepare(texts)
        results: list[Prediction | None] = [None] * len(texts)
        with _progress(len(texts), "label scoring", self.progress) as bar:
            for batch in plan_batches([len(s) for s in sequences], self.batch_size):
                start = time.perf_counter()
                scored = score_label_batch(self.model, [sequences[i] for i in batch], self.trie, self.pad_id, prefix)
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
        """Each row's answer: the chosen label, then (intents with parameters) a greedy continuation after it."""
        import torch

        completions = [self.continuations[b] + ")" for b in best]
        need = [row for row, b in enumerate(best) if self.takes_arguments[b]]
        if not need:
            return completions
        device = self.model.device
        rows = torch.tensor(need, device=device)
        label_rows, label_mask = left_pad([self.label_ids[best[row]] for row in need], self.pad_id)
        input_ids = torch.cat([scored.input_ids[rows], torch.tensor(label_rows, device=device)], dim=1)
        attention = torch.cat([scored.attention_mask[rows], torch.tensor(label_mask, device=device)], dim=1)
        cache = _cache(self.model, [(k[rows], v[rows]) for k, v in scored.prompt_layers])
        tails = greedy_continue(self.model, input_ids, attention, self.max_new_tokens, self.pad_id, self.eos_ids, cache)
        for row, tail in zip(need, self.tokenizer.batch_decode(tails, skip_special_tokens=True), strict=True):
            completions[row] = self.continuations[best[row]] + tail
        return completions


# ---- vLLM ---------------------------------------------------------------------------------------------------------


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VllmPredictor(Predictor):
    """vLLM offline batch inference, greedy (temperature 0); vLLM schedules the batching itself."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        builder: PromptBuilder,
        *,
        max_new_tokens: int = 64,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        progress: bool = True,
    ) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM, SamplingParams

        self.builder = builder
        self.progress = progress
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.llm = LLM(
            model=str(model_dir),
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=0,
        )
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        prompts = chat_prompts(self.tokenizer, self.builder, texts)
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, self.sampling, use_tqdm=self.progress)
        # Offline batch mode: every request's answer is available when the whole batch returns.
        latency = time.perf_counter() - start
        return [
            prediction_from_completion(self.builder, text, output.outputs[0].text, latency_s=latency)
            for text, output in zip(texts, outputs, strict=True)
        ]


def _to_accelerator(model: PreTrainedModel) -> PreTrainedModel:
    """The model on the GPU when there is one (4-bit models are already placed by bitsandbytes)."""
    import torch

    if torch.cuda.is_available() and model.device.type != "cuda":
        return model.to("cuda")
    return model


# ---- factory ------------------------------------------------------------------------------------------------------


def make_predictor(
    kind: str,
    model_dir: str | Path,
    cfg: RunConfig,
    builder: PromptBuilder | None = None,
    *,
    progress: bool = True,
) -> Predictor:
    """The predictor for `kind` (generate, label_scoring, vllm, auto), loading the model from `model_dir`.

    `vllm` and `auto` use vLLM only when it is importable; otherwise they fall back to batched generation.
    """
    if kind not in DECODINGS:
        raise ValueError(f"evaluation.decoding={kind!r}: expected one of {', '.join(DECODINGS)}")
    builder = builder or PromptBuilder.from_model_dir(model_dir)
    eval_cfg = cfg.evaluation
    if kind in ("vllm", "auto"):
        if vllm_available():
            return VllmPredictor(
                model_dir,
                builder,
                max_new_tokens=eval_cfg.max_new_tokens,
                dtype=cfg.model.dtype,
                max_model_len=cfg.serving.max_model_len,
                gpu_memory_utilization=cfg.serving.gpu_memory_utilization,
                progress=progress,
            )
        log.info("evaluation.decoding=%s: vllm is not importable here, using batched transformers generation", kind)
        kind = "generate"

    from intentops.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_dir, cfg.model, for_training=False)
    model = _to_accelerator(model)
    if kind == "label_scoring":
        return LabelScoringPredictor(
            model,
            tokenizer,
            builder,
            batch_size=eval_cfg.batch_size,
            max_new_tokens=eval_cfg.max_new_tokens,
            progress=progress,
        )
    return GenerationPredictor(
        model,
        tokenizer,
        builder,
        batch_size=eval_cfg.batch_size,
        max_new_tokens=eval_cfg.max_new_tokens,
        progress=progress,
    )
