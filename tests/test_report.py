"""Reports render (Markdown, self-contained HTML, confusion-matrix PNG) and the KFP payloads are well formed."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from intentops.artifacts import CONFUSION_PNG
from intentops.evaluation import load_split
from intentops.evaluation.baselines import run_baselines
from intentops.evaluation.metrics import INVALID_LABEL, compute_metrics
from intentops.evaluation.report import (
    classification_metrics_payload,
    plot_confusion_matrix,
    render_html,
    render_markdown,
    sample_errors,
    scalar_metrics,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluation(small_dataset_dir: Path) -> tuple[list[dict], list[dict], dict]:
    """Gold answers with a few planted mistakes: a wrong intent, a wrong argument, a broken format."""
    records = load_split(small_dataset_dir, "test")
    calls: list[str | None] = [r["output"] for r in records]
    calls[0] = "volume_down()"  # wrong intent (gold is play_music)
    calls[1] = "play_music(<b>x|y</b>)"  # right intent, wrong argument (markup and a Markdown pipe in it)
    calls[2] = None  # format broken
    metrics = compute_metrics(
        records,
        calls,
        catalog_names=sorted({r["intent"] for r in records}),
        latencies_s=[0.1] * len(records),
        elapsed_s=2.0,
    )
    metrics["decoding"] = "generate"
    metrics["dataset"] = {"hash": "abc", "split": "test"}
    metrics["baselines"] = run_baselines(load_split(small_dataset_dir, "train"), records)
    predictions = []
    for record, call in zip(records, calls, strict=True):
        ok = call == record["output"]
        predictions.append({"text": record["text"], "call": call, "raw": call or "play_music(", "params_ok": ok})
    return records, predictions, metrics


def test_payload_for_kfp_classification_metrics(evaluation) -> None:
    records, _, metrics = evaluation
    payload = classification_metrics_payload(metrics)
    labels = payload["categories"]
    assert labels[-1] == INVALID_LABEL and "play_music" in labels
    assert all(len(row) == len(labels) for row in payload["matrix"])
    assert sum(map(sum, payload["matrix"])) == len(records)
    gold, predicted = labels.index("play_music"), labels.index("volume_down")
    assert payload["matrix"][gold][predicted] == 1


def test_scalar_metrics_are_flat_numbers(evaluation) -> None:
    _, _, metrics = evaluation
    flat = scalar_metrics(metrics)
    assert all(isinstance(v, float) for v in flat.values())
    assert all(re.fullmatch(r"[a-z0-9_]+", key) for key in flat)
    assert flat["intent_accuracy"] == pytest.approx(metrics["intent_accuracy"])
    assert flat["unseen_intent_accuracy"] == pytest.approx(metrics["by_seen"]["unseen"]["intent_accuracy"])
    assert flat["latency_throughput_per_s"] == pytest.approx(len(evaluation[0]) / 2.0)
    assert "baseline_tfidf_logreg_intent_accuracy" in flat and "zh_param_accuracy" in flat


def test_markdown_report(evaluation) -> None:
    records, predictions, metrics = evaluation
    errors = sample_errors(records, predictions)
    assert len(errors) == 3 and errors[0]["call"] is None  # format errors first
    text = render_markdown(metrics, errors)
    assert text.startswith("# Evaluation report")
    assert f"| Intent accuracy (normalised) | {100 * metrics['intent_accuracy']:.1f}% |" in text
    assert f"| Parameter accuracy (strict string rule) | {100 * metrics['strict_param_accuracy']:.1f}% |" in text
    assert "## Baselines (same test records)" in text and "| majority class |" in text
    assert "## Seen vs unseen intents" in text and "| unseen |" in text
    assert "| play_music | volume_down | 1 |" in text  # worst confusions
    assert "play_music(<b>x\\|y</b>)" in text  # a pipe in a cell cannot break the table
    assert "![confusion matrix](confusion_matrix.png)" in text


def test_html_report_with_inline_png(evaluation, tmp_path: Path) -> None:
    records, predictions, metrics = evaluation
    png = plot_confusion_matrix(metrics, tmp_path / CONFUSION_PNG)
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    page = render_html(metrics, sample_errors(records, predictions), png_path=png)
    assert page.startswith("<!DOCTYPE html>")
    per_intent = re.search(r"<table id='per-intent'>(.*?)</table>", page, re.S)
    assert per_intent is not None
    assert per_intent.group(1).count("<tr>") == len(metrics["per_intent"]) + 1  # header + one row per intent
    assert "<td>find_nearby</td><td>no</td>" in per_intent.group(1)
    inline = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert inline is not None and base64.b64decode(inline.group(1)) == data
    assert "<b>x|y</b>" not in page  # model output is escaped, never raw HTML
    assert "play_music(&lt;b&gt;x|y&lt;/b&gt;)" in page


def test_payload_rejects_inconsistent_matrix() -> None:
    with pytest.raises(ValueError, match="not 2x2"):
        classification_metrics_payload({"confusion": {"labels": ["a", "b"], "matrix": [[1, 0]]}})
