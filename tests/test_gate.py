"""The promotion gate: pass, every kind of failure, regression against the champion, dry_run and disabled."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from intentops.config import GateConfig
from intentops.evaluation.gate import decide, write_gate


def _metrics(
    intent: float = 0.92,
    params: float = 0.85,
    format_error: float = 0.01,
    recalls: dict[str, float] | None = None,
    unseen: float | None = 0.5,
    dataset_hash: str = "abc123",
) -> dict:
    recalls = recalls or {"weather_search": 0.9, "play_music": 0.8}
    metrics = {
        "n": 50,
        "intent_accuracy": intent,
        "param_accuracy": params,
        "macro_f1": 0.9,
        "exact_match": 0.8,
        "format_error_rate": format_error,
        "per_intent": {
            name: {"precision": 1.0, "recall": r, "f1": 0.9, "support": 10, "seen": True} for name, r in recalls.items()
        },
        "by_seen": {"seen": {"n": 40, "intent_accuracy": intent}},
        "dataset": {"hash": dataset_hash, "split": "test", "n": 50},
        "decoding": "generate",
    }
    if unseen is not None:
        metrics["by_seen"]["unseen"] = {"n": 10, "intent_accuracy": unseen}
        metrics["per_intent"]["find_nearby"] = {"precision": 1, "recall": 0.0, "f1": 0, "support": 10, "seen": False}
    return metrics


CFG = GateConfig(
    min_intent_accuracy=0.8,
    min_param_accuracy=0.7,
    min_per_intent_recall=0.5,
    max_format_error_rate=0.05,
    min_unseen_accuracy=0.3,
    max_regression=0.01,
)


def _failed_names(decision) -> set[str]:
    return {check.name for check in decision.checks if not check.ok}


def test_good_candidate_without_champion_passes() -> None:
    decision = decide(_metrics(), None, CFG)
    assert decision.passed and decision.mode == "enabled"
    assert _failed_names(decision) == set()
    assert any("no champion" in reason for reason in decision.reasons)
    # the unseen intent's zero recall is judged by the unseen-accuracy check, not the per-seen-intent recall one
    assert {c.name for c in decision.checks} >= {
        "recall[weather_search]",
        "recall[play_music]",
        "unseen_intent_accuracy",
    }
    assert "recall[find_nearby]" not in {c.name for c in decision.checks}


@pytest.mark.parametrize(
    ("metrics", "failed"),
    [
        (_metrics(intent=0.7), {"intent_accuracy"}),
        (_metrics(params=0.6), {"param_accuracy"}),
        (_metrics(format_error=0.2), {"format_error_rate"}),
        (_metrics(recalls={"weather_search": 0.9, "play_music": 0.4}), {"recall[play_music]"}),
        (_metrics(unseen=0.1), {"unseen_intent_accuracy"}),
    ],
)
def test_each_threshold_can_fail_the_gate(metrics: dict, failed: set[str]) -> None:
    decision = decide(metrics, None, CFG)
    assert not decision.passed
    assert _failed_names(decision) == failed
    name = next(iter(failed))
    assert any(reason.startswith(name) and "FAILED" in reason for reason in decision.reasons)


def test_no_unseen_split_skips_that_check_and_says_so() -> None:
    decision = decide(_metrics(unseen=None), None, CFG)
    assert decision.passed
    assert "unseen_intent_accuracy" not in {c.name for c in decision.checks}
    assert any("no unseen intents" in reason for reason in decision.reasons)


def test_regression_against_champion() -> None:
    champion = _metrics(intent=0.95, params=0.85)
    worse = decide(_metrics(intent=0.93, params=0.85), champion, CFG)
    assert not worse.passed
    assert _failed_names(worse) == {"intent_accuracy_vs_champion"}
    within_tolerance = decide(_metrics(intent=0.945, params=0.845), champion, CFG)
    assert within_tolerance.passed
    assert within_tolerance.champion["intent_accuracy"] == 0.95


def test_champion_on_another_test_set_is_refused() -> None:
    decision = decide(_metrics(), _metrics(dataset_hash="other"), CFG)
    assert not decision.passed
    assert _failed_names(decision) == {"same_test_set"}
    other_size = copy.deepcopy(_metrics())
    other_size["n"] = 49
    assert _failed_names(decide(_metrics(), other_size, CFG)) == {"same_test_set"}


def test_dry_run_records_failures_but_passes() -> None:
    decision = decide(_metrics(intent=0.5), _metrics(), GateConfig(**{**CFG.model_dump(), "mode": "dry_run"}))
    assert decision.passed and decision.mode == "dry_run"
    assert "intent_accuracy" in _failed_names(decision)
    assert any(r.startswith("dry_run: would fail: intent_accuracy") for r in decision.reasons)


def test_disabled_passes_and_says_so() -> None:
    decision = decide(_metrics(intent=0.5), None, GateConfig(**{**CFG.model_dump(), "mode": "disabled"}))
    assert decision.passed and decision.mode == "disabled"
    assert "disabled" in decision.reasons[0]


def test_write_gate_files(tmp_path: Path) -> None:
    decision = decide(_metrics(params=0.6), _metrics(), CFG)
    path = write_gate(decision, tmp_path / "gate")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) >= {"passed", "mode", "reasons", "checks", "candidate", "champion"}
    assert data["passed"] is False
    failed = [c for c in data["checks"] if not c["ok"]]
    assert {c["name"] for c in failed} == {"param_accuracy", "param_accuracy_vs_champion"}
    assert all({"name", "value", "threshold", "ok"} <= set(c) for c in data["checks"])
    markdown = (tmp_path / "gate" / "gate.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Promotion gate: FAILED")
    assert "| param_accuracy | 0.6000 | >= 0.7000 | **no** |" in markdown
    assert not list((tmp_path / "gate").glob(".*tmp"))
