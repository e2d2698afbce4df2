"""Teach the explicit `uncertain()` answer: relabel the training records the warmed-up model is least sure of.

After the SFT warm-up, every training record gets a confidence: the mean per-token log-probability of its gold
answer (`PromptBuilder.target`) under its prompt, from one teacher-forced forward pass. The least-confident share
(`sft.uncertain_share`) is relabelled `uncertain()`, and later stages (GRPO, mining) train on the relabelled split,
so the model learns to answer `uncertain()` where it would most likely be wrong instead of guessing.

`uncertain_report` measures the result on test predictions: how often the model answers `uncertain()`, and the
precision of those answers, i.e. the share of them on records a reference model (the same chain without the
relabelling) gets wrong.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.artifacts import TRAIN_FILE, UNCERTAIN_REPORT
from intentops.catalog import UNCERTAIN_INTENT
from intentops.data.records import complete_record
from intentops.grammar import Call, render_call
from intentops.io import read_jsonl, write_json, write_jsonl

if TYPE_CHECKING:
    import torch

    from intentops.config import RunConfig

log = logging.getLogger(__name__)

UNCERTAIN_OUTPUT = render_call(Call(UNCERTAIN_INTENT))
RELABELLED_FROM = "relabelled_from"  # the record's original output, kept for the report and for audits


class UncertainLabelError(ValueError):
    """The relabelling cannot run as configured; the message names the knob or the file."""


def target_mean_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, target_lengths: Sequence[int]) -> list[float]:
    """Mean log-probability of each row's last `target_lengths[i]` tokens, each predicted from the position before.

    `logits` (rows, T, vocab) come from one forward pass over `input_ids` (rows, T), the targets right-aligned (the
    rows are left-padded), so the same slice holds the target in every row.
    """
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (rows, T - 1): log p(token t | tokens < t)
    width = picked.shape[1]
    return [float(picked[row, width - n :].mean()) for row, n in enumerate(target_lengths)]


def gold_confidences(
    model_dir: str | Path, records: Sequence[dict[str, Any]], cfg: RunConfig, batch_size: int = 16
) -> list[float]:
    """Each record's confidence under the model: mean token log-prob of its gold answer after its prompt."""
    import torch

    from intentops.evaluation.decoding import left_pad, plan_batches
    from intentops.evaluation.predictors import chat_prompts
    from intentops.models import load_model_and_tokenizer
    from intentops.prompting import PromptBuilder

    model, tokenizer = load_model_and_tokenizer(model_dir, cfg.model, for_training=False)
    builder = PromptBuilder.from_model_dir(model_dir)
    prompts = chat_prompts(tokenizer, builder, [record["text"] for record in records])
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    targets = [builder.target(record["output"]) for record in records]
    target_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    sequences = [list(p) + list(t) for p, t in zip(prompt_ids, target_ids, strict=True)]
    confidences = [0.0] * len(records)
    for batch in plan_batches([len(s) for s in sequences], batch_size):
        ids, mask = left_pad([sequences[i] for i in batch], tokenizer.pad_token_id)
        input_ids = torch.tensor(ids, device=model.device)
        attention = torch.tensor(mask, device=model.device)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=attention).logits
        means = target_mean_logprobs(logits, input_ids, [len(target_ids[i]) for i in batch])
        for index, value in zip(batch, means, strict=True):
            confidences[index] = value
    return confidences


def least_confident(confidences: Sequence[float], share: float) -> list[int]:
    """Indices of the `round(share * n)` lowest confidences; ties go to the earlier record, so the pick is stable."""
    if not 0 <= share < 1:
        raise UncertainLabelError(f"sft.uncertain_share must be in [0, 1), got {share}")
    count = math.floor(share * len(confidences) + 0.5)
    order = sorted(range(len(confidences)), key=lambda i: (confidences[i], i))
    return sorted(order[:count])


