"""The promotion gate: may this candidate replace the champion?

Two kinds of checks, both computed from the per-record outcomes in each evaluation's predictions.jsonl (re-scored
here, so both models are judged by the same rules whenever they were evaluated):

- absolute thresholds on the candidate: intent, parameter and exact-match accuracy, format errors, recall of every
  seen intent with enough test records (`min_intent_support`), and unseen-intent accuracy whenever the test set
  holds unseen intents;
- paired comparisons with the champion on the very same records (`paired.compare`): every accuracy on the whole
  test set and on each slice (seen, unseen, language, multi-intent, catalog domain), and macro-F1, each with a
  bootstrap interval of the difference; a comparison blocks only when the drop is beyond `max_regression` with
  confidence 1 - alpha (Holm-corrected across the slices of a metric).

The gate also says what the test set can detect: the smallest drop a paired test finds with 80% power at this n
and the observed disagreement between the models; when `max_regression` is below it, the gate warns or, with
`underpowered=block`, fails.

Modes: `enabled` blocks on any failed check; `dry_run` records the failures but passes; `disabled` passes and says
so, still recording the checks. Every failed check and every skipped comparison is listed in `reasons`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from intentops.artifacts import GATE_HTML, GATE_JSON, GATE_MD, METRICS_FILE, PREDICTIONS_FILE
from intentops.catalog import Catalog
from intentops.config import GateConfig
from intentops.evaluation.metrics import Outcome, metrics_from_outcomes, score_all
from intentops.evaluation.paired import ACCURACY_METRICS, OVERALL, Comparison, PairedOutcomes, compare
from intentops.io import atomic_write_text, read_json, read_jsonl, write_json

POWER = 0.8
"""Power at which the gate reports the smallest detectable drop."""
_SEED = 2002
"""Bootstrap seed: the same two evaluations always give the same decision."""
_SUMMARY_KEYS = (
    "n",
    "intent_accuracy",
    "param_accuracy",
    "exact_match",
    "macro_f1",
    "format_error_rate",
    "strict_intent_accuracy",
    "strict_param_accuracy",
)
_OUTCOME_FIELD = {"intent_accuracy": "intent_ok", "param_accuracy": "params_ok", "exact_match": "exact_ok"}


@dataclass(frozen=True)
class Check:
    """One absolute comparison: `ok` is whether `value` is on the right side of `threshold` (`op` says which)."""

    name: str
    value: float | str | None
    threshold: float | str | None
    op: str
    ok: bool

    def describe(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return f"{self.name}: {_fmt(self.value)} {self.op} {_fmt(self.threshold)} -> {verdict}"


@dataclass(frozen=True)
class Detectability:
    """What the test set can see for one accuracy: the smallest drop found with POWER, given the disagreement."""

    metric: str
    n: int
    discordance: float
    detectable_drop: float
    tolerance: float
    power: float = POWER

    @property
    def underpowered(self) -> bool:
        return self.tolerance < self.detectable_drop

    def describe(self) -> str:
        return (
            f"{self.metric}: on {self.n} records (models disagree on {100 * self.discordance:.1f}%) a drop of "
            f"{self.detectable_drop:.4f} is detected with {self.power:.0%} power; max_regression "
            f"{self.tolerance:.4f} is {'below' if self.underpowered else 'within'} it"
        )


@dataclass
class EvaluationResult:
    """One evaluation as the gate needs it: per-record rows (predictions.jsonl) and the evaluation's context."""

    rows: list[dict[str, Any]]
    dataset: dict[str, Any] = field(default_factory=dict)
    decoding: str | None = None
    model: dict[str, Any] | None = None
    source: str = "<memory>"

    @classmethod
    def from_dir(cls, path: str | Path) -> EvaluationResult:
        """Read an evaluation folder (metrics.json + predictions.jsonl, as `evaluate_model` writes it)."""
        folder = Path(path)
        predictions, metrics_path = folder / PREDICTIONS_FILE, folder / METRICS_FILE
        for required in (predictions, metrics_path):
            if not required.is_file():
                raise FileNotFoundError(f"{required}: not found; the gate needs an evaluation folder from `evaluate`")
        metrics = read_json(metrics_path)
        return cls(
            rows=list(read_jsonl(predictions)),
            dataset=metrics.get("dataset") or {},
            decoding=metrics.get("decoding"),
            model=metrics.get("model"),
            source=str(folder),
        )

    def outcomes(self) -> tuple[list[str], list[Outcome]]:
        """(record ids, outcomes) re-scored from the rows; a row without id, gold or call is named in the error."""
        ids: list[str] = []
        records: list[dict[str, Any]] = []
        for index, row in enumerate(self.rows, start=1):
            missing = [key for key in ("id", "gold", "call") if key not in row]
            if missing or not isinstance(row.get("gold"), str):
                raise ValueError(f"{self.source}: prediction row {index} lacks {', '.join(missing) or 'gold'}")
            ids.append(str(row["id"]))
            records.append({"id": row["id"], "output": row["gold"], "lang": row.get("lang"), "seen": row.get("seen")})
        duplicates = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
        if duplicates:
            raise ValueError(f"{self.source}: record ids are not unique ({', '.join(duplicates[:5])})")
        raws = [row.get("raw") if isinstance(row.get("raw"), str) else (row.get("call") or "") for row in self.rows]
        return ids, score_all(records, [row.get("call") for row in self.rows], raws)


