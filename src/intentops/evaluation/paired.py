"""Paired statistics for comparing two models on the very same test records.

Both models answer every record, so their per-record outcomes are paired: resampling records (not models) keeps
the pairing, and the noise of the difference is set by the records on which the models disagree (the discordance
rate), which is far smaller than the noise of either accuracy on its own.

- `bootstrap_accuracy_diffs`: the paired bootstrap of an accuracy difference. Resampling n records with
  replacement only changes how many "candidate right, champion wrong" and "candidate wrong, champion right"
  records are drawn, so the resampled counts are drawn from one multinomial: exactly the record-resampling
  bootstrap, in O(resamples) instead of O(resamples x n).
- `bootstrap_macro_f1_diffs`: the paired bootstrap of a macro-F1 difference, the same resampled records for both
  models, per-class counts of a whole block of resamples taken with one `bincount`.
- `worse_p_value`: one-sided exact McNemar test (statsmodels) that the candidate is wrong more often.
- `minimum_detectable_drop`: the smallest accuracy drop a test set of n records detects with the requested power.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

_BLOCK = 256  # resamples per block of the macro-F1 bootstrap (bounds memory at about 256 x n integers)


def bootstrap_accuracy_diffs(
    only_candidate: np.ndarray, only_champion: np.ndarray, n: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Resampled accuracy differences (candidate - champion), shape (n_resamples, *shape of the counts).

    Each comparison is given by its discordant counts (records only the candidate gets right, records only the
    champion gets right) and its number of records; any number of comparisons is resampled in one draw.
    """
    a, b, total = (np.asarray(x, dtype=float) for x in np.broadcast_arrays(only_candidate, only_champion, n))
    if np.any(total < 1) or np.any(a + b > total) or np.any(a < 0) or np.any(b < 0):
        raise ValueError("discordant counts must be non-negative and sum to at most the number of records")
    # One multinomial (only-candidate, only-champion, rest) drawn as two binomials, which numpy vectorises.
    shape = (n_resamples, *total.shape)
    drawn_a = rng.binomial(total.astype(np.int64), a / total, size=shape)
    rest_b = np.divide(b, total - a, out=np.zeros_like(b), where=total > a)
    drawn_b = rng.binomial((total - drawn_a).astype(np.int64), np.clip(rest_b, 0.0, 1.0))
    return (drawn_a - drawn_b) / total


def macro_f1_from_counts(true_pos: np.ndarray, gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Macro-F1 over the classes present in the gold labels, for rows of (weighted) per-class counts.

    Same definition as `metrics.macro_f1` (scikit-learn, labels = gold classes, zero_division=0).
    """
    denominator = gold + predicted
    f1 = np.divide(2.0 * true_pos, denominator, out=np.zeros_like(denominator, dtype=float), where=denominator > 0)
    present = gold > 0
    n_present = present.sum(axis=-1)
    return np.divide((f1 * present).sum(axis=-1), n_present, out=np.zeros(n_present.shape), where=n_present > 0)


def bootstrap_macro_f1_diffs(
    gold: Sequence[str],
    candidate_pred: Sequence[str],
    champion_pred: Sequence[str],
    n_resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Resampled differences (candidate - champion) of macro-F1 on the same resampled records."""
    labels = sorted(set(gold) | set(candidate_pred) | set(champion_pred))
    index = {label: i for i, label in enumerate(labels)}
    n, k = len(gold), len(labels)
    if n == 0 or not (len(candidate_pred) == len(champion_pred) == n):
        raise ValueError("paired macro-F1 needs gold and both predictions for the same, non-empty records")
    gold_ids = np.array([index[g] for g in gold])
    cand_ids = np.array([index[p] for p in candidate_pred])
    champ_ids = np.array([index[p] for p in champion_pred])
    diffs = np.empty(n_resamples)
    for start in range(0, n_resamples, _BLOCK):
        size = min(_BLOCK, n_resamples - start)
        rows = rng.integers(0, n, size=(size, n))

        gold_counts = _class_counts(gold_ids[rows], k)
        f1 = [
            macro_f1_from_counts(
                _class_counts(gold_ids[rows], k, (ids == gold_ids)[rows]), gold_counts, _class_counts(ids[rows], k)
            )
            for ids in (cand_ids, champ_ids)
        ]
        diffs[start : start + size] = f1[0] - f1[1]
    return diffs


def _class_counts(ids: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-class (weighted) counts of every row of `ids` (resamples x records) with one bincount."""
    size = ids.shape[0]
    flat = (np.arange(size)[:, None] * k + ids).ravel()
    w = weights.ravel().astype(float) if weights is not None else None
    return np.bincount(flat, weights=w, minlength=size * k).reshape(size, k)


def bootstrap_p_value(diffs: np.ndarray, tolerance: float) -> np.ndarray:
    """One-sided p-values (over the first axis of resamples) of "the drop is at most `tolerance`": the share of resampled drops within tolerance.

    Inverts the percentile interval: the p-value is below alpha exactly when the alpha-quantile of the resampled
    drop (the one-sided lower confidence bound of the drop) is above the tolerance. The +1s keep it above zero.
    """
    drops = -np.asarray(diffs)
    return (np.sum(drops <= tolerance + 1e-12, axis=0) + 1) / (drops.shape[0] + 1)


@lru_cache(maxsize=4096)
def worse_p_value(only_candidate: int, only_champion: int) -> float:
    """One-sided exact McNemar p-value that the candidate is worse, from the two discordant counts.

    statsmodels' exact test is two-sided (twice the binomial tail of the smaller discordant count); when the
    champion wins more discordant records, half of it is the one-sided tail. Otherwise there is no evidence the
    candidate is worse and the p-value is 1. Only the discordant counts enter the test, hence the cache.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    if only_champion <= only_candidate:
        return 1.0
    two_sided = float(mcnemar([[0, only_candidate], [only_champion, 0]], exact=True).pvalue)
    return min(1.0, two_sided / 2)


def minimum_detectable_drop(n: int, discordance: float, alpha: float, power: float = 0.8) -> float:
    """Smallest accuracy drop that a one-sided paired test at level `alpha` detects with `power` on n records.

    Uses statsmodels' paired t-test power (`TTestPower`) on the per-record differences (+1, 0, -1): the solved
    standardised effect times their standard deviation, sqrt(discordance), where discordance is the observed share
    of records on which exactly one model is right. With no discordant record observed, one in n is assumed (the
    smallest discordance the test set could show).
    """
    if n < 2:
        return 1.0
    rate = max(float(discordance), 1.0 / n)
    return float(min(1.0, _standardised_effect(n, alpha, power) * np.sqrt(rate)))


@lru_cache(maxsize=256)
def _standardised_effect(n: int, alpha: float, power: float) -> float:
    """The solved effect size depends only on (n, alpha, power); solving is iterative, so it is cached."""
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="larger"))


