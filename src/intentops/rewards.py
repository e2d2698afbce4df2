"""Rule-based rewards for GRPO: format, intent and parameter accuracy, multi-intent aware.

The scoring functions are pure (strings in, floats out) so they are unit-tested on their own; `make_reward_funcs`
wraps them for TRL's `GRPOTrainer`, which calls every reward function with the batch's prompts, completions and
dataset columns, and weights the columns with `GRPOConfig.reward_weights`.

Definitions (calls are compared after `intentops.grammar` parsing, so `a(x)` and `a（x）` are the same answer):

- format, strict: the completion is exactly the template and nothing else. Answer mode: a parseable call list.
  Thought mode (`prompt.thought_template`): `Thought: …` / `Action: call list` / `Finish!` lines (react) or
  `<think>…</think><answer>call list</answer>` (think_answer); the reasoning may be empty and is never scored, so GRPO
  rewards only the format and the answer. Loose: a parseable call list appears somewhere (answer mode), or an
  `Action:` line / `<answer>` tag with one appears anywhere (thought mode). The prompt builder owns the templates.
- intent: 1 when the predicted call names equal the reference's as a multiset (order-free: `a();b()` equals
  `b();a()`), or as a sequence with `ordered=True`. With `partial=True` a multi-intent answer that gets some calls
  right earns the multiset Jaccard overlap |P∩R| / |P∪R| instead of 0; single-intent answers are unaffected (0 or 1).
- params: reference and predicted calls are paired by name in order of appearance; the reward is the share of pairs
  whose arguments are equal (after stripping and Unicode NFKC folding, so full-width digits match), over the larger
  of the two call counts, so extra or missing calls cost parameter credit too. A call without arguments matches a
  call without arguments.
- total: the weighted sum; a perfect rollout scores the sum of the weights.

Intent and params are scored on the calls `PromptBuilder.extract_calls` reads from the completion, the same parser
evaluation and serving use: in thought mode the first `Action:` line or `<answer>` tag wherever it is; in answer mode
the whole completion, so chatter around a call may earn loose format credit but no content credit, because serving
could not read it.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from intentops.grammar import Call, GrammarError, parse_calls

if TYPE_CHECKING:
    from intentops.config import GrpoConfig
    from intentops.prompting import PromptBuilder

log = logging.getLogger(__name__)

COMPONENTS = ("format", "intent", "params")
# Key of the rollout log's parquet metadata holding the weights the rollouts were scored with (JSON list, COMPONENTS
# order), so hard-sample mining knows what total a perfect rollout has.
REWARD_WEIGHTS_METADATA = "intentops.reward_weights"


@dataclass(frozen=True)
class RewardWeights:
    format: float = 1.0
    intent: float = 1.0
    params: float = 1.0

    @classmethod
    def from_config(cls, grpo_cfg: GrpoConfig) -> RewardWeights:
        weights = cls(grpo_cfg.reward_format_weight, grpo_cfg.reward_intent_weight, grpo_cfg.reward_params_weight)
        if weights.total <= 0:
            raise ValueError(
                "grpo.reward_format_weight, reward_intent_weight and reward_params_weight are all 0: "
                "GRPO would have no learning signal"
            )
        return weights

    @property
    def total(self) -> float:
        return self.format + self.intent + self.params

    def as_list(self) -> list[float]:
        """In COMPONENTS order, as `GRPOConfig.reward_weights` expects."""
        return [self.format, self.intent, self.params]


@dataclass(frozen=True)
class RewardBreakdown:
    format: float
    intent: float
    params: float
    total: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _calls(answer: str | Sequence[Call] | None) -> list[Call] | None:
    if answer is None:
        return None
    if isinstance(answer, str):
        try:
            return parse_calls(answer)
        except GrammarError:
            return None
    return list(answer)


def _norm_arg(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip()


def format_reward(completion: str, builder: PromptBuilder, strict: bool = True) -> float:
    """1.0 when the completion follows the output template (strict or loose, see module docstring), else 0.0."""
    return 1.0 if builder.format_ok(completion, strict=strict) else 0.0


def intent_reward(
    predicted: str | Sequence[Call] | None,
    reference: str | Sequence[Call],
    *,
    ordered: bool = False,
    partial: bool = True,
) -> float:
    """Whether the predicted call names match the reference's (see module docstring); None/unparseable scores 0."""
    pred = _calls(predicted)
    ref = _calls(reference)
    if ref is None:
        raise ValueError(f"reference answer {reference!r} does not parse")
    if not pred:
        return 0.0
    pred_names = [call.name for call in pred]
    ref_names = [call.name for call in ref]
    if ordered:
        if pred_names == ref_names:
            return 1.0
    elif Counter(pred_names) == Counter(ref_names):
        return 1.0
    if not partial:
        return 0.0
    pred_count, ref_count = Counter(pred_names), Counter(ref_names)
    overlap = sum((pred_count & ref_count).values())
    return overlap / sum((pred_count | ref_count).values())


