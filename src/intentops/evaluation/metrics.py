"""Evaluation metrics for call-string predictions.

Two families of headline numbers, side by side:

- `strict_intent_accuracy` / `strict_param_accuracy` (the strict string rule) reproduce the reference offline
  evaluation script (the one shipped with seed 002, see `strict_outcome`) exactly, string
  arithmetic included, on the model's raw answer: only the gold answer's first call counts
  (`gold.split(';')[0]`); intent is right when the text before the first `(` is equal; parameters are right when,
  in addition, the sets of comma-separated pieces between the first `(` and the last character are equal. So
  `weather_search(杭州);volume_down()` against a gold `weather_search(杭州);volume_down()` has wrong parameters
  (the predicted piece is `杭州);volume_down`), and `set_temperature(bedroom, 27)` differs from
  `set_temperature(bedroom,27)` (the piece ` 27` keeps its space).
- `intent_accuracy` / `param_accuracy` are the normalised versions the gate uses: the prediction is parsed with
  `intentops.grammar` first (whitespace around arguments, full-width punctuation and quoting do not matter; an
  answer that does not parse is wrong), then the first predicted call is compared with the gold's first call:
  same name, and for parameters the same set of arguments.
- `exact_match` compares the whole call list: the same calls in the same order, each with the same arguments in
  the same order (after the same normalisation).

The denominator is every test record. Everything else (macro-F1, per-intent precision/recall/F1, confusion matrix,
format validity, seen/unseen and per-language splits, multi-intent exact match, latency) is computed from the same
per-record outcomes, so the numbers can never disagree with each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from intentops.catalog import UNCERTAIN_INTENT
from intentops.grammar import Call, GrammarError, parse_calls
from intentops.prompting import THOUGHT_TEMPLATES

INVALID_LABEL = "<invalid>"
"""Confusion-matrix label for predictions that do not parse into a call."""


@dataclass(frozen=True)
class Outcome:
    """How one prediction compares with its gold record."""

    gold_intent: str
    pred_intent: str  # INVALID_LABEL when the prediction does not parse
    format_ok: bool
    intent_ok: bool
    params_ok: bool
    exact_ok: bool
    multi_intent: bool
    seen: bool | None
    lang: str | None
    strict_intent_ok: bool = False
    strict_params_ok: bool = False


def gold_calls(record: Mapping[str, Any], index: int = 0) -> list[Call]:
    """Every call of a gold record's output; errors name the record."""
    output = record.get("output")
    if not isinstance(output, str):
        raise ValueError(f"test record {record.get('id', index)!r}: field 'output' is missing or not a string")
    try:
        return parse_calls(output)
    except GrammarError as exc:
        raise ValueError(f"test record {record.get('id', index)!r}: gold output does not parse: {exc.reason}") from None


def predicted_calls(call: str | None) -> list[Call] | None:
    """Parsed calls of a prediction's call string, or None when there is none or it does not parse."""
    if call is None:
        return None
    try:
        return parse_calls(call)
    except GrammarError:
        return None


def answer_text(raw: str) -> str:
    """What the model answered: the answer span of a reasoning completion in either thought template (the `<answer>`
    tag, or the `Action:` line), else the completion itself."""
    for template in THOUGHT_TEMPLATES.values():
        match = template.answer.search(raw)
        if match:
            return match.group("answer")
    return raw


def strict_outcome(gold_output: str, pred: str) -> tuple[bool, bool]:
    """(intent right, parameters right) for one record by the seed 002 script's own string arithmetic, verbatim.

    The script raises IndexError when the names match but the prediction has no `(`; that counts as intent
    right, parameters wrong here (the script's counter was already incremented when it crashed).
    """
    gold = gold_output.split(";")[0] if ";" in gold_output else gold_output
    if gold.split("(")[0] != pred.split("(")[0]:
        return False, False
    try:
        gold_list = set(gold.strip()[:-1].split("(")[1].split(","))
        pred_list = set(pred.strip()[:-1].split("(")[1].split(","))
    except IndexError:
        return True, False
    return True, gold_list == pred_list


def score_one(record: Mapping[str, Any], call: str | None, index: int = 0, raw: str | None = None) -> Outcome:
    """Compare one prediction with its gold record.

    `call` is the canonical call string (None when the format was broken) and drives the normalised metrics;
    `raw` is the model's completion, scored by the seed 002 rule (the canonical call string stands in when no
    raw completion is given).
    """
    gold = gold_calls(record, index)
    pred = predicted_calls(call)
    first_gold = gold[0]
    first_pred = pred[0] if pred else None
    intent_ok = first_pred is not None and first_pred.name == first_gold.name
    params_ok = intent_ok and set(first_pred.args) == set(first_gold.args)
    exact_ok = pred is not None and pred == gold
    seed_answer = answer_text(raw) if raw is not None else (call or "")
    seed_intent_ok, seed_params_ok = strict_outcome(record["output"], seed_answer)
    seen = record.get("seen")
    return Outcome(
        gold_intent=first_gold.name,
        pred_intent=first_pred.name if first_pred is not None else INVALID_LABEL,
        format_ok=pred is not None,
        intent_ok=intent_ok,
        params_ok=params_ok,
        exact_ok=exact_ok,
        multi_intent=len(gold) > 1,
        seen=bool(seen) if seen is not None else None,
        lang=record.get("lang"),
        strict_intent_ok=seed_intent_ok,
        strict_params_ok=seed_params_ok,
    )


