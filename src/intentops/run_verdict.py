"""The champion/challenger verdict of one run in words: promoted or kept, and the gate's figures that decided it.

Everything comes from two records the run leaves: the gate decision (gate.json, `GateDecision.to_dict`: absolute
checks, paired comparisons with the champion on the same test records, what the test set can detect) and the
registration's metadata (version, aliases). Nothing is recomputed here, so the summary says exactly what the gate
decided, with the gate's own numbers.
"""

from __future__ import annotations

from typing import Any

# The accuracies the absolute-threshold line shows (per-intent recall is summarised in one count).
_HEADLINE_CHECKS = ("intent_accuracy", "param_accuracy", "exact_match", "format_error_rate", "unseen_intent_accuracy")
_OVERALL = "overall"
# How the gate starts its note that max_regression is finer than the test set can see (evaluation/gate.py).
UNDERPOWERED_NOTE = "warning: the test set is too small for max_regression"


def champion_version(decision: dict[str, Any]) -> str:
    """The registered champion the gate compared with ("" when there was none)."""
    return str(((decision.get("champion") or {}).get("registry") or {}).get("version") or "")


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def verdict_headline(decision: dict[str, Any], registered: dict[str, Any], passed: bool | None) -> str:
    """One line: promoted (over whom) or kept (which champion), and what happened to the candidate."""
    version = str(registered.get("version") or "?")
    aliases = str(registered.get("aliases") or "").split(",")
    champion = champion_version(decision)
    mode = decision.get("mode", "enabled")
    note = f" (gate mode {mode}: failures are recorded, promotion is not blocked)" if mode != "enabled" else ""
    if passed and "champion" in aliases:
        if champion:
            return f"champion/challenger: promoted version {version} to @champion, replacing champion v{champion}{note}"
        return f"champion/challenger: promoted version {version} to @champion, the first champion{note}"
    if passed:
        where = f"version {version} registered as @challenger" if registered else "nothing registered"
        return f"champion/challenger: the gate passed but @champion did not move ({where})"
    candidate = f"version {version} is registered as @challenger only" if registered else "nothing was registered"
    if champion:
        return f"champion/challenger: kept champion v{champion}; {candidate}"
    return f"champion/challenger: no champion yet; {candidate}"


def threshold_line(decision: dict[str, Any]) -> str:
    """The candidate's absolute checks: the headline metrics with their thresholds, recall as a count."""
    checks = decision.get("checks") or []
    parts = [
        f"{check['name']} {_number(check.get('value'))} {check.get('op', '')} {_number(check.get('threshold'))} "
        f"{'ok' if check.get('ok') else 'FAILED'}"
        for check in checks
        if check.get("name") in _HEADLINE_CHECKS
    ]
    recall = [check for check in checks if str(check.get("name", "")).startswith("recall[")]
    if recall:
        low = [check["name"][len("recall[") : -1] for check in recall if not check.get("ok")]
        threshold = _number(recall[0].get("threshold"))
        parts.append(
            f"recall >= {threshold} for {len(recall) - len(low)}/{len(recall)} intents"
            + (f" (below: {', '.join(low)})" if low else "")
        )
    return "  thresholds: " + "; ".join(parts) if parts else ""


def comparison_lines(decision: dict[str, Any]) -> list[str]:
    """The paired comparisons with the champion: every whole-test-set metric, and any slice that blocked."""
    comparisons = decision.get("comparisons") or []
    shown = [c for c in comparisons if c.get("slice") == _OVERALL or c.get("blocked")]
    if not shown:
        return []
    alpha = float(decision.get("alpha", 0.05))
    tolerance = float(shown[0].get("tolerance", 0.0))
    n = int(shown[0].get("n", 0))
    lines = [
        f"  paired with champion v{champion_version(decision) or '?'} on the same {n} test records "
        f"(difference = candidate - champion, {1 - 2 * alpha:.0%} bootstrap interval; a drop beyond "
        f"{tolerance:.3f} blocks when p < {alpha:g}):",
        f"    {'metric':<34}{'candidate':>10}{'champion':>10}{'difference':>12}  {'interval':<18}{'p':>7}  verdict",
    ]
    for c in shown:
        name = c["metric"] if c.get("slice") == _OVERALL else f"{c['metric']}[{c['slice']}]"
        interval = f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        lines.append(
            f"    {name:<34}{c['candidate']:>10.3f}{c['champion']:>10.3f}{c['diff']:>+12.3f}  {interval:<18}"
            f"{c.get('p_adjusted', c.get('p_value', 1.0)):>7.3f}  {'BLOCKED' if c.get('blocked') else 'ok'}"
        )
    weak = [power for power in decision.get("detectability") or [] if power.get("underpowered")]
    if weak:
        drops = ", ".join(f"{power['detectable_drop']:.3f} ({power['metric']})" for power in weak)
        lines.append(
            f"    note: on {weak[0]['n']} records the paired test finds drops (80% power) only from {drops}, more than "
            f"the {weak[0]['tolerance']:.3f} allowed: a larger test set would judge finer"
        )
    return lines


def verdict_lines(decision: dict[str, Any], registered: dict[str, Any], passed: bool | None) -> list[str]:
    """The champion/challenger section of the run summary; [] when the gate left no decision."""
    if not decision:
        return []
    lines = [verdict_headline(decision, registered, passed)]
    failed = [str(reason) for reason in decision.get("failed") or []]
    blocked = [c for c in decision.get("comparisons") or [] if c.get("blocked")]
    if failed:
        lines.append(f"  why: {len(failed)} gate check(s) failed:")
        # Blocked comparisons are rows of the paired table below; the other failures are listed as the gate wrote them.
        lines += [f"    - {reason}" for reason in failed if not reason.endswith("-> BLOCKED")]
        if blocked:
            lines.append(
                f"    - {len(blocked)} paired comparison(s) with the champion show a drop beyond the tolerance"
            )
    elif decision.get("champion"):
        lines.append("  why: every threshold met, and no drop against the champion beyond the tolerance")
    else:
        lines.append("  why: every threshold met; no champion to compare with yet")
    threshold = threshold_line(decision)
    if threshold:
        lines.append(threshold)
    lines += comparison_lines(decision)
    return lines
