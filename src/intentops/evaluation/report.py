"""Evaluation reports for people (Markdown, HTML, confusion-matrix PNG) and for pipelines (KFP-ready payloads).

The HTML embeds the confusion matrix as a data URI so one file is a complete KFP HTML artifact; the Markdown links
the PNG next to it. `scalar_metrics` flattens the headline numbers for `Metrics.log_metric` / `mlflow.log_metrics`,
and `classification_metrics_payload` is exactly what `ClassificationMetrics.log_confusion_matrix` takes.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from intentops.artifacts import CONFUSION_PNG
from intentops.io import atomic_path

_HEADLINE = (
    ("intent_accuracy", "Intent accuracy (normalised)"),
    ("param_accuracy", "Parameter accuracy (normalised)"),
    ("strict_intent_accuracy", "Intent accuracy (strict string rule)"),
    ("strict_param_accuracy", "Parameter accuracy (strict string rule)"),
    ("macro_f1", "Macro-F1"),
    ("exact_match", "Exact match (all calls)"),
    ("format_valid_rate", "Format validity"),
    ("unknown_intent_rate", "Unknown-intent rate"),
)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flat numeric metrics (names safe for MLflow and KFP): headline, splits, latency, baselines."""
    flat: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int | float):
            flat[name] = float(value)

    for key in (
        "n",
        "intent_accuracy",
        "param_accuracy",
        "strict_intent_accuracy",
        "strict_param_accuracy",
        "macro_f1",
        "exact_match",
        "format_valid_rate",
        "format_error_rate",
        "unknown_intent_rate",
    ):
        put(key, metrics.get(key))
    put("multi_intent_n", metrics.get("multi_intent", {}).get("n"))
    put("multi_intent_exact_match", metrics.get("multi_intent", {}).get("exact_match"))
    for group in ("by_seen", "by_lang"):
        for name, block in (metrics.get(group) or {}).items():
            for key in ("n", "intent_accuracy", "param_accuracy"):
                put(f"{name}_{key}", block.get(key))
    for key, value in (metrics.get("latency") or {}).items():
        put(f"latency_{key}", value)
    for key, value in (metrics.get("confidence") or {}).items():
        put(f"confidence_{key}", value)
    baselines = metrics.get("baselines") or {}
    for name in ("majority", "tfidf_logreg"):
        for key in ("intent_accuracy", "macro_f1"):
            put(f"baseline_{name}_{key}", (baselines.get(name) or {}).get(key))
    return flat