def holm(p_values: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Holm step-down over one family of tests (statsmodels): (rejected, adjusted p-values)."""
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        return [], []
    rejected, adjusted, _, _ = multipletests(list(p_values), alpha=alpha, method="holm")
    return [bool(r) for r in rejected], [float(p) for p in adjusted]


ACCURACY_METRICS = ("intent_accuracy", "param_accuracy", "exact_match")
"""Per-record accuracies compared on every slice; macro-F1 is compared on the whole test set."""
OVERALL = "overall"


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of a metric on a slice of the test set: candidate - champion, with its evidence.

    `ci_low`/`ci_high` is the two-sided (1 - 2 alpha) bootstrap interval of the difference, so `ci_high` is the
    one-sided (1 - alpha) bound: the comparison blocks when even that bound is a drop beyond `tolerance`. The
    whole-test-set comparison is judged at level alpha; slice comparisons by their Holm-adjusted p-value across
    the slices of the metric (`p_adjusted`; equal to `p_value` for the whole set). For accuracies the exact
    McNemar test must also say the candidate is worse (the larger of the two p-values is used), which guards small
    slices where a bootstrap of a few discordant records is too confident.
    """

    metric: str
    slice: str
    n: int
    candidate: float
    champion: float
    diff: float
    ci_low: float
    ci_high: float
    tolerance: float
    p_value: float
    p_adjusted: float
    blocked: bool
    mcnemar_p: float | None = None
    only_candidate_right: int | None = None
    only_champion_right: int | None = None
    detectable_drop: float | None = None

    @property
    def name(self) -> str:
        return f"{self.metric}[{self.slice}]_vs_champion"

    def describe(self) -> str:
        verdict = "BLOCKED" if self.blocked else "ok"
        return (
            f"{self.name}: {self.candidate:.4f} vs {self.champion:.4f}, difference {self.diff:+.4f} "
            f"[{self.ci_low:+.4f}, {self.ci_high:+.4f}], tolerance -{self.tolerance:.4f}, "
            f"p={self.p_adjusted:.4f} -> {verdict}"
        )


@dataclass
class PairedOutcomes:
    """Both models' per-record outcomes on the same records, in the same order, and the slices to compare on.

    `candidate`/`champion` map each metric of ACCURACY_METRICS to a boolean per record; `slices` maps a slice name
    to a boolean mask (OVERALL is implied); the intent arrays (gold, and each model's first predicted intent)
    feed the macro-F1 comparison and may be None to skip it.
    """

    candidate: dict[str, np.ndarray]
    champion: dict[str, np.ndarray]
    slices: dict[str, np.ndarray] = field(default_factory=dict)
    gold_intent: Sequence[str] | None = None
    candidate_intent: Sequence[str] | None = None
    champion_intent: Sequence[str] | None = None

    @property
    def n(self) -> int:
        return int(next(iter(self.candidate.values())).size)


def family_verdicts(p_values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(blocked, adjusted p-values) of one metric's comparisons: the first (whole test set) at level alpha, the
    rest (its slices) as one Holm family at level alpha."""
    p = np.asarray(p_values, dtype=float)
    rejected, adjusted = holm(list(p[1:]), alpha)
    return np.array([p[0] < alpha, *rejected], dtype=bool), np.array([p[0], *adjusted], dtype=float)


def compare(
    paired: PairedOutcomes, tolerance: float, alpha: float, n_resamples: int, seed: int = 0
) -> list[Comparison]:
    """Every paired comparison the gate makes, Holm-corrected per metric across slices.

    For each accuracy the whole test set is the primary comparison at level alpha, and the slices (seen, unseen,
    languages, multi-intent, domains) form one Holm family at level alpha; macro-F1 is compared on the whole set.
    Resampling uses one generator seeded with `seed`, so a decision is reproducible.
    """
    rng = np.random.default_rng(seed)
    everything = np.ones(paired.n, dtype=bool)
    slices = {OVERALL: everything, **{name: mask for name, mask in paired.slices.items() if mask.any()}}
    keys = [(metric, name) for metric in ACCURACY_METRICS if metric in paired.candidate for name in slices]
    cand = [paired.candidate[metric][slices[name]] for metric, name in keys]
    champ = [paired.champion[metric][slices[name]] for metric, name in keys]
    only_cand = np.array([np.sum(c & ~h) for c, h in zip(cand, champ, strict=True)])
    only_champ = np.array([np.sum(~c & h) for c, h in zip(cand, champ, strict=True)])
    sizes = np.array([c.size for c in cand])
    diffs = bootstrap_accuracy_diffs(only_cand, only_champ, sizes, n_resamples, rng)
    low, high = np.quantile(diffs, [alpha, 1 - alpha], axis=0)
    mcnemar_p = np.array([worse_p_value(int(a), int(b)) for a, b in zip(only_cand, only_champ, strict=True)])
    p_values = np.maximum(bootstrap_p_value(diffs, tolerance), mcnemar_p)
    metrics = [metric for metric, _ in keys]
    blocked, adjusted = np.zeros(len(keys), dtype=bool), p_values.copy()
    for metric in dict.fromkeys(metrics):
        rows = [i for i, m in enumerate(metrics) if m == metric]
        blocked[rows], adjusted[rows] = family_verdicts(p_values[rows], alpha)
    results = [
        Comparison(
            metric=metric,
            slice=name,
            n=int(sizes[i]),
            candidate=float(cand[i].mean()),
            champion=float(champ[i].mean()),
            diff=float(cand[i].mean() - champ[i].mean()),
            ci_low=float(low[i]),
            ci_high=float(high[i]),
            tolerance=tolerance,
            p_value=float(p_values[i]),
            p_adjusted=float(adjusted[i]),
            blocked=bool(blocked[i]),
            mcnemar_p=float(mcnemar_p[i]),
            only_candidate_right=int(only_cand[i]),
            only_champion_right=int(only_champ[i]),
            detectable_drop=minimum_detectable_drop(int(sizes[i]), (only_cand[i] + only_champ[i]) / sizes[i], alpha)
            if name == OVERALL
            else None,
        )
        for i, (metric, name) in enumerate(keys)
    ]
    if paired.gold_intent is not None and paired.candidate_intent is not None and paired.champion_intent is not None:
        results.append(_compare_macro_f1(paired, tolerance, alpha, n_resamples, rng))
    return results


def _compare_macro_f1(
    paired: PairedOutcomes, tolerance: float, alpha: float, n_resamples: int, rng: np.random.Generator
) -> Comparison:
    gold, cand, champ = list(paired.gold_intent), list(paired.candidate_intent), list(paired.champion_intent)
    labels = sorted(set(gold) | set(cand) | set(champ))
    eye = np.eye(len(labels))
    index = {label: i for i, label in enumerate(labels)}
    gold_hot = eye[[index[g] for g in gold]]

    def point(pred: list[str]) -> float:
        pred_hot = eye[[index[p] for p in pred]]
        return float(macro_f1_from_counts((gold_hot * pred_hot).sum(0), gold_hot.sum(0), pred_hot.sum(0)))

    diffs = bootstrap_macro_f1_diffs(gold, cand, champ, n_resamples, rng)
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    p_value = float(bootstrap_p_value(diffs, tolerance))
    cand_value, champ_value = point(cand), point(champ)
    return Comparison(
        metric="macro_f1",
        slice=OVERALL,
        n=len(gold),
        candidate=cand_value,
        champion=champ_value,
        diff=cand_value - champ_value,
        ci_low=float(low),
        ci_high=float(high),
        tolerance=tolerance,
        p_value=p_value,
        p_adjusted=p_value,
        blocked=p_value < alpha,
    )