def score_all(
    records: Sequence[Mapping[str, Any]], calls: Sequence[str | None], raws: Sequence[str] | None = None
) -> list[Outcome]:
    """`score_one` over a test split; `raws` (the completions) feed the seed 002 figures when given."""
    if len(records) != len(calls):
        raise ValueError(f"{len(records)} test records but {len(calls)} predictions")
    if raws is not None and len(raws) != len(records):
        raise ValueError(f"{len(records)} test records but {len(raws)} raw completions")
    return [
        score_one(record, call, index, raws[index] if raws is not None else None)
        for index, (record, call) in enumerate(zip(records, calls, strict=True))
    ]


def _rate(flags: Sequence[bool]) -> float:
    return float(np.mean(flags)) if len(flags) else 0.0


def accuracy_block(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """n, intent accuracy, parameter accuracy, exact match and format validity of a group of outcomes."""
    return {
        "n": len(outcomes),
        "intent_accuracy": _rate([o.intent_ok for o in outcomes]),
        "param_accuracy": _rate([o.params_ok for o in outcomes]),
        "exact_match": _rate([o.exact_ok for o in outcomes]),
        "format_valid_rate": _rate([o.format_ok for o in outcomes]),
    }


def label_order(outcomes: Sequence[Outcome], catalog_names: Sequence[str] | None = None) -> list[str]:
    """Labels for tables and the confusion matrix: catalog order first, then any other label seen, invalid last."""
    present = {o.gold_intent for o in outcomes} | {o.pred_intent for o in outcomes}
    ordered = [name for name in (catalog_names or []) if name in present]
    ordered += sorted(present - set(ordered) - {INVALID_LABEL})
    if INVALID_LABEL in present:
        ordered.append(INVALID_LABEL)
    return ordered


def per_intent_table(outcomes: Sequence[Outcome], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1 and support for every gold intent (scikit-learn), with its seen flag."""
    from sklearn.metrics import precision_recall_fscore_support

    gold_labels = [label for label in labels if any(o.gold_intent == label for o in outcomes)]
    if not gold_labels:
        return {}
    y_true = [o.gold_intent for o in outcomes]
    y_pred = [o.pred_intent for o in outcomes]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=gold_labels, zero_division=0
    )
    seen_of: dict[str, bool | None] = {}
    for o in outcomes:
        seen_of.setdefault(o.gold_intent, o.seen)
    return {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "seen": seen_of.get(label),
        }
        for i, label in enumerate(gold_labels)
    }


def macro_f1(outcomes: Sequence[Outcome]) -> float:
    """Macro-F1 over the intents present in the gold labels (predicted-only labels count only as errors)."""
    from sklearn.metrics import f1_score

    if not outcomes:
        return 0.0
    y_true = [o.gold_intent for o in outcomes]
    y_pred = [o.pred_intent for o in outcomes]
    return float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0))


def confusion(outcomes: Sequence[Outcome], labels: Sequence[str]) -> dict[str, Any]:
    """Square confusion matrix (rows gold, columns predicted) over `labels`."""
    from sklearn.metrics import confusion_matrix

    if not outcomes:
        return {"labels": list(labels), "matrix": []}
    matrix = confusion_matrix([o.gold_intent for o in outcomes], [o.pred_intent for o in outcomes], labels=list(labels))
    return {"labels": list(labels), "matrix": matrix.astype(int).tolist()}


def worst_confusions(confusion_data: Mapping[str, Any], top: int = 10) -> list[dict[str, Any]]:
    """The most frequent off-diagonal (gold, predicted) pairs."""
    labels = confusion_data["labels"]
    pairs = [
        {"gold": labels[i], "predicted": labels[j], "count": int(count)}
        for i, row in enumerate(confusion_data["matrix"])
        for j, count in enumerate(row)
        if i != j and count > 0
    ]
    pairs.sort(key=lambda p: (-p["count"], p["gold"], p["predicted"]))
    return pairs[:top]


def latency_block(latencies_s: Sequence[float], elapsed_s: float | None) -> dict[str, Any]:
    """Per-request latency percentiles and overall throughput (records per second of wall time)."""
    values = np.asarray([v for v in latencies_s if v is not None], dtype=float)
    block: dict[str, Any] = {
        "p50_s": float(np.percentile(values, 50)) if values.size else None,
        "p95_s": float(np.percentile(values, 95)) if values.size else None,
        "mean_s": float(values.mean()) if values.size else None,
        "elapsed_s": elapsed_s,
        "throughput_per_s": None,
    }
    if elapsed_s and elapsed_s > 0:
        block["throughput_per_s"] = len(latencies_s) / elapsed_s
    return block


def _grouped(outcomes: Sequence[Outcome], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        value = getattr(o, key)
        if value is None:
            continue
        name = ("seen" if value else "unseen") if key == "seen" else str(value)
        groups.setdefault(name, []).append(o)
    return {name: accuracy_block(group) for name, group in sorted(groups.items())}


def compute_metrics(
    records: Sequence[Mapping[str, Any]],
    calls: Sequence[str | None],
    *,
    catalog_names: Sequence[str] | None = None,
    latencies_s: Sequence[float] | None = None,
    elapsed_s: float | None = None,
    confidences: Sequence[float | None] | None = None,
    raws: Sequence[str] | None = None,
) -> dict[str, Any]:
    """All metrics of one evaluation as a JSON-ready dict.

    `calls[i]` is the canonical call string predicted for `records[i]` (None when the completion's format was
    broken), `raws[i]` the completion itself (for the seed 002 figures). `catalog_names` orders the tables and
    lets unknown intents be counted.
    """
    return metrics_from_outcomes(
        score_all(records, calls, raws),
        catalog_names=catalog_names,
        latencies_s=latencies_s,
        elapsed_s=elapsed_s,
        confidences=confidences,
    )


def metrics_from_outcomes(
    outcomes: Sequence[Outcome],
    *,
    catalog_names: Sequence[str] | None = None,
    latencies_s: Sequence[float] | None = None,
    elapsed_s: float | None = None,
    confidences: Sequence[float | None] | None = None,
) -> dict[str, Any]:
    """`compute_metrics` for outcomes already scored (so per-record results and aggregates share one scoring)."""
    labels = label_order(outcomes, catalog_names)
    confusion_data = confusion(outcomes, labels)
    headline = accuracy_block(outcomes)
    multi = [o for o in outcomes if o.multi_intent]
    known = set(catalog_names or [])
    valid = [o for o in outcomes if o.format_ok]
    metrics: dict[str, Any] = {
        **headline,
        "strict_intent_accuracy": _rate([o.strict_intent_ok for o in outcomes]),
        "strict_param_accuracy": _rate([o.strict_params_ok for o in outcomes]),
        "format_error_rate": 1.0 - headline["format_valid_rate"] if outcomes else 0.0,
        "macro_f1": macro_f1(outcomes),
        "unknown_intent_rate": _rate([o.pred_intent not in known for o in valid]) if known and valid else 0.0,
        "multi_intent": {"n": len(multi), "exact_match": _rate([o.exact_ok for o in multi])},
        "by_seen": _grouped(outcomes, "seen"),
        "by_lang": _grouped(outcomes, "lang"),
        "unseen_intents": sorted({o.gold_intent for o in outcomes if o.seen is False}),
        "per_intent": per_intent_table(outcomes, labels),
        "confusion": confusion_data,
        "worst_confusions": worst_confusions(confusion_data),
        "latency": latency_block(latencies_s or [], elapsed_s),
    }
    if confidences is not None:
        present = np.asarray([c for c in confidences if c is not None], dtype=float)
        right = [c for c, o in zip(confidences, outcomes, strict=True) if c is not None and o.intent_ok]
        wrong = [c for c, o in zip(confidences, outcomes, strict=True) if c is not None and not o.intent_ok]
        metrics["confidence"] = {
            "mean": float(present.mean()) if present.size else None,
            "mean_when_right": float(np.mean(right)) if right else None,
            "mean_when_wrong": float(np.mean(wrong)) if wrong else None,
        }
    abstained = [o.pred_intent == UNCERTAIN_INTENT for o in outcomes]
    if any(abstained) or any(o.gold_intent == UNCERTAIN_INTENT for o in outcomes):
        in_scope = [a for a, o in zip(abstained, outcomes, strict=True) if o.gold_intent != UNCERTAIN_INTENT]
        out_of_scope = [a for a, o in zip(abstained, outcomes, strict=True) if o.gold_intent == UNCERTAIN_INTENT]
        metrics["uncertain"] = {
            "rate": _rate(abstained),  # how often the model answers uncertain()
            "rate_on_in_scope": _rate(in_scope) if in_scope else None,  # abstentions on records it could answer
            "recall_out_of_scope": _rate(out_of_scope) if out_of_scope else None,
        }
    return metrics


def strict_accuracy(gold_outputs: Sequence[str], raw_predictions: Sequence[str]) -> tuple[float, float]:
    """(intent accuracy, parameter accuracy) of raw completions by the seed 002 script's rule (`strict_outcome`)."""
    pairs = [strict_outcome(gold, pred) for gold, pred in zip(gold_outputs, raw_predictions, strict=True)]
    total = len(pairs)
    if not total:
        return 0.0, 0.0
    return sum(i for i, _ in pairs) / total, sum(p for _, p in pairs) / total