def classification_metrics_payload(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """`{"categories": [...], "matrix": [[...]]}` for KFP `ClassificationMetrics.log_confusion_matrix(**payload)`."""
    confusion = metrics.get("confusion") or {}
    labels = list(confusion.get("labels", []))
    matrix = [[int(v) for v in row] for row in confusion.get("matrix", [])]
    if len(matrix) != len(labels) or any(len(row) != len(labels) for row in matrix):
        raise ValueError(f"confusion matrix is not {len(labels)}x{len(labels)}; metrics are inconsistent")
    return {"categories": labels, "matrix": matrix}


def plot_confusion_matrix(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Row-normalised confusion matrix (counts annotated when the matrix is small) as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    payload = classification_metrics_payload(metrics)
    labels, counts = payload["categories"], np.asarray(payload["matrix"], dtype=float)
    size = max(4.0, 0.35 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    try:
        if counts.size:
            rows = counts.sum(axis=1, keepdims=True)
            normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
            image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
            if len(labels) <= 25:
                for i in range(len(labels)):
                    for j in range(len(labels)):
                        if counts[i, j]:
                            colour = "white" if normalised[i, j] > 0.6 else "black"
                            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title("Intent confusion matrix")
        fig.tight_layout()
        target = Path(path)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return target


def pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _tables(
    metrics: Mapping[str, Any], errors: Sequence[Mapping[str, Any]]
) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table; shared by the Markdown and HTML renderers."""
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    tables.append(("Headline", ["metric", "value"], [[label, pct(metrics.get(key))] for key, label in _HEADLINE]))
    latency = metrics.get("latency") or {}
    tables.append(
        (
            "Speed",
            ["decoding", "p50 latency (s)", "p95 latency (s)", "throughput (utt/s)", "wall time (s)"],
            [
                [
                    str(metrics.get("decoding", "-")),
                    num(latency.get("p50_s")),
                    num(latency.get("p95_s")),
                    num(latency.get("throughput_per_s"), 1),
                    num(latency.get("elapsed_s"), 1),
                ]
            ],
        )
    )
    baselines = metrics.get("baselines")
    if baselines:
        rows = [
            [
                "this model",
                pct(metrics.get("intent_accuracy")),
                num(metrics.get("macro_f1")),
                pct((metrics.get("by_seen", {}).get("unseen") or {}).get("intent_accuracy")),
            ]
        ]
        for name, label in (("tfidf_logreg", "TF-IDF + logistic regression"), ("majority", "majority class")):
            block = baselines.get(name) or {}
            rows.append(
                [
                    label,
                    pct(block.get("intent_accuracy")),
                    num(block.get("macro_f1")),
                    pct(block.get("unseen_intent_accuracy")),
                ]
            )
        tables.append(
            ("Baselines (same test records)", ["model", "intent accuracy", "macro-F1", "unseen-intent accuracy"], rows)
        )
    for group, title in (("by_seen", "Seen vs unseen intents"), ("by_lang", "By language")):
        block = metrics.get(group) or {}
        if block:
            tables.append(
                (
                    title,
                    ["split", "n", "intent accuracy", "parameter accuracy", "format validity"],
                    [
                        [
                            name,
                            str(row["n"]),
                            pct(row["intent_accuracy"]),
                            pct(row["param_accuracy"]),
                            pct(row["format_valid_rate"]),
                        ]
                        for name, row in block.items()
                    ],
                )
            )
    multi = metrics.get("multi_intent") or {}
    if multi.get("n"):
        tables.append(("Multi-intent", ["n", "exact match"], [[str(multi["n"]), pct(multi["exact_match"])]]))
    per_intent = metrics.get("per_intent") or {}
    if per_intent:
        tables.append(
            (
                "Per intent",
                ["intent", "seen", "support", "precision", "recall", "F1"],
                [
                    [
                        name,
                        {True: "yes", False: "no"}.get(row.get("seen"), "-"),
                        str(row["support"]),
                        num(row["precision"]),
                        num(row["recall"]),
                        num(row["f1"]),
                    ]
                    for name, row in sorted(per_intent.items(), key=lambda item: (item[1]["f1"], item[0]))
                ],
            )
        )
    worst = metrics.get("worst_confusions") or []
    if worst:
        tables.append(
            (
                "Worst confusions",
                ["gold", "predicted", "count"],
                [[w["gold"], w["predicted"], str(w["count"])] for w in worst],
            )
        )
    if errors:
        tables.append(
            (
                "Sample errors",
                ["text", "gold", "predicted", "raw completion"],
                [
                    [
                        str(e.get("text", "")),
                        str(e.get("gold", "")),
                        str(e.get("call") or "(format error)"),
                        str(e.get("raw", ""))[:120],
                    ]
                    for e in errors
                ],
            )
        )
    return tables


def md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


Table = tuple[str, list[str], list[list[str]]]


def markdown_tables(tables: Sequence[Table]) -> list[str]:
    lines: list[str] = []
    for name, header, rows in tables:
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(md_cell(cell) for cell in row) + " |" for row in rows]
        lines.append("")
    return lines


def html_tables(tables: Sequence[Table]) -> list[str]:
    parts: list[str] = []
    for name, header, rows in tables:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        parts.append(f"<h2>{html.escape(name)}</h2><table id='{html.escape(slug)}'><thead><tr>")
        parts.append("".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
        parts.append("</tbody></table>")
    return parts


def html_head(title: str) -> list[str]:
    return [
        "<!DOCTYPE html>",
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
        "margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
        "th{background:#f3f3f3}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]


def render_markdown(
    metrics: Mapping[str, Any], errors: Sequence[Mapping[str, Any]] = (), title: str = "Evaluation report"
) -> str:
    """The report as Markdown (tables + a link to the confusion-matrix PNG next to it)."""
    lines = [f"# {title}", "", _context_line(metrics), ""]
    lines += markdown_tables(_tables(metrics, errors))
    lines += ["## Confusion matrix", "", f"![confusion matrix]({CONFUSION_PNG})", ""]
    return "\n".join(lines)


def render_html(
    metrics: Mapping[str, Any],
    errors: Sequence[Mapping[str, Any]] = (),
    png_path: str | Path | None = None,
    title: str = "Evaluation report",
) -> str:
    """A self-contained HTML page (the confusion-matrix PNG inlined) for KFP's HTML visualisation and MLflow."""
    parts = [*html_head(title), f"<p>{html.escape(_context_line(metrics))}</p>"]
    parts += html_tables(_tables(metrics, errors))
    if png_path is not None and Path(png_path).exists():
        encoded = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
        parts.append(f"<h2>Confusion matrix</h2><img alt='confusion matrix' src='data:image/png;base64,{encoded}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _context_line(metrics: Mapping[str, Any]) -> str:
    dataset = metrics.get("dataset") or {}
    model = metrics.get("model") or {}
    bits = [f"{metrics.get('n', 0)} test records"]
    if dataset:
        bits.append(f"split {dataset.get('split', '?')} of dataset {dataset.get('hash') or '?'}")
    if model:
        bits.append(f"model {model.get('stage', '?')} ({model.get('base_model', '?')})")
    if metrics.get("decoding"):
        bits.append(f"decoding {metrics['decoding']}")
    return "; ".join(bits)


def sample_errors(
    records: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]], limit: int = 20
) -> list[dict[str, Any]]:
    """Up to `limit` wrong predictions (intent or parameters), format errors first, for the report."""
    rows = [
        {
            "text": r.get("text"),
            "gold": r.get("output"),
            "call": p.get("call"),
            "raw": p.get("raw"),
            "format_ok": p.get("call") is not None,
        }
        for r, p in zip(records, predictions, strict=True)
        if not p.get("params_ok")
    ]
    rows.sort(key=lambda row: row["format_ok"])
    return rows[:limit]
