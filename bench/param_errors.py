"""Where parameter accuracy goes: the wrong-parameter predictions of an evaluation, sorted into kinds.

Reads an evaluation folder's predictions (the gate's normalised scoring: first call, set of arguments) and, for every
record whose intent is right but whose arguments are not, compares each gold argument with the predicted one in the
same position: missing, truncated (prediction is a prefix or a part of the gold), overlong (gold is a part of the
prediction), copied from elsewhere in the utterance, or something else; and what kind of text the gold argument is
(digits, Chinese, one English word, several English words, mixed). Prints one JSON object. Optionally evaluates a
model on a split first (`--model`), so the train split can be checked for underfitting.

    python bench/param_errors.py /tmp/intentops-sft-accuracy/e16/eval
    python bench/param_errors.py /tmp/x/train-eval --model /tmp/x/sft --dataset /tmp/x/dataset --split train
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from typing import Any

from intentops.artifacts import PREDICTIONS_FILE, Evaluation
from intentops.grammar import GrammarError, parse_calls
from intentops.io import read_jsonl

_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")


def arg_kind(arg: str) -> str:
    """A coarse label for what an argument is made of."""
    if arg.isdigit():
        return "digits"
    has_cjk, has_latin = bool(_CJK.search(arg)), bool(_LATIN.search(arg))
    if has_cjk and (has_latin or any(c.isdigit() for c in arg)):
        return "zh+digits/latin"
    if has_cjk:
        return "zh"
    if has_latin:
        return "en-words" if " " in arg.strip() else "en-word"
    return "other"


def error_kind(gold: str, pred: str | None, text: str) -> str:
    """How one predicted argument differs from its gold argument."""
    if pred is None:
        return "missing"
    if pred == gold:
        return "right"
    if pred.strip().lower() == gold.strip().lower():
        return "case/space"
    if gold.startswith(pred):
        return "truncated (prefix)"
    if pred in gold:
        return "truncated (inner part)"
    if gold in pred:
        return "overlong"
    if pred and pred in text:
        return "other span of the utterance"
    return "not in the utterance"


def _first_args(call: str | None) -> tuple[str, tuple[str, ...]] | None:
    if not call:
        return None
    try:
        first = parse_calls(call)[0]
    except GrammarError:
        return None
    return first.name, first.args


def analyse(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of argument errors by kind, by argument kind and by intent, with a few examples of each error kind."""
    by_error: Counter[str] = Counter()
    by_arg_kind: dict[str, Counter[str]] = defaultdict(Counter)
    by_intent: dict[str, Counter[str]] = defaultdict(Counter)
    by_lang: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        gold = _first_args(row["gold"])
        assert gold is not None
        by_intent[gold[0]]["n"] += 1
        by_lang[str(row.get("lang"))]["n"] += 1
        if not row["params_ok"]:
            by_intent[gold[0]]["params_wrong"] += 1
            by_lang[str(row.get("lang"))]["params_wrong"] += 1
        if not row["intent_ok"]:
            by_intent[gold[0]]["intent_wrong"] += 1
            continue
        pred = _first_args(row.get("call"))
        pred_args = pred[1] if pred else ()
        for index, gold_arg in enumerate(gold[1]):
            pred_arg = pred_args[index] if index < len(pred_args) else None
            kind = error_kind(gold_arg, pred_arg, row["text"])
            by_arg_kind[arg_kind(gold_arg)][kind] += 1
            if kind != "right":
                by_error[kind] += 1
                if len(examples[kind]) < 6:
                    examples[kind].append(f"{row['text']} | gold {row['gold']} | pred {row.get('raw')!r}")
        if len(pred_args) > len(gold[1]):
            by_error["extra argument"] += 1
    return {
        "records": len(rows),
        "intent_accuracy": sum(r["intent_ok"] for r in rows) / len(rows),
        "param_accuracy": sum(r["params_ok"] for r in rows) / len(rows),
        "argument_errors": dict(by_error.most_common()),
        "by_argument_kind": {k: dict(v) for k, v in sorted(by_arg_kind.items())},
        "by_lang": {k: dict(v) for k, v in sorted(by_lang.items())},
        "by_intent": {k: dict(v) for k, v in sorted(by_intent.items(), key=lambda kv: -kv[1]["params_wrong"])},
        "examples": dict(examples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("evaluation", help="Evaluation folder (written first when --model is given).")
    parser.add_argument("--model", help="Model folder to evaluate first.")
    parser.add_argument("--dataset", help="Dataset folder (with --model).")
    parser.add_argument("--split", default="test", help="Split to evaluate (with --model).")
    parser.add_argument("--config", help="Run config (with --model); default configs/tiny-cpu.yaml.")
    args = parser.parse_args()
    if args.model:
        from intentops.config import load_config
        from intentops.evaluation import evaluate_model

        cfg = load_config(args.config, overrides={"registry__tracking_uri": f"sqlite:///{args.evaluation}.mlflow.db"})
        evaluate_model(args.model, args.dataset, cfg, args.evaluation, split=args.split)
    rows = list(read_jsonl(Evaluation(args.evaluation).file(PREDICTIONS_FILE)))
    print(json.dumps(analyse(rows), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
