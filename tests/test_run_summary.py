"""The run summary's champion/challenger verdict and its deployment section, read from constructed run outputs.

Each case writes what a local run leaves (kfp.local executor outputs, the gate's gate.json from a real `decide` over
per-record evaluations) and checks the words and the gate's figures the summary prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentops.config import GateConfig
from intentops.evaluation.gate import EvaluationResult, decide, write_gate
from intentops.run_summary import format_summary, summarize_run

N = 40


def _rows(right: int) -> list[dict]:
    """N test records, the first `right` answered correctly (the rest with the wrong intent)."""
    golds = [("weather_search(北京)", "play_music(jazz)")[i % 2] for i in range(N)]
    wrong = {"weather_search(北京)": "play_music(北京)", "play_music(jazz)": "weather_search(jazz)"}
    return [
        {"id": str(i), "gold": gold, "call": gold if i < right else wrong[gold], "lang": "zh", "seen": True}
        for i, gold in enumerate(golds)
    ]


def _write_task(run_dir: Path, task: str, parameters: dict, artifacts: dict[str, dict]) -> None:
    (run_dir / task).mkdir(parents=True, exist_ok=True)
    body = {
        "parameterValues": parameters,
        "artifacts": {
            name: {"artifacts": [{"name": name, "uri": str(run_dir / task / name), "metadata": meta}]}
            for name, meta in artifacts.items()
        },
    }
    (run_dir / task / "executor_output.json").write_text(json.dumps(body))


def _run(tmp_path: Path, candidate: int, champion: int | None, gate: GateConfig, aliases: str) -> str:
    """A run whose gate judged `candidate` right answers against the champion's (None: no champion yet)."""
    decision = decide(
        EvaluationResult(rows=_rows(candidate)),
        EvaluationResult(rows=_rows(champion)) if champion is not None else None,
        gate,
    )
    if champion is not None:
        decision.champion = {**(decision.champion or {}), "registry": {"name": "intent-detector", "version": "1"}}
    write_gate(decision, tmp_path / "gate" / "decision")
    _write_task(tmp_path, "convert-itag", {}, {"records": {"pipeline_run_id": "run2"}})
    _write_task(tmp_path, "validate-dataset", {}, {"dataset": {}})
    _write_task(tmp_path, "gate", {"Output": decision.passed}, {"decision": {"mode": "enabled", "reasons": "r"}})
    _write_task(
        tmp_path, "register-model", {}, {"registered": {"name": "intent-detector", "version": "2", "aliases": aliases}}
    )
    if decision.passed:
        endpoint = {"target": "local", "endpoint": "http://127.0.0.1:5000", "version": "2", "smoke_valid_share": 1.0}
        _write_task(tmp_path, "deploy-vllm", {}, {"endpoint": endpoint})
    return format_summary(summarize_run(tmp_path, 10.0, "sqlite:////w/mlflow.db"))


def test_first_promotion_says_there_was_no_champion(tmp_path: Path) -> None:
    text = _run(tmp_path, 36, None, GateConfig(min_intent_accuracy=0.8, min_param_accuracy=0.7), "challenger,champion")
    assert "champion/challenger: promoted version 2 to @champion, the first champion" in text
    assert "why: every threshold met; no champion to compare with yet" in text
    assert "intent_accuracy 0.900 >= 0.800 ok" in text and "param_accuracy 0.900 >= 0.700 ok" in text
    assert "paired with champion" not in text


def test_promotion_over_the_champion_shows_the_paired_comparison(tmp_path: Path) -> None:
    text = _run(tmp_path, 36, 34, GateConfig(min_intent_accuracy=0.8, max_regression=0.02), "challenger,champion")
    assert "champion/challenger: promoted version 2 to @champion, replacing champion v1" in text
    assert "no drop against the champion beyond the tolerance" in text
    assert f"paired with champion v1 on the same {N} test records" in text
    assert "a drop beyond 0.020 blocks when p < 0.05" in text and "90% bootstrap interval" in text
    row = next(line.split() for line in text.splitlines() if line.strip().startswith("intent_accuracy "))
    # metric, candidate, champion, difference, [low, high], p, verdict
    assert row[:4] == ["intent_accuracy", "0.900", "0.850", "+0.050"] and row[-1] == "ok"
    low, high = float(row[4].strip("[,")), float(row[5].strip("]"))
    assert low <= 0.05 <= high
    assert "deployment: local http://127.0.0.1:5000 version 2" in text


def test_a_failed_gate_keeps_the_champion_and_says_why_and_what_to_do(tmp_path: Path) -> None:
    gate = GateConfig(min_intent_accuracy=0.8, max_regression=0.02)
    text = _run(tmp_path, 20, 36, gate, "challenger")
    assert "champion/challenger: kept champion v1; version 2 is registered as @challenger only" in text
    assert "why: " in text and "check(s) failed:" in text
    assert "- intent_accuracy: 0.5000 >= 0.8000 -> FAILED" in text
    blocked = next(line.split() for line in text.splitlines() if line.strip().startswith("intent_accuracy "))
    assert blocked[:4] == ["intent_accuracy", "0.500", "0.900", "-0.400"] and blocked[-1] == "BLOCKED"
    assert "deployment: skipped - the gate did not pass" in text
    assert f"{tmp_path / 'gate' / 'decision'}/gate.md" in text and "gate__mode=dry_run" in text
    assert "the champion v1 is unchanged; serve it: intentops deploy --target local --alias champion" in text
    assert "predictions" not in text.replace("(no predictions)", "")


@pytest.mark.parametrize("passed", [True, False])
def test_the_gate_line_keeps_notes_and_leaves_failures_to_the_verdict(tmp_path: Path, passed: bool) -> None:
    gate = GateConfig(min_intent_accuracy=0.8 if passed else 0.95)
    text = _run(tmp_path, 36, None, gate, "challenger,champion" if passed else "challenger")
    gate_line = next(line for line in text.splitlines() if line.startswith("gate (enabled)"))
    assert "no champion to compare with" in gate_line
    assert ("FAILED" in gate_line) is not passed and "0.9500" not in gate_line