@dataclass
class GateDecision:
    """The decision and all of its evidence; `to_dict` is gate.json."""

    passed: bool
    mode: str
    reasons: list[str]
    checks: list[Check]
    candidate: dict[str, Any]
    champion: dict[str, Any] | None = None
    failed: list[str] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    detectability: list[Detectability] = field(default_factory=list)
    alpha: float = 0.05
    # The registry's @champion the decision was made against ("" = none registered yet; None = not read from the
    # registry): registration moves @champion only while it is still this one.
    expected_champion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "mode": self.mode,
            "reasons": self.reasons,
            "failed": self.failed,
            "alpha": self.alpha,
            "checks": [asdict(check) for check in self.checks],
            "comparisons": [{"name": c.name, **asdict(c)} for c in self.comparisons],
            "detectability": [{**asdict(d), "underpowered": d.underpowered} for d in self.detectability],
            "candidate": self.candidate,
            "champion": self.champion,
            "expected_champion": self.expected_champion,
        }


def _as_result(evaluation: EvaluationResult | str | Path) -> EvaluationResult:
    return evaluation if isinstance(evaluation, EvaluationResult) else EvaluationResult.from_dir(evaluation)


def _summary(metrics: Mapping[str, Any], result: EvaluationResult) -> dict[str, Any]:
    summary = {key: metrics.get(key) for key in _SUMMARY_KEYS}
    unseen = (metrics.get("by_seen") or {}).get("unseen")
    if unseen:
        summary["unseen_intent_accuracy"] = unseen.get("intent_accuracy")
    summary.update({"source": result.source, "dataset": result.dataset, "decoding": result.decoding})
    if result.model:
        summary["model"] = result.model
    return summary


