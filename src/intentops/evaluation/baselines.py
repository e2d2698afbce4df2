"""Context baselines logged with every evaluation: how much does the LLM add over cheap classifiers?

Both are trained on the dataset's train split and scored on exactly the test records the model saw:
- majority class: always the most frequent training intent (the floor any model must clear);
- TF-IDF over character n-grams + logistic regression (scikit-learn): character n-grams need no word segmentation,
  so the same features work for Chinese and English.

They predict intents only (no arguments), and an intent absent from training (the unseen split) is impossible for
them by construction; the report states that ceiling instead of hiding it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _intents(records: Sequence[Mapping[str, Any]], split: str) -> list[str]:
    labels = []
    for index, record in enumerate(records):
        intent = record.get("intent")
        if not isinstance(intent, str) or not intent:
            raise ValueError(f"{split} record {record.get('id', index)!r}: field 'intent' is missing or empty")
        labels.append(intent)
    return labels


def _texts(records: Sequence[Mapping[str, Any]], split: str) -> list[str]:
    texts = []
    for index, record in enumerate(records):
        text = record.get("text")
        if not isinstance(text, str):
            raise ValueError(f"{split} record {record.get('id', index)!r}: field 'text' is missing or not a string")
        texts.append(text)
    return texts


def _scores(y_true: Sequence[str], y_pred: Sequence[str], seen: Sequence[bool | None]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    seen_idx = [i for i, flag in enumerate(seen) if flag is not False]
    unseen_idx = [i for i, flag in enumerate(seen) if flag is False]
    result: dict[str, Any] = {
        "intent_accuracy": float(accuracy_score(y_true, y_pred)) if y_true else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0))
        if y_true
        else 0.0,
        "seen_intent_accuracy": float(np.mean([y_true[i] == y_pred[i] for i in seen_idx])) if seen_idx else None,
    }
    if unseen_idx:
        result["unseen_intent_accuracy"] = float(np.mean([y_true[i] == y_pred[i] for i in unseen_idx]))
    return result


def majority_baseline(
    train_intents: Sequence[str], test_intents: Sequence[str], seen: Sequence[bool | None]
) -> dict[str, Any]:
    """Always predict the most frequent training intent (ties broken by name, for reproducibility)."""
    counts = Counter(train_intents)
    top = min(counts, key=lambda name: (-counts[name], name))
    return {"predicted": top, **_scores(test_intents, [top] * len(test_intents), seen)}


def tfidf_baseline(
    train_texts: Sequence[str],
    train_intents: Sequence[str],
    test_texts: Sequence[str],
    test_intents: Sequence[str],
    seen: Sequence[bool | None],
    seed: int = 0,
) -> dict[str, Any]:
    """Character n-gram TF-IDF + logistic regression, fit on the train split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    if len(set(train_intents)) < 2:
        raise ValueError("the TF-IDF baseline needs at least two intents in the train split")
    classifier = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=1),
        LogisticRegression(max_iter=2000, C=10.0, random_state=seed),
    )
    # A few thousand sparse features: BLAS threads only add overhead here, and spin badly on a busy machine.
    with threadpool_limits(limits=1):
        classifier.fit(list(train_texts), list(train_intents))
        predicted = classifier.predict(list(test_texts)).tolist() if test_texts else []
    return {
        "features": "char_wb 1-3 gram tf-idf",
        "model": "LogisticRegression(C=10)",
        **_scores(test_intents, predicted, seen),
    }


def run_baselines(
    train_records: Sequence[Mapping[str, Any]], test_records: Sequence[Mapping[str, Any]], seed: int = 0
) -> dict[str, Any]:
    """Both baselines on the given test records, plus the accuracy ceiling set by intents absent from training."""
    train_intents = _intents(train_records, "train")
    if not train_intents:
        raise ValueError("baselines need a non-empty train split")
    test_intents = _intents(test_records, "test")
    seen = [record.get("seen") for record in test_records]
    known = set(train_intents)
    reachable = [intent in known for intent in test_intents]
    return {
        "n_train": len(train_intents),
        "n_test": len(test_intents),
        "max_reachable_accuracy": float(np.mean(reachable)) if reachable else 0.0,
        "note": "intent-only classifiers trained on the train split; intents absent from training "
        "(the unseen split) are impossible for them by construction",
        "majority": majority_baseline(train_intents, test_intents, seen),
        "tfidf_logreg": tfidf_baseline(
            _texts(train_records, "train"),
            train_intents,
            _texts(test_records, "test"),
            test_intents,
            seen,
            seed=seed,
        ),
    }
