"""The promotion gate's report for people (Markdown, HTML) and its flat numbers for KFP `Metrics` and MLflow.

Same table renderers as the evaluation report (`intentops.evaluation.report`), so both read alike in the UI.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from intentops.evaluation.report import Table, html_head, html_tables, markdown_tables, md_cell, num, pct

if TYPE_CHECKING:
    from intentops.evaluation.gate import GateDecision


def _gate_tables(decision: GateDecision) -> list[Table]:
    """(title, header, rows) of the gate report: comparisons with the champion, detectability, absolute checks."""
    tables: list[Table] = []
    if decision.comparisons:
        level = f"{100 * (1 - 2 * decision.alpha):.0f}%"
        tables.append(
            (
                "Candidate vs champion (same test records)",
                [
                    "metric",
                    "slice",
                    "n",
                    "candidate",
                    "champion",
                    "difference",
                    f"{level} interval",
                    "allowed drop",
                    "McNemar p",
                    "p (slices: Holm)",
                    "verdict",
                ],
                [
                    [
                        c.metric,
                        c.slice,
                        str(c.n),
                        pct(c.candidate),
                        pct(c.champion),
                        f"{100 * c.diff:+.1f} pt",
                        f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}] pt",
                        f"{100 * c.tolerance:.1f} pt",
                        num(c.mcnemar_p),
                        num(c.p_adjusted),
                        "**BLOCKED**" if c.blocked else "ok",
                    ]
                    for c in decision.comparisons
                ],
            )
        )
    if decision.detectability:
        tables.append(
            (
                "What this test set can detect",
                ["metric", "n", "models disagree on", "drop detected with 80% power", "allowed drop", "verdict"],
                [
                    [
                        d.metric,
                        str(d.n),
                        pct(d.discordance),
                        f"{100 * d.detectable_drop:.1f} pt",
                        f"{100 * d.tolerance:.1f} pt",
                        "allowed drop below what the test set can see" if d.underpowered else "ok",
                    ]
                    for d in decision.detectability
                ],
            )
        )
    tables.append(
        (
            "Thresholds (candidate)",
            ["check", "value", "threshold", "verdict"],
            [
                [c.name, num(c.value, 4), f"{c.op} {num(c.threshold, 4)}", "ok" if c.ok else "**FAILED**"]
                for c in decision.checks
            ],
        )
    )
    keys = [k for k in decision.candidate if isinstance(decision.candidate.get(k), int | float)]
    tables.append(
        (
            "Headline",
            ["metric", "candidate", "champion"],
            [[k, _value(decision.candidate.get(k)), _value((decision.champion or {}).get(k))] for k in keys],
        )
    )
    return tables


_GATE_METHOD = (
    "Each comparison pairs the two models on the same records. The interval is a two-sided {level} bootstrap "
    "interval of the difference (records resampled); a comparison blocks when its upper end is still a drop beyond "
    "the allowed one (one-sided {one_sided}) and, for accuracies, the exact McNemar test agrees the candidate is "
    "worse. The whole test set is tested at level {alpha}; the slices of each metric are Holm-corrected together."
)


def _gate_method(decision: GateDecision) -> str:
    return _GATE_METHOD.format(
        level=f"{100 * (1 - 2 * decision.alpha):.0f}%",
        one_sided=f"{100 * (1 - decision.alpha):.0f}%",
        alpha=decision.alpha,
    )


def _value(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return num(value, 4)


def render_gate_markdown(decision: GateDecision) -> str:
    """The gate report as Markdown (also the KFP Markdown output): verdict, reasons, then every table."""
    verdict = "PASSED" if decision.passed else "FAILED"
    lines = [f"# Promotion gate: {verdict}", "", f"Mode: `{decision.mode}`", "", "## Reasons", ""]
    lines += [f"- {md_cell(reason)}" for reason in decision.reasons] or ["- none"]
    lines.append("")
    if decision.comparisons:
        lines += [_gate_method(decision), ""]
    return "\n".join(lines + markdown_tables(_gate_tables(decision)))


def render_gate_html(decision: GateDecision) -> str:
    """The gate report as one self-contained HTML page."""
    verdict = "PASSED" if decision.passed else "FAILED"
    parts = [*html_head(f"Promotion gate: {verdict}"), f"<p>Mode: {html.escape(decision.mode)}</p><ul>"]
    parts += [f"<li>{html.escape(reason)}</li>" for reason in decision.reasons]
    parts.append("</ul>")
    if decision.comparisons:
        parts.append(f"<p>{html.escape(_gate_method(decision))}</p>")
    parts += html_tables(_gate_tables(decision))
    parts.append("</body></html>")
    return "\n".join(parts)


def gate_scalar_metrics(decision: GateDecision) -> dict[str, float]:
    """Flat numbers of the decision for KFP `Metrics` and MLflow: verdict, and per comparison its difference,
    interval and adjusted p-value (`gate_<metric>_<slice>_diff`...), and the detectable drops."""
    flat = {"gate_passed": float(decision.passed), "gate_failed_checks": float(len(decision.failed))}
    for c in decision.comparisons:
        stem = "gate_" + re.sub(r"[^A-Za-z0-9_]+", "_", f"{c.metric}_{c.slice}")
        flat.update(
            {
                f"{stem}_diff": c.diff,
                f"{stem}_ci_low": c.ci_low,
                f"{stem}_ci_high": c.ci_high,
                f"{stem}_p_holm": c.p_adjusted,
                f"{stem}_blocked": float(c.blocked),
            }
        )
    for d in decision.detectability:
        flat[f"gate_{d.metric}_detectable_drop"] = d.detectable_drop
    return flat
