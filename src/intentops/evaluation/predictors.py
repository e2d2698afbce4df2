"""Turn test utterances into predicted calls, several ways behind one interface, chosen by `make_predictor`.

- `generation.GenerationPredictor`: batched greedy transformers `generate`, free or constrained to the catalog call
  grammar that the vLLM server enforces (`constrained.py`);
- `label_scoring.LabelScoringPredictor`: every catalog label scored in one pass, then short argument completion;
- `vllm_predictor.VllmPredictor`: vLLM offline batch inference, used when vllm is importable.

This module holds what they share: the `Prediction` record, the `Predictor` interface, reading a completion, and the
prompt text.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.config import RunConfig
from intentops.prompting import PromptBuilder

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DECODINGS = ("generate", "label_scoring", "vllm", "auto")


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
    constrained: bool = False  # answers restricted to the catalog call grammar
    copy_arguments: bool = False  # and every argument value to a span of the utterance

    @abstractmethod
    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """One Prediction per text, in input order."""

    def unconstrained(self) -> Predictor:
        """The same predictor (same loaded model) without the catalog grammar; itself when it has none."""
        return self


def chat_prompts(tokenizer: PreTrainedTokenizerBase, builder: PromptBuilder, texts: Sequence[str]) -> list[str]:
    """The full prompt text (chat template with the generation prompt) for each utterance."""
    return [
        tokenizer.apply_chat_template(builder.messages(text), add_generation_prompt=True, tokenize=False)
        for text in texts
    ]


def _to_accelerator(model: PreTrainedModel) -> PreTrainedModel:
    """The model on the GPU when there is one (4-bit models are already placed by bitsandbytes)."""
    import torch

    if torch.cuda.is_available() and model.device.type != "cuda":
        return model.to("cuda")
    return model


def make_predictor(
    kind: str,
    model_dir: str | Path,
    cfg: RunConfig,
    builder: PromptBuilder | None = None,
    *,
    constrained: bool | None = None,
    progress: bool = True,
) -> Predictor:
    """The predictor for `kind` (generate, label_scoring, vllm, auto), loading the model from `model_dir`.

    `vllm` and `auto` use vLLM only when it is importable; otherwise they fall back to batched generation.
    `constrained` (default `cfg.evaluation.constrained`) restricts answers to the catalog call grammar, and then
    `cfg.evaluation.copy_arguments` argument values to spans of the utterance.
    """
    from intentops.evaluation import vllm_predictor

    if kind not in DECODINGS:
        raise ValueError(f"evaluation.decoding={kind!r}: expected one of {', '.join(DECODINGS)}")
    builder = builder or PromptBuilder.from_model_dir(model_dir)
    eval_cfg = cfg.evaluation
    constrained = eval_cfg.constrained if constrained is None else constrained
    copy_arguments = constrained and eval_cfg.copy_arguments
    if kind in ("vllm", "auto"):
        if vllm_predictor.vllm_available():
            return vllm_predictor.VllmPredictor(
                model_dir,
                builder,
                max_new_tokens=eval_cfg.max_new_tokens,
                dtype=cfg.model.dtype,
                max_model_len=cfg.serving.max_model_len,
                gpu_memory_utilization=cfg.serving.gpu_memory_utilization,
                constrained=constrained,
                copy_arguments=copy_arguments,
                progress=progress,
            )
        log.info("evaluation.decoding=%s: vllm is not importable here, using batched transformers generation", kind)
        kind = "generate"

    from intentops.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_dir, cfg.model, for_training=False)
    model = _to_accelerator(model)
    common = {
        "batch_size": eval_cfg.batch_size,
        "max_new_tokens": eval_cfg.max_new_tokens,
        "constrained": constrained,
        "copy_arguments": copy_arguments,
        "progress": progress,
    }
    if kind == "label_scoring":
        from intentops.evaluation.label_scoring import LabelScoringPredictor

        return LabelScoringPredictor(
            model,
            tokenizer,
            builder,
            length_normalized=eval_cfg.label_score == "mean",
            normalization=eval_cfg.label_normalization,
            **common,
        )
    from intentops.evaluation.generation import GenerationPredictor

    return GenerationPredictor(model, tokenizer, builder, **common)
