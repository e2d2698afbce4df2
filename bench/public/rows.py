"""The rows of the benchmark tables: what one method scored on one prepared split, and what it cost.

Shared by the chain (bench/public/chain.py), the seed protocols (protocols.py) and the report (report.py).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intentops.artifacts import CATALOG_FILE, TRAIN_FILE, Dataset
from intentops.catalog import UNCERTAIN_INTENT, load_catalog
from intentops.config import RunConfig
from intentops.io import read_jsonl

log = logging.getLogger("bench.public.rows")

MODEL_ROWS = ("SFT", "SFT + GRPO", "SFT + GRPO + RCS")


@dataclass
class Row:
    """One line of the table: a method on one dataset/protocol, its scores and what it cost."""

    method: str
    decoding: str
    n_test: int = 0
    accuracy: float | None = None
    macro_f1: float | None = None
    seen_accuracy: float | None = None
    unseen_accuracy: float | None = None
    oos_recall: float | None = None
    oos_precision: float | None = None
    format_error_rate: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    note: str = ""
    error: str = ""
    protocol: str = ""  # seed-protocol rows: which comparison the row belongs to (protocols.py)


@dataclass
class ProtocolResult:
    """One prepared split: its data report, the chain's rows, and the seed-protocol comparisons run on it."""

    dataset: str
    protocol: str
    data: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    stage_s: dict[str, float] = field(default_factory=dict)
    skipped: str = ""
    comparisons: list[Row] = field(default_factory=list)


# ---- configuration -------------------------------------------------------------------------------------------------


def bench_config(base: RunConfig, work_root: Path) -> RunConfig:
    """The config every protocol starts from: baselines off (the TF-IDF row is its own row), every test record
    evaluated, MLflow runs in one sqlite store in the work directory unless a tracking URI is configured."""
    cfg = base.model_copy(deep=True)
    cfg.evaluation.baselines = False
    cfg.evaluation.max_samples = 0
    if not cfg.registry.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        cfg.registry.tracking_uri = f"sqlite:///{work_root / 'mlflow.db'}"
    cfg.registry.experiment = "bench-public"
    return cfg


def protocol_config(base: RunConfig, protocol: str) -> RunConfig:
    """The oos protocol offers the explicit uncertain label; the others do not. Every row also reports label
    scoring, which needs the intent name and `(` as separate tokens, so the tiny tokenizer keeps them apart."""
    cfg = base.model_copy(deep=True)
    cfg.prompt.uncertain_label = protocol == "oos"
    cfg.model.tiny_copy_tokens = False
    return cfg


