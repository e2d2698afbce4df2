"""Paired statistics against hand-computed values, and the gate's error rates in a seeded simulation."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from sklearn.metrics import f1_score

from bench.gate_simulation import block_rate as _block_rate
from intentops.evaluation.paired import (
    bootstrap_accuracy_diffs,
    bootstrap_macro_f1_diffs,
    bootstrap_p_value,
    family_verdicts,
    macro_f1_from_counts,
    minimum_detectable_drop,
    worse_p_value,
)


def test_accuracy_bootstrap_matches_the_record_resampling_distribution() -> None:
    # 400 records: 10 only the candidate gets right, 30 only the champion: difference -0.05
    diffs = bootstrap_accuracy_diffs(np.array(10), np.array(30), np.array(400), 20000, np.random.default_rng(0))
    assert diffs.shape == (20000,)
    assert diffs.mean() == pytest.approx(-0.05, abs=0.001)
    # variance of a mean of per-record differences in {+1, 0, -1}: (discordance - difference^2) / n
    assert diffs.std() == pytest.approx(np.sqrt((0.1 - 0.05**2) / 400), rel=0.03)
    batched = bootstrap_accuracy_diffs(
        np.array([0, 5]), np.array([0, 5]), np.array([50, 50]), 7, np.random.default_rng(1)
    )
    assert batched.shape == (7, 2) and np.all(batched[:, 0] == 0)
    with pytest.raises(ValueError, match="at most the number of records"):
        bootstrap_accuracy_diffs(np.array(30), np.array(30), np.array(50), 10, np.random.default_rng(0))


def test_bootstrap_p_value_by_hand() -> None:
    # drops 0.05, 0.02, 0, -0.01: two are within a 0.01 tolerance -> (2 + 1) / (4 + 1)
    assert bootstrap_p_value(np.array([-0.05, -0.02, 0.0, 0.01]), 0.01) == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("only_candidate", "only_champion", "expected"),
    [
        (0, 10, 0.5**10),  # every discordant record favours the champion
        (1, 3, 5 / 16),  # P(X >= 3), X ~ Binomial(4, 1/2)
        (3, 1, 1.0),  # the candidate wins more: no evidence it is worse
        (2, 2, 1.0),
    ],
)
def test_one_sided_mcnemar_by_hand(only_candidate: int, only_champion: int, expected: float) -> None:
    assert worse_p_value(only_candidate, only_champion) == pytest.approx(expected)


def test_family_verdicts_primary_at_alpha_and_holm_on_slices() -> None:
    blocked, adjusted = family_verdicts(np.array([0.04, 0.01, 0.02, 0.5]), 0.05)
    assert blocked.tolist() == [True, True, True, False]
    # Holm over the three slices: 0.01 * 3, then max(0.03, 0.02 * 2), then 0.5 * 1
    assert adjusted.tolist() == pytest.approx([0.04, 0.03, 0.04, 0.5])


def test_macro_f1_counts_agree_with_scikit_learn() -> None:
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    labels = ["a", "b", "c"]
    hot = np.eye(3)
    g, p = hot[[labels.index(x) for x in gold]], hot[[labels.index(x) for x in pred]]
    ours = macro_f1_from_counts((g * p).sum(0), g.sum(0), p.sum(0))
    # a: P 1/2 R 1/2 F 1/2; b: P 2/3 R 1 F 4/5; c: 0 -> (0.5 + 0.8 + 0) / 3
    assert float(ours) == pytest.approx(1.3 / 3)
    assert float(ours) == pytest.approx(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))
    same = bootstrap_macro_f1_diffs(gold, pred, pred, 50, np.random.default_rng(0))
    assert np.all(same == 0)
    worse = bootstrap_macro_f1_diffs(gold, ["x"] * 5, gold, 200, np.random.default_rng(0))
    assert np.all(worse == -1.0)  # a model that is never right against a perfect one, on any resample


def test_minimum_detectable_drop_near_the_normal_formula() -> None:
    # normal approximation of the paired test: (z_0.95 + z_0.80) * sqrt(discordance / n)
    approx = (1.6449 + 0.8416) * np.sqrt(0.06 / 400)
    assert minimum_detectable_drop(400, 0.06, 0.05) == pytest.approx(approx, rel=0.01)
    assert minimum_detectable_drop(400, 0.0, 0.05) == pytest.approx((1.6449 + 0.8416) * np.sqrt(1 / 400) / 20, rel=0.01)
    assert minimum_detectable_drop(100, 0.06, 0.05) > minimum_detectable_drop(400, 0.06, 0.05)


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap():
    """statsmodels' Holm runs gc.collect() on every call; freezing the test process's heap keeps that cheap."""
    gc.freeze()
    yield
    gc.unfreeze()


def test_simulated_equal_models_are_rarely_blocked() -> None:
    rate, _ = _block_rate(seed=11, trials=200, drop=0.0)
    assert rate <= 0.05


def test_simulated_five_point_regression_is_blocked() -> None:
    rate, names = _block_rate(seed=12, trials=200, drop=0.05)
    assert rate >= 0.8
    assert "intent_accuracy[overall]_vs_champion" in names


def test_simulated_regression_on_unseen_intents_only_is_blocked() -> None:
    rate, names = _block_rate(seed=13, trials=100, drop=0.0, unseen_drop=0.25)
    assert rate >= 0.9
    assert "intent_accuracy[unseen]_vs_champion" in names