def _number(name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise ValueError(f"metric {name}: {value!r} is not a number (metrics.json was edited or corrupted)")


def _at_least(name: str, value: float | None, threshold: float) -> Check:
    value = _number(name, value)
    return Check(name, value, threshold, ">=", value is not None and value >= threshold)


def threshold_checks(metrics: Mapping[str, Any], gate_cfg: GateConfig) -> tuple[list[Check], list[str]]:
    """Absolute checks on the candidate's metrics, plus notes on the ones that do not apply."""
    notes: list[str] = []
    error_rate = _number("format_error_rate", metrics.get("format_error_rate"))
    checks = [
        _at_least("intent_accuracy", metrics.get("intent_accuracy"), gate_cfg.min_intent_accuracy),
        _at_least("param_accuracy", metrics.get("param_accuracy"), gate_cfg.min_param_accuracy),
        _at_least("exact_match", metrics.get("exact_match"), gate_cfg.min_exact_match),
        Check(
            "format_error_rate",
            error_rate,
            gate_cfg.max_format_error_rate,
            "<=",
            error_rate is not None and error_rate <= gate_cfg.max_format_error_rate,
        ),
    ]
    seen = {name: row for name, row in (metrics.get("per_intent") or {}).items() if row.get("seen") is not False}
    supported = {name: row for name, row in seen.items() if row.get("support", 0) >= gate_cfg.min_intent_support}
    thin = sorted(set(seen) - set(supported))
    if thin:
        notes.append(
            f"recall not checked for {len(thin)} seen intent(s) with fewer than {gate_cfg.min_intent_support} test "
            f"records: {', '.join(thin)}"
        )
    checks += [
        _at_least(f"recall[{name}]", row.get("recall"), gate_cfg.min_per_intent_recall)
        for name, row in sorted(supported.items())
    ]
    unseen = (metrics.get("by_seen") or {}).get("unseen")
    if unseen and unseen.get("n"):
        checks.append(_at_least("unseen_intent_accuracy", unseen.get("intent_accuracy"), gate_cfg.min_unseen_accuracy))
    else:
        notes.append("the test set has no unseen intents: unseen-intent accuracy not checked")
    return checks, notes


def _same_test_set(candidate: EvaluationResult, champion: EvaluationResult, cand_ids: list[str], champ_ids: list[str]):
    """Refuse (ValueError) unless both evaluations scored the same records of the same split and dataset."""
    where = f"candidate {candidate.source} vs champion {champion.source}"
    for key in ("hash", "split"):
        mine, theirs = candidate.dataset.get(key), champion.dataset.get(key)
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(f"{where}: dataset {key} {mine!r} != {theirs!r}; the gate compares models on one test set")
    only_cand, only_champ = sorted(set(cand_ids) - set(champ_ids)), sorted(set(champ_ids) - set(cand_ids))
    if only_cand or only_champ:
        raise ValueError(
            f"{where}: not the same test records ({len(only_cand)} only in the candidate's, e.g. {only_cand[:3]}; "
            f"{len(only_champ)} only in the champion's, e.g. {only_champ[:3]})"
        )
    gold_of = {str(row["id"]): row["gold"] for row in champion.rows}
    changed = [str(row["id"]) for row in candidate.rows if gold_of[str(row["id"])] != row["gold"]]
    if changed:
        raise ValueError(f"{where}: records {changed[:3]} have different gold answers; not the same test set")


def paired_outcomes(
    cand_ids: Sequence[str],
    cand: Sequence[Outcome],
    champ_ids: Sequence[str],
    champ: Sequence[Outcome],
    catalog: Catalog | None = None,
) -> PairedOutcomes:
    """Join both models' outcomes by record id and cut the slices: seen/unseen, language, multi-intent, domain."""
    position = {record_id: i for i, record_id in enumerate(champ_ids)}
    champ = [champ[position[record_id]] for record_id in cand_ids]

    def flags(outcomes: Sequence[Outcome], attr: str) -> np.ndarray:
        return np.array([getattr(o, attr) for o in outcomes], dtype=bool)

    slices: dict[str, np.ndarray] = {}
    if any(o.seen is not None for o in cand):
        slices["seen"] = np.array([o.seen is True for o in cand])
        slices["unseen"] = np.array([o.seen is False for o in cand])
    for lang in sorted({o.lang for o in cand if o.lang}):
        slices[f"lang:{lang}"] = np.array([o.lang == lang for o in cand])
    slices["multi_intent"] = flags(cand, "multi_intent")
    if catalog is not None and catalog.domains:
        domain_of = {intent.name: intent.domain for intent in catalog.intents}
        for domain in catalog.domains:
            slices[f"domain:{domain}"] = np.array([domain_of.get(o.gold_intent) == domain for o in cand])
    return PairedOutcomes(
        candidate={metric: flags(cand, attr) for metric, attr in _OUTCOME_FIELD.items()},
        champion={metric: flags(champ, attr) for metric, attr in _OUTCOME_FIELD.items()},
        slices=slices,
        gold_intent=[o.gold_intent for o in cand],
        candidate_intent=[o.pred_intent for o in cand],
        champion_intent=[o.pred_intent for o in champ],
    )


def detectability(comparisons: Sequence[Comparison], tolerance: float) -> list[Detectability]:
    """The smallest detectable drop of every accuracy on the whole test set, from its paired comparison."""
    return [
        Detectability(
            metric=c.metric,
            n=c.n,
            discordance=((c.only_candidate_right or 0) + (c.only_champion_right or 0)) / c.n,
            detectable_drop=float(c.detectable_drop or 0.0),
            tolerance=tolerance,
        )
        for c in comparisons
        if c.slice == OVERALL and c.metric in ACCURACY_METRICS
    ]


def decide(
    candidate: EvaluationResult | str | Path,
    champion: EvaluationResult | str | Path | None,
    gate_cfg: GateConfig,
    catalog: Catalog | None = None,
) -> GateDecision:
    """Decide promotion from the candidate's evaluation and, when there is one, the champion's on the same records.

    Either argument may be an evaluation folder or an `EvaluationResult`; `catalog` (when it has domains) adds
    per-domain slices and orders the intent tables. Raises ValueError when the two evaluations are not on the
    same test set.
    """
    cand_result = _as_result(candidate)
    cand_ids, cand_outcomes = cand_result.outcomes()
    names = catalog.names if catalog is not None else None
    cand_metrics = metrics_from_outcomes(cand_outcomes, catalog_names=names)
    checks, notes = threshold_checks(cand_metrics, gate_cfg)
    comparisons: list[Comparison] = []
    powers: list[Detectability] = []
    champ_summary = None
    if champion is None:
        notes.append("no champion to compare with: regression checks skipped (first promotion)")
    else:
        champ_result = _as_result(champion)
        champ_ids, champ_outcomes = champ_result.outcomes()
        _same_test_set(cand_result, champ_result, cand_ids, champ_ids)
        paired = paired_outcomes(cand_ids, cand_outcomes, champ_ids, champ_outcomes, catalog)
        comparisons = compare(paired, gate_cfg.max_regression, gate_cfg.alpha, gate_cfg.bootstrap_resamples, seed=_SEED)
        powers = detectability(comparisons, gate_cfg.max_regression)
        champ_summary = _summary(metrics_from_outcomes(champ_outcomes, catalog_names=names), champ_result)
        for power in powers:
            if not power.underpowered:
                continue
            if gate_cfg.underpowered == "block":
                checks.append(
                    Check(f"detectable_drop[{power.metric}]", power.tolerance, power.detectable_drop, ">=", False)
                )
            else:
                notes.append(f"warning: the test set is too small for max_regression: {power.describe()}")
    failed = [check.describe() for check in checks if not check.ok]
    failed += [comparison.describe() for comparison in comparisons if comparison.blocked]
    n_checks = len(checks) + len(comparisons)
    if gate_cfg.mode == "enabled":
        passed = not failed
        reasons = failed + notes
        if passed:
            reasons.insert(0, f"all {n_checks} checks passed")
    elif gate_cfg.mode == "dry_run":
        passed = True
        reasons = ["gate in dry_run mode: failures are recorded, promotion is not blocked"]
        reasons += [f"dry_run: would fail: {reason}" for reason in failed] + notes
    else:
        passed = True
        reasons = ["gate disabled (gate.mode=disabled): promotion is not checked; checks recorded for information"]
        reasons += [f"disabled: would fail: {reason}" for reason in failed]
    return GateDecision(
        passed=passed,
        mode=gate_cfg.mode,
        reasons=reasons,
        checks=checks,
        candidate=_summary(cand_metrics, cand_result),
        champion=champ_summary,
        failed=failed,
        comparisons=comparisons,
        detectability=powers,
        alpha=gate_cfg.alpha,
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_gate(decision: GateDecision, out_dir: str | Path) -> Path:
    """Write gate.json, gate.md and gate.html (each atomically) into `out_dir`; returns the gate.json path."""
    from intentops.evaluation.gate_report import render_gate_html, render_gate_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / GATE_MD, render_gate_markdown(decision))
    atomic_write_text(out / GATE_HTML, render_gate_html(decision))
    write_json(out / GATE_JSON, decision.to_dict())
    return out / GATE_JSON
