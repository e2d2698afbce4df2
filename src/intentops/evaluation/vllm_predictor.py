"""vLLM offline batch inference (greedy), optionally under the same structured-outputs constraint as the server.

vllm is imported only when this predictor is built: it is a GPU-only dependency, and `make_predictor` falls back to
batched transformers generation when it is not importable.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from intentops.evaluation.predictors import Prediction, Predictor, chat_prompts, prediction_from_completion
from intentops.prompting import PromptBuilder


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VllmPredictor(Predictor):
    """vLLM offline batch inference, greedy (temperature 0); vLLM schedules the batching itself.

    `constrained` sends the catalog call grammar as `structured_outputs`, exactly what the serving client sends;
    with `copy_arguments` each request gets its own grammar, argument values copied from its utterance.
    """

    def __init__(
        self,
        model_dir: str | Path,
        builder: PromptBuilder,
        *,
        max_new_tokens: int = 64,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        constrained: bool = False,
        copy_arguments: bool = False,
        progress: bool = True,
    ) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM, SamplingParams

        self.builder = builder
        self.progress = progress
        self.constrained = constrained
        self.copy_arguments = constrained and copy_arguments
        self.max_new_tokens = max_new_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.llm = LLM(
            model=str(model_dir),
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=0,
        )
        extra = {}
        if constrained:
            from vllm.sampling_params import StructuredOutputsParams

            from intentops.serving.client import structured_outputs

            extra["structured_outputs"] = StructuredOutputsParams(**structured_outputs(builder))
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, **extra)

    name = "vllm"

    def unconstrained(self) -> VllmPredictor:
        from vllm import SamplingParams

        free = copy.copy(self)
        free.constrained = False
        free.copy_arguments = False
        free.sampling = SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens)
        return free

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        prompts = chat_prompts(self.tokenizer, self.builder, texts)
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, self._sampling_for(texts), use_tqdm=self.progress)
        # Offline batch mode: every request's answer is available when the whole batch returns.
        latency = time.perf_counter() - start
        return [
            prediction_from_completion(self.builder, text, output.outputs[0].text, latency_s=latency)
            for text, output in zip(texts, outputs, strict=True)
        ]

    def _sampling_for(self, texts: Sequence[str]) -> Any:
        """One SamplingParams for all prompts, or one per prompt when its arguments are copied from its text."""
        if not self.copy_arguments:
            return self.sampling
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        from intentops.serving.client import structured_outputs

        return [
            SamplingParams(
                temperature=0.0,
                max_tokens=self.max_new_tokens,
                structured_outputs=StructuredOutputsParams(**structured_outputs(self.builder, source=text)),
            )
            for text in texts
        ]