def params_reward(predicted: str | Sequence[Call] | None, reference: str | Sequence[Call]) -> float:
    """Share of calls, paired by name in order, whose arguments equal the reference's (see module docstring)."""
    pred = _calls(predicted)
    ref = _calls(reference)
    if ref is None:
        raise ValueError(f"reference answer {reference!r} does not parse")
    if not pred:
        return 0.0
    remaining: dict[str, list[Call]] = {}
    for call in pred:
        remaining.setdefault(call.name, []).append(call)
    equal = 0
    for call in ref:
        candidates = remaining.get(call.name)
        if not candidates:
            continue
        match = candidates.pop(0)
        if [_norm_arg(a) for a in match.args] == [_norm_arg(a) for a in call.args]:
            equal += 1
    return equal / max(len(pred), len(ref))


def combined(components: dict[str, float], weights: RewardWeights) -> float:
    """Weighted sum of the format/intent/params components."""
    return sum(getattr(weights, name) * components[name] for name in COMPONENTS)


def score_completion(
    completion: str,
    reference: str,
    builder: PromptBuilder,
    weights: RewardWeights,
    *,
    strict: bool = True,
    partial: bool = True,
) -> RewardBreakdown:
    """Every reward component of one completion against its reference call string."""
    calls = builder.extract_calls(completion)
    components = {
        "format": format_reward(completion, builder, strict=strict),
        "intent": intent_reward(calls, reference, partial=partial),
        "params": params_reward(calls, reference),
    }
    return RewardBreakdown(**components, total=combined(components, weights))


def completion_text(completion: Any) -> str:
    """TRL passes conversational completions as `[{"role": "assistant", "content": ...}]`, standard ones as str."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # content blocks
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


RolloutSink = Callable[[list[dict[str, Any]]], None]


class _BatchScorer:
    """Scores a batch once and serves each TRL reward function its column.

    TRL calls the reward functions one after another with the same `completions` list object; the first call scores
    every component (and hands the rows to the rollout sink), the others read the cached result.
    """

    def __init__(
        self,
        builder: PromptBuilder,
        weights: RewardWeights,
        strict: bool,
        partial: bool,
        sink: RolloutSink | None,
    ) -> None:
        self.builder = builder
        self.weights = weights
        self.strict = strict
        self.partial = partial
        self.sink = sink
        self._batch: Any = None
        self._scores: list[RewardBreakdown] = []

    def scores(self, completions: list[Any], kwargs: dict[str, Any]) -> list[RewardBreakdown]:
        if completions is self._batch:
            return self._scores
        outputs = kwargs.get("output")
        if outputs is None:
            raise ValueError("reward functions need the dataset's 'output' column (the reference call string)")
        texts = [completion_text(c) for c in completions]
        scores = [
            score_completion(text, ref, self.builder, self.weights, strict=self.strict, partial=self.partial)
            for text, ref in zip(texts, outputs, strict=True)
        ]
        self._batch, self._scores = completions, scores
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and texts:
            # Both validity rates are logged whatever the reward uses, so strict vs loose can be compared per run.
            log_metric("format_valid_strict", sum(self.builder.format_ok(t, strict=True) for t in texts) / len(texts))
            log_metric("format_valid_loose", sum(self.builder.format_ok(t, strict=False) for t in texts) / len(texts))
            log_metric("perfect_rate", sum(s.total >= self.weights.total - 1e-9 for s in scores) / len(scores))
        if self.sink is not None:
            ids = kwargs.get("id") or [None] * len(texts)
            state = kwargs.get("trainer_state")
            step = int(state.global_step) if state is not None else 0
            self.sink(
                [
                    {"sample_id": str(sample_id), "step": step, "completion": text, **score.as_dict()}
                    for sample_id, text, score in zip(ids, texts, scores, strict=True)
                ]
            )
        return scores


def make_reward_funcs(
    builder: PromptBuilder, grpo_cfg: GrpoConfig, rollout_logger: RolloutSink | None = None
) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """TRL reward functions (`format`, `intent`, `params`) and their weights for `GRPOConfig.reward_weights`.

    Each function has TRL's signature `(prompts, completions, completion_ids=None, **kwargs)`; kwargs carry the
    dataset columns (`output` is required, `id` names the sample in the rollout log) and `trainer_state`.
    `rollout_logger`, when given, receives one row per completion: sample_id, step, completion and the components.
    """
    weights = RewardWeights.from_config(grpo_cfg)
    scorer = _BatchScorer(builder, weights, grpo_cfg.strict_format, grpo_cfg.reward_partial_credit, rollout_logger)

    def column(name: str) -> Callable[..., list[float]]:
        def reward(
            prompts: list[Any], completions: list[Any], completion_ids: list[Any] | None = None, **kwargs: Any
        ) -> list[float]:
            return [getattr(score, name) for score in scorer.scores(completions, kwargs)]

        reward.__name__ = name
        reward.__qualname__ = f"reward_{name}"
        return reward

    return [column(name) for name in COMPONENTS], weights.as_list()
