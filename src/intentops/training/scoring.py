"""The RCS scoring pass: the stage-1 policy samples G completions for EVERY training record, scored with
the GRPO reward functions, so hard-sample mining judges each record by one complete pass rather than by whatever
stage 1 happened to draw.

Generation is batched: vLLM where it is importable and a GPU is present (`mining.score_backend=auto`), otherwise
transformers' `generate` with sampling. The log has the rollout log's columns (step 0, generation 0..G-1) and carries
in its parquet metadata the reward weights, the training set's hash (over the records' stable ids) and the ids of
records left out because their prompt is longer than `grpo.max_prompt_length` (GRPO cannot train on them either).
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intentops.config import RunConfig
from intentops.prompting import PromptBuilder
from intentops.rewards import RewardWeights, score_completion
from intentops.training.rollouts import (
    GENERATIONS_METADATA,
    SKIPPED_METADATA,
    TRAIN_SET_HASH_METADATA,
    rollout_schema,
    train_set_hash,
)

log = logging.getLogger(__name__)


@dataclass
class ScoringResult:
    path: Path
    records: int
    scored: int
    skipped: int
    generations: int
    backend: str
    perfect_rate: float
    seconds: float


def prompt_length(builder: PromptBuilder, tokenizer: Any, text: str) -> int:
    """Tokens of a record's chat prompt, generation prompt included (what grpo.max_prompt_length limits)."""
    messages = builder.messages(text)
    return len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"])


def score_model(model_dir: str | Path, train_path: str | Path, cfg: RunConfig, out_path: str | Path) -> ScoringResult:
    """The scoring pass for a finished IntentOps model folder over the records of `train_path`
    (`intentops train score`; GRPO stage 1 runs it itself)."""
    from intentops.models import load_tokenizer
    from intentops.training.sft import load_split

    records = load_split(train_path)
    builder = PromptBuilder.from_model_dir(model_dir)
    tokenizer = load_tokenizer(model_dir)
    limit = cfg.grpo.max_prompt_length
    skip = [r["id"] for r in records if prompt_length(builder, tokenizer, r["text"]) > limit]
    return score_training_set(model_dir, records, builder, cfg, out_path, skip_ids=skip)


def choose_backend(requested: str) -> str:
    """`vllm` or `transformers` for `mining.score_backend`; auto falls back to transformers without vLLM or a GPU."""
    has_vllm = importlib.util.find_spec("vllm") is not None
    if requested == "vllm":
        if not has_vllm:
            raise ValueError(
                "mining.score_backend=vllm but vllm is not importable here; install it (pip install "
                "'intentops[serve]') or set mining__score_backend=auto"
            )
        return "vllm"
    if requested == "auto" and has_vllm:
        import torch

        if torch.cuda.is_available():
            return "vllm"
    return "transformers"


def _transformers_generate(
    model_dir: Path, prompts: list[list[dict[str, str]]], cfg: RunConfig, generations: int
) -> list[list[str]]:
    import torch

    from intentops.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_dir, cfg.model, for_training=False)
    if torch.cuda.is_available():
        model.to("cuda")
    torch.manual_seed(cfg.grpo.seed)
    from intentops.evaluation.decoding import progress_bar

    out: list[list[str]] = []
    batch = cfg.mining.score_batch_size
    # One bar for the pass (a log line per batch would be dozens of lines on the bundled example).
    bar = progress_bar(len(prompts), "scoring pass", enabled=True)
    try:
        for start in range(0, len(prompts), batch):
            texts = [
                tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                for p in prompts[start : start + batch]
            ]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                generated = model.generate(
                    **encoded,
                    do_sample=True,
                    temperature=cfg.grpo.temperature,
                    top_p=1.0,
                    top_k=0,
                    num_return_sequences=generations,
                    max_new_tokens=cfg.grpo.max_completion_length,
                    pad_token_id=tokenizer.pad_token_id,
                )
            decoded = tokenizer.batch_decode(generated[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            out.extend(decoded[i : i + generations] for i in range(0, len(decoded), generations))
            bar.update(min(batch, len(prompts) - start))
    finally:
        bar.close()
        del model
        gc.collect()
    return out


def _vllm_generate(
    model_dir: Path, prompts: list[list[dict[str, str]]], cfg: RunConfig, generations: int
) -> list[list[str]]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_dir), seed=cfg.grpo.seed, gpu_memory_utilization=cfg.serving.gpu_memory_utilization)
    params = SamplingParams(
        n=generations, temperature=cfg.grpo.temperature, max_tokens=cfg.grpo.max_completion_length, seed=cfg.grpo.seed
    )
    try:
        results = llm.chat(prompts, params, use_tqdm=False)
        return [[choice.text for choice in result.outputs] for result in results]
    finally:
        del llm
        gc.collect()


def score_training_set(
    model_dir: str | Path,
    records: Sequence[dict[str, Any]],
    builder: PromptBuilder,
    cfg: RunConfig,
    out_path: str | Path,
    skip_ids: Collection[str] = (),
) -> ScoringResult:
    """Sample G completions of every record with the model in `model_dir`, score them and write the log to
    `out_path` (atomically). `skip_ids` (prompts over grpo.max_prompt_length, which GRPO cannot train on either)
    are listed in the log's metadata instead."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    model_dir, out_path = Path(model_dir), Path(out_path)
    generations = cfg.mining.score_generations or cfg.grpo.num_generations
    skip = {str(i) for i in skip_ids}
    kept = [r for r in records if str(r["id"]) not in skip]
    skipped = sorted(skip & {str(r["id"]) for r in records})
    backend = choose_backend(cfg.mining.score_backend)
    log.info("scoring pass: %d records x %d completions with %s", len(kept), generations, backend)
    generate = _vllm_generate if backend == "vllm" else _transformers_generate
    completions = generate(model_dir, [builder.messages(r["text"]) for r in kept], cfg, generations) if kept else []
    weights = RewardWeights.from_config(cfg.grpo)
    rows = []
    for record, texts in zip(kept, completions, strict=True):
        for generation, text in enumerate(texts):
            score = score_completion(
                text,
                record["output"],
                builder,
                weights,
                strict=cfg.grpo.strict_format,
                partial=cfg.grpo.reward_partial_credit,
            )
            rows.append(
                {
                    "sample_id": str(record["id"]),
                    "step": 0,
                    "generation": generation,
                    "completion": text,
                    "reward_format": score.format,
                    "reward_intent": score.intent,
                    "reward_params": score.params,
                    "reward_total": score.total,
                }
            )
    schema = rollout_schema(
        weights.as_list(),
        "scoring",
        **{
            TRAIN_SET_HASH_METADATA: train_set_hash(records),
            SKIPPED_METADATA: skipped,
            GENERATIONS_METADATA: generations,
        },
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), partial)
    os.replace(partial, out_path)
    perfect = sum(row["reward_total"] >= weights.total - 1e-9 for row in rows) / len(rows) if rows else 0.0
    seconds = time.perf_counter() - started
    log.info("scoring pass: %d completions in %.1f s, perfect rate %.3f", len(rows), seconds, perfect)
    return ScoringResult(out_path, len(records), len(kept), len(skipped), generations, backend, perfect, seconds)