def fit_lengths(cfg: RunConfig, base_dir: Path, data_dir: Path) -> dict[str, int]:
    """Raise `sft.max_length` and `grpo.max_prompt_length` to the longest prompt of this dataset, never lower them.

    The whole catalog is in every prompt (150 tools for CLINC150), so a length tuned for a 20-intent catalog would
    silently truncate the answer out of every SFT example.
    """
    from intentops.evaluation.predictors import chat_prompts
    from intentops.models import load_tokenizer
    from intentops.prompting import PromptBuilder

    tokenizer = load_tokenizer(base_dir)
    train = list(read_jsonl(data_dir / TRAIN_FILE))
    records = train + list(read_jsonl(Dataset(data_dir).split("test")))
    builder = PromptBuilder(load_catalog(data_dir / CATALOG_FILE), cfg.prompt, examples=train)
    prompts = chat_prompts(tokenizer, builder, [r["text"] for r in records])
    prompt_tokens = max(len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"])
    targets = [builder.target(r["output"]) for r in records]
    target_tokens = max(len(ids) for ids in tokenizer(targets, add_special_tokens=False)["input_ids"])
    needed_sft = prompt_tokens + target_tokens + 8
    if cfg.sft.max_length < needed_sft:
        log.info("sft.max_length %d -> %d (longest prompt %d tokens)", cfg.sft.max_length, needed_sft, prompt_tokens)
        cfg.sft.max_length = needed_sft
    if cfg.grpo.max_prompt_length < prompt_tokens:
        log.info("grpo.max_prompt_length %d -> %d", cfg.grpo.max_prompt_length, prompt_tokens)
        cfg.grpo.max_prompt_length = prompt_tokens
    return {"prompt_tokens_max": prompt_tokens, "target_tokens_max": target_tokens}


# ---- rows ------------------------------------------------------------------------------------------------------------


def tfidf_row(data_dir: Path, seed: int) -> Row:
    """The TF-IDF + logistic-regression baseline of the evaluation library, on the very same split.

    The library returns scores, not predictions, so for the oos protocol it is called once more on a relabelled view
    of the same test set (its fit is seeded, so it is the same classifier): every gold label set to `uncertain`, the
    out-of-scope records flagged unseen. Its unseen accuracy is then the oos recall, and its seen accuracy the share
    of in-scope records answered `uncertain` (the false alarms that set the precision).
    """
    from intentops.evaluation.baselines import tfidf_baseline

    train = list(read_jsonl(data_dir / TRAIN_FILE))
    test = list(read_jsonl(Dataset(data_dir).split("test")))
    texts, gold, seen = [r["text"] for r in train], [r["intent"] for r in train], [r["seen"] for r in test]
    test_texts, test_gold = [r["text"] for r in test], [r["intent"] for r in test]
    start = time.perf_counter()
    scores = tfidf_baseline(texts, gold, test_texts, test_gold, seen, seed=seed)
    row = Row(
        method="TF-IDF + linear",
        decoding="classifier",
        n_test=len(test),
        accuracy=scores["intent_accuracy"],
        macro_f1=scores["macro_f1"],
        seen_accuracy=scores["seen_intent_accuracy"],
        unseen_accuracy=scores.get("unseen_intent_accuracy"),
    )
    is_oos = [g == UNCERTAIN_INTENT for g in test_gold]
    if any(is_oos) and UNCERTAIN_INTENT in gold:
        as_uncertain = [UNCERTAIN_INTENT] * len(test)
        # seen flag False marks the out-of-scope records, True the in-scope ones
        flags = [not flag for flag in is_oos]
        view = tfidf_baseline(texts, gold, test_texts, as_uncertain, flags, seed=seed)
        n_oos, n_in = sum(is_oos), len(test) - sum(is_oos)
        hits = view["unseen_intent_accuracy"] * n_oos
        false_alarms = (view["seen_intent_accuracy"] or 0.0) * n_in
        row.oos_recall = hits / n_oos
        row.oos_precision = hits / (hits + false_alarms) if hits + false_alarms else 0.0
        row.seen_accuracy = row.unseen_accuracy = None
    row.train_s = time.perf_counter() - start  # fit and predict are one call: the whole cost goes here
    return row


def row_from_metrics(method: str, metrics: dict[str, Any], train_s: float | None, eval_s: float) -> Row:
    """A table row from an `evaluate_model` metrics.json."""
    by_seen = metrics.get("by_seen", {})
    uncertain = metrics.get("per_intent", {}).get(UNCERTAIN_INTENT)
    has_unseen = "unseen" in by_seen
    return Row(
        method=method,
        decoding=str(metrics.get("decoding")),
        n_test=int(metrics["n"]),
        accuracy=metrics["intent_accuracy"],
        macro_f1=metrics["macro_f1"],
        seen_accuracy=by_seen["seen"]["intent_accuracy"] if has_unseen and "seen" in by_seen else None,
        unseen_accuracy=by_seen["unseen"]["intent_accuracy"] if has_unseen else None,
        oos_recall=uncertain["recall"] if uncertain else None,
        oos_precision=uncertain["precision"] if uncertain else None,
        format_error_rate=metrics.get("format_error_rate"),
        train_s=train_s,
        eval_s=eval_s,
    )


def evaluate(
    method: str, model_dir: Path, data_dir: Path, cfg: RunConfig, out: Path, run_id: str, train_s: float | None
) -> Row:
    from intentops.evaluation import evaluate_model

    start = time.perf_counter()
    metrics = evaluate_model(model_dir, data_dir, cfg, out, run_id, stage=f"evaluate-{out.name}")
    return row_from_metrics(method, metrics, train_s, time.perf_counter() - start)
