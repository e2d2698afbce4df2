"""The promotion gate: may this candidate replace the champion?

A candidate passes when every absolute threshold holds (intent accuracy, parameter accuracy, recall of every seen
intent, format-error rate, unseen-intent accuracy when the test set has unseen intents) and it does not regress
against the champion by more than `max_regression` on intent or parameter accuracy. The champion must have been
evaluated on the same test set (same dataset hash, split and size) in the same run; comparing numbers from
different test sets is refused as a failed check, not silently accepted.

Modes: `enabled` blocks on any failed check; `dry_run` records the failures but passes (for rolling out a gate);
`disabled` passes and says so, still recording the checks for information. Every failed check and every skipped
comparison is listed in `reasons`, so the decision can be read without opening the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from intentops.artifacts import GATE_JSON, GATE_MD
from intentops.config import GateConfig
from intentops.io import atomic_write_text, write_json

_SUMMARY_KEYS = ("intent_accuracy", "param_accuracy", "macro_f1", "format_error_rate", "exact_match", "n")


@dataclass(frozen=True)
class Check:
    """One comparison: `ok` is whether `value` is on the right side of `threshold` (`op` says which)."""

    name: str
    value: float | str | None
    threshold: float | str | None
    op: str
    ok: bool

    def describe(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return f"{self.name}: {_fmt(self.value)} {self.op} {_fmt(self.threshold)} -> {verdict}"


@dataclass
class GateDecision:
    passed: bool
    mode: str
    reasons: list[str]
    checks: list[Check]
    candidate: dict[str, Any]
    champion: dict[str, Any] | None = None
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "mode": self.mode,
            "reasons": self.reasons,
            "failed": self.failed,
            "checks": [asdict(check) for check in self.checks],
            "candidate": self.candidate,
            "champion": self.champion,
        }


def _summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    summary = {key: metrics.get(key) for key in _SUMMARY_KEYS}
    for key in ("model", "dataset", "decoding"):
        if key in metrics:
            summary[key] = metrics[key]
    unseen = metrics.get("by_seen", {}).get("unseen")
    if unseen:
        summary["unseen_intent_accuracy"] = unseen.get("intent_accuracy")
    return summary


def _at_least(name: str, value: float | None, threshold: float) -> Check:
    return Check(name, value, threshold, ">=", value is not None and value >= threshold)


def _at_most(name: str, value: float | None, threshold: float) -> Check:
    return Check(name, value, threshold, "<=", value is not None and value <= threshold)


def _test_set(metrics: Mapping[str, Any]) -> dict[str, Any]:
    dataset = metrics.get("dataset", {}) or {}
    return {"hash": dataset.get("hash"), "split": dataset.get("split"), "n": metrics.get("n")}


def threshold_checks(candidate: Mapping[str, Any], gate_cfg: GateConfig) -> tuple[list[Check], list[str]]:
    """Absolute checks on the candidate's metrics, plus notes on the ones that do not apply."""
    notes: list[str] = []
    checks = [
        _at_least("intent_accuracy", candidate.get("intent_accuracy"), gate_cfg.min_intent_accuracy),
        _at_least("param_accuracy", candidate.get("param_accuracy"), gate_cfg.min_param_accuracy),
        _at_most("format_error_rate", candidate.get("format_error_rate"), gate_cfg.max_format_error_rate),
    ]
    seen_intents = {
        name: row for name, row in (candidate.get("per_intent") or {}).items() if row.get("seen") is not False
    }
    if not seen_intents:
        notes.append("no per-intent table for seen intents: per-intent recall not checked")
    checks += [
        _at_least(f"recall[{name}]", row.get("recall"), gate_cfg.min_per_intent_recall)
        for name, row in sorted(seen_intents.items())
    ]
    unseen = (candidate.get("by_seen") or {}).get("unseen")
    if unseen and unseen.get("n"):
        checks.append(_at_least("unseen_intent_accuracy", unseen.get("intent_accuracy"), gate_cfg.min_unseen_accuracy))
    else:
        notes.append("the test set has no unseen intents: unseen-intent accuracy not checked")
    return checks, notes