def relabel(records: Sequence[dict[str, Any]], indices: Sequence[int]) -> list[dict[str, Any]]:
    """A copy of the records where those at `indices` answer `uncertain()`; their original output is kept aside."""
    chosen = set(indices)
    out = []
    for index, record in enumerate(records):
        if index not in chosen or record.get("intent") == UNCERTAIN_INTENT:
            out.append(dict(record))
            continue
        changed = {k: v for k, v in record.items() if k not in ("intent", "params", "calls")}
        changed.update(output=UNCERTAIN_OUTPUT, **{RELABELLED_FROM: record["output"]})
        out.append(complete_record(changed))
    return out


@dataclass
class RelabelReport:
    """What the relabelling did: how many records, which share, the confidence cut-off."""

    train_records: int
    candidates: int  # training records not already answering uncertain()
    share: float
    relabelled: int
    threshold: float | None  # the highest confidence that was relabelled
    mean_confidence: float
    per_intent: dict[str, int]  # original intent -> records relabelled

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def relabel_uncertain(
    model_dir: str | Path, train_path: str | Path, cfg: RunConfig, out_dir: str | Path
) -> tuple[Path, RelabelReport]:
    """The training-chain step between SFT and GRPO: write `out_dir/train.jsonl` with the least-confident share of
    `train_path` relabelled `uncertain()`, and `out_dir/uncertain.json`. Returns (the new train file, the report).

    Needs `prompt.uncertain_label` on in the model's prompt: a model never offered `uncertain()` cannot learn it.
    """
    from intentops.prompting import PromptBuilder

    if not PromptBuilder.from_model_dir(model_dir).cfg.uncertain_label:
        raise UncertainLabelError(
            f"{model_dir}: trained without prompt.uncertain_label; turn it on to relabel samples as uncertain()"
        )
    records = list(read_jsonl(train_path))
    if not records:
        raise UncertainLabelError(f"{train_path}: no training records to relabel")
    confidences = gold_confidences(model_dir, records, cfg)
    # records already answering uncertain() (out-of-scope examples) are not candidates: the share is of the rest
    candidates = [i for i, record in enumerate(records) if record.get("intent") != UNCERTAIN_INTENT]
    picked = [candidates[i] for i in least_confident([confidences[i] for i in candidates], cfg.sft.uncertain_share)]
    relabelled = relabel(records, picked)
    per_intent: dict[str, int] = {}
    for index in picked:
        per_intent[records[index]["intent"]] = per_intent.get(records[index]["intent"], 0) + 1
    report = RelabelReport(
        train_records=len(records),
        candidates=len(candidates),
        share=cfg.sft.uncertain_share,
        relabelled=len(picked),
        threshold=max((confidences[i] for i in picked), default=None),
        mean_confidence=sum(confidences) / len(confidences),
        per_intent=dict(sorted(per_intent.items())),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / TRAIN_FILE, relabelled)
    write_json(out / UNCERTAIN_REPORT, report.to_dict())
    log.info("relabelled %d of %d training records uncertain()", report.relabelled, report.train_records)
    return out / TRAIN_FILE, report


def uncertain_report(predictions: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Uncertain rate and precision from two evaluations of the same test records (`predictions.jsonl` rows).

    rate: share of records the model answers `uncertain()`; precision: share of those answers on records the
    reference model (trained without relabelling) gets wrong, i.e. where abstaining avoided an error. Records whose
    gold answer is itself `uncertain()` are left out: there abstaining is simply right.
    """
    gold_of = {row["id"]: row for row in reference}
    rows = [row for row in predictions if row.get("gold_intent") != UNCERTAIN_INTENT]
    abstained = [row for row in rows if row.get("intent") == UNCERTAIN_INTENT]
    missing = [row["id"] for row in abstained if row["id"] not in gold_of]
    if missing:
        raise UncertainLabelError(f"reference predictions lack records {missing[:5]}: not the same test split")
    avoided = sum(not gold_of[row["id"]]["intent_ok"] for row in abstained)
    return {
        "n": len(rows),
        "uncertain": len(abstained),
        "uncertain_rate": len(abstained) / len(rows) if rows else 0.0,
        "uncertain_precision": avoided / len(abstained) if abstained else None,
    }