def regression_checks(candidate: Mapping[str, Any], champion: Mapping[str, Any], gate_cfg: GateConfig) -> list[Check]:
    """No drop beyond `max_regression` on intent and parameter accuracy, on the very same test set."""
    cand_set, champ_set = _test_set(candidate), _test_set(champion)
    same = cand_set == champ_set and cand_set["hash"] is not None
    checks = [Check("same_test_set", str(cand_set), str(champ_set), "==", same)]
    if not same:
        return checks
    for key in ("intent_accuracy", "param_accuracy"):
        champ_value = champion.get(key)
        cand_value = candidate.get(key)
        floor = champ_value - gate_cfg.max_regression if champ_value is not None else None
        checks.append(
            Check(
                f"{key}_vs_champion",
                cand_value,
                floor,
                ">=",
                cand_value is not None and floor is not None and cand_value >= floor - 1e-12,
            )
        )
    return checks


def decide(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, gate_cfg: GateConfig) -> GateDecision:
    """Decide promotion from the candidate's metrics and, when there is one, the champion's on the same test set."""
    checks, notes = threshold_checks(candidate, gate_cfg)
    if champion is None:
        notes.append("no champion to compare with: regression checks skipped (first promotion)")
    else:
        checks += regression_checks(candidate, champion, gate_cfg)
    failed = [check.describe() for check in checks if not check.ok]
    if gate_cfg.mode == "enabled":
        passed = not failed
        reasons = failed + notes
    elif gate_cfg.mode == "dry_run":
        passed = True
        reasons = [f"dry_run: would fail: {reason}" for reason in failed] + notes
        reasons.insert(0, "gate in dry_run mode: failures are recorded, promotion is not blocked")
    else:
        passed = True
        reasons = ["gate disabled (gate.mode=disabled): promotion is not checked; checks recorded for information"]
        reasons += [f"disabled: would fail: {reason}" for reason in failed]
    if gate_cfg.mode == "enabled" and passed:
        reasons.insert(0, f"all {len(checks)} checks passed")
    return GateDecision(
        passed=passed,
        mode=gate_cfg.mode,
        reasons=reasons,
        checks=checks,
        candidate=_summary(candidate),
        champion=_summary(champion) if champion is not None else None,
        failed=failed,
    )


def render_gate_markdown(decision: GateDecision) -> str:
    """Human-readable decision: verdict, reasons, then every check."""
    verdict = "PASSED" if decision.passed else "FAILED"
    lines = [f"# Promotion gate: {verdict}", "", f"Mode: `{decision.mode}`", "", "## Reasons", ""]
    lines += [f"- {reason}" for reason in decision.reasons] or ["- none"]
    lines += ["", "## Checks", "", "| check | value | threshold | ok |", "|---|---|---|---|"]
    for check in decision.checks:
        ok = "yes" if check.ok else "**no**"
        lines.append(f"| {check.name} | {_fmt(check.value)} | {check.op} {_fmt(check.threshold)} | {ok} |")
    lines += ["", "## Candidate vs champion", "", "| metric | candidate | champion |", "|---|---|---|"]
    for key in (*_SUMMARY_KEYS, "unseen_intent_accuracy"):
        cand = decision.candidate.get(key)
        champ = decision.champion.get(key) if decision.champion else None
        if cand is None and champ is None:
            continue
        lines.append(f"| {key} | {_fmt(cand)} | {_fmt(champ)} |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_gate(decision: GateDecision, out_dir: str | Path) -> Path:
    """Write gate.json and gate.md (each atomically) into `out_dir`; returns the gate.json path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / GATE_MD, render_gate_markdown(decision))
    write_json(out / GATE_JSON, decision.to_dict())
    return out / GATE_JSON
