"""The promotion gate on per-record outcomes: thresholds, paired comparisons with the champion, refusals, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentops.artifacts import GATE_HTML, GATE_MD, METRICS_FILE, PREDICTIONS_FILE
from intentops.catalog import Catalog, Intent
from intentops.config import GateConfig
from intentops.evaluation.gate import EvaluationResult, decide, write_gate
from intentops.evaluation.gate_report import gate_scalar_metrics

CFG = GateConfig(
    min_intent_accuracy=0.8,
    min_param_accuracy=0.7,
    min_per_intent_recall=0.5,
    min_intent_support=5,
    max_format_error_rate=0.05,
    min_unseen_accuracy=0.3,
    max_regression=0.01,
    bootstrap_resamples=1000,
)


def _row(i: int, gold: str, call: str | None, *, seen: bool = True, lang: str = "en") -> dict:
    return {"id": f"r{i:03d}", "gold": gold, "call": call, "raw": call or "garbage", "lang": lang, "seen": seen}


def _evaluation(wrong: set[int] = frozenset(), n: int = 100, unseen: int = 20, **dataset) -> EvaluationResult:
    """n records: `unseen` of intent find_nearby (unseen), the rest alternating weather_search / play_music.

    Records whose index is in `wrong` are answered with the wrong intent.
    """
    rows = []
    for i in range(n):
        if i < unseen:
            gold, other, seen = "find_nearby(cafe)", "play_music(cafe)", False
        elif i % 2:
            gold, other, seen = "weather_search(杭州)", "play_music(杭州)", True
        else:
            gold, other, seen = "play_music(周杰伦)", "weather_search(周杰伦)", True
        rows.append(_row(i, gold, other if i in wrong else gold, seen=seen, lang="zh" if i % 3 else "en"))
    return EvaluationResult(rows=rows, dataset={"hash": "abc", "split": "test", **dataset}, source="mem")


def _failed(decision) -> set[str]:
    return {c.name for c in decision.checks if not c.ok} | {c.name for c in decision.comparisons if c.blocked}


def test_good_candidate_without_champion_passes() -> None:
    decision = decide(_evaluation(wrong={30, 41}), None, CFG)
    assert decision.passed and decision.mode == "enabled"
    assert _failed(decision) == set()
    assert decision.candidate["intent_accuracy"] == pytest.approx(0.98)
    assert any("no champion" in reason for reason in decision.reasons)
    names = {c.name for c in decision.checks}
    assert {"recall[weather_search]", "recall[play_music]", "unseen_intent_accuracy", "exact_match"} <= names
    # the unseen intent is judged by unseen-intent accuracy, not by the per-seen-intent recall check
    assert "recall[find_nearby]" not in names


@pytest.mark.parametrize(
    ("wrong", "failed"),
    [
        (set(range(20, 45)), {"intent_accuracy"}),  # 75/100; each seen intent keeps recall >= 0.675
        (set(range(0, 18)), {"unseen_intent_accuracy"}),  # unseen 2/20, overall 82/100
        (set(range(21, 65, 2)), {"intent_accuracy", "recall[weather_search]"}),  # weather_search recall 18/40
    ],
)
def test_each_threshold_can_fail_the_gate(wrong: set[int], failed: set[str]) -> None:
    decision = decide(_evaluation(wrong=wrong), None, CFG)
    assert not decision.passed
    assert _failed(decision) == failed
    assert all(any(r.startswith(name) and "FAILED" in r for r in decision.reasons) for name in failed)


def test_format_errors_parameters_and_exact_match_floor() -> None:
    evaluation = _evaluation()
    for row in evaluation.rows[50:56]:
        row["call"] = None
    assert _failed(decide(evaluation, None, CFG)) == {"format_error_rate"}
    wrong_argument = _evaluation()
    for row in wrong_argument.rows[21:83:2]:  # 31 weather_search answers with the right intent, wrong city
        row["call"] = "weather_search(北京)"
    decision = decide(wrong_argument, None, CFG)
    assert (decision.candidate["intent_accuracy"], decision.candidate["param_accuracy"]) == (1.0, 0.69)
    assert _failed(decision) == {"param_accuracy"}
    # a swapped argument order keeps the parameter set (param_accuracy) but is not an exact call list
    swapped = _evaluation()
    for row in swapped.rows[20:40]:
        row["gold"] = row["call"] = "set_alarm(7点,明天)"
        row["call"] = "set_alarm(明天,7点)"
    decision = decide(swapped, None, GateConfig(**{**CFG.model_dump(), "min_exact_match": 0.9}))
    assert decision.candidate["param_accuracy"] == 1.0 and decision.candidate["exact_match"] == pytest.approx(0.8)
    assert _failed(decision) == {"exact_match"}


def test_recall_is_checked_only_above_the_minimum_support() -> None:
    evaluation = _evaluation()
    for row in evaluation.rows[20:23]:  # a rare intent with 3 test records, all wrong
        row["gold"], row["call"] = "music_next()", "music_pause()"
    decision = decide(evaluation, None, GateConfig(**{**CFG.model_dump(), "min_intent_accuracy": 0.5}))
    assert "recall[music_next]" not in {c.name for c in decision.checks}
    assert any("fewer than 5 test records: music_next" in r for r in decision.reasons)
    strict = decide(evaluation, None, GateConfig(**{**CFG.model_dump(), "min_intent_support": 3}))
    assert "recall[music_next]" in _failed(strict)


def test_unseen_accuracy_is_gated_by_default_and_skipped_without_unseen_intents() -> None:
    weak_unseen = _evaluation(wrong=set(range(12)))  # unseen accuracy 8/20 = 0.4
    assert GateConfig().min_unseen_accuracy > 0
    assert "unseen_intent_accuracy" in _failed(decide(weak_unseen, None, GateConfig(min_intent_accuracy=0.5)))
    decision = decide(_evaluation(unseen=0), None, CFG)
    assert decision.passed and "unseen_intent_accuracy" not in {c.name for c in decision.checks}
    assert any("no unseen intents" in reason for reason in decision.reasons)


def test_equal_champion_passes_with_zero_differences() -> None:
    decision = decide(_evaluation(wrong={30}), _evaluation(wrong={30}), CFG)
    assert decision.passed
    overall = {c.metric: c for c in decision.comparisons if c.slice == "overall"}
    assert set(overall) == {"intent_accuracy", "param_accuracy", "exact_match", "macro_f1"}
    assert all(c.diff == 0 and c.ci_low == c.ci_high == 0 and not c.blocked for c in overall.values())
    slices = {c.slice for c in decision.comparisons}
    assert slices == {"overall", "seen", "unseen", "lang:en", "lang:zh"}  # no multi-intent record: no such slice


def test_a_clear_regression_is_blocked_with_hand_computed_evidence() -> None:
    # the champion is right everywhere; the candidate misses 10 seen records: difference -0.10 on all 100
    decision = decide(_evaluation(wrong=set(range(40, 50))), _evaluation(), CFG)
    assert not decision.passed
    overall = next(c for c in decision.comparisons if c.metric == "intent_accuracy" and c.slice == "overall")
    assert (overall.candidate, overall.champion, overall.diff) == pytest.approx((0.9, 1.0, -0.1))
    assert (overall.only_candidate_right, overall.only_champion_right) == (0, 10)
    assert overall.mcnemar_p == pytest.approx(0.5**10)  # one-sided exact McNemar: all 10 discordant go one way
    assert overall.ci_high < -overall.tolerance and overall.blocked
    assert "intent_accuracy[overall]_vs_champion" in _failed(decision)
    # the unseen slice did not change: not blocked
    unseen = next(c for c in decision.comparisons if c.metric == "intent_accuracy" and c.slice == "unseen")
    assert unseen.diff == 0 and not unseen.blocked


def test_a_candidate_worse_only_on_unseen_intents_is_blocked() -> None:
    champion = _evaluation(n=200, unseen=40, wrong={50})
    candidate = _evaluation(n=200, unseen=40, wrong=set(range(14)) | {50})  # unseen 26/40, seen unchanged
    decision = decide(candidate, champion, CFG)
    assert decision.candidate["unseen_intent_accuracy"] == pytest.approx(0.65)  # above min_unseen_accuracy
    blocked = {c.name for c in decision.comparisons if c.blocked}
    assert "intent_accuracy[unseen]_vs_champion" in blocked
    assert not any("[seen]" in name for name in blocked)
    assert not decision.passed


def test_evaluations_on_different_test_sets_are_refused() -> None:
    with pytest.raises(ValueError, match=r"dataset hash 'abc' != 'other'"):
        decide(_evaluation(), _evaluation(hash="other"), CFG)
    with pytest.raises(ValueError, match=r"not the same test records \(0 only in the candidate's.*1 only in the champ"):
        decide(_evaluation(n=99), _evaluation(n=100), CFG)
    changed = _evaluation()
    changed.rows[5]["gold"] = "play_music(other)"
    with pytest.raises(ValueError, match=r"records \['r005'\] have different gold answers"):
        decide(_evaluation(), changed, CFG)
    duplicated = _evaluation()
    duplicated.rows[1]["id"] = "r000"
    with pytest.raises(ValueError, match="record ids are not unique"):
        decide(duplicated, None, CFG)


def test_records_are_joined_by_id_not_position() -> None:
    champion = _evaluation(wrong={3})
    champion.rows.reverse()
    decision = decide(_evaluation(wrong={3}), champion, CFG)
    assert all(c.diff == 0 for c in decision.comparisons)


def test_domain_slices_come_from_the_catalog() -> None:
    catalog = Catalog(
        intents=(
            Intent(name="weather_search", description="w", domain="weather"),
            Intent(name="play_music", description="m", domain="media"),
            Intent(name="find_nearby", description="f", domain="maps"),
        )
    )
    decision = decide(_evaluation(), _evaluation(), CFG, catalog)
    by_slice = {c.slice: c.n for c in decision.comparisons if c.metric == "intent_accuracy"}
    assert (by_slice["domain:weather"], by_slice["domain:media"], by_slice["domain:maps"]) == (40, 40, 20)


def test_detectable_drop_warns_or_blocks_when_the_tolerance_is_below_it() -> None:
    candidate, champion = _evaluation(wrong={30, 41, 52}), _evaluation(wrong={33, 44, 55})
    warned = decide(candidate, champion, CFG)
    power = next(d for d in warned.detectability if d.metric == "intent_accuracy")
    assert power.n == 100 and power.discordance == pytest.approx(0.06)
    assert power.detectable_drop > 0.01 and power.underpowered
    assert warned.passed and any(r.startswith("warning: the test set is too small") for r in warned.reasons)
    blocked = decide(candidate, champion, GateConfig(**{**CFG.model_dump(), "underpowered": "block"}))
    assert not blocked.passed and "detectable_drop[intent_accuracy]" in _failed(blocked)


def test_dry_run_records_failures_but_passes() -> None:
    cfg = GateConfig(**{**CFG.model_dump(), "mode": "dry_run"})
    decision = decide(_evaluation(wrong=set(range(20, 60))), _evaluation(), cfg)
    assert decision.passed and decision.mode == "dry_run"
    assert "intent_accuracy" in _failed(decision)
    assert any(r.startswith("dry_run: would fail: intent_accuracy[overall]_vs_champion") for r in decision.reasons)


def test_disabled_passes_and_says_so() -> None:
    decision = decide(_evaluation(wrong=set(range(50))), None, GateConfig(**{**CFG.model_dump(), "mode": "disabled"}))
    assert decision.passed and decision.mode == "disabled"
    assert "disabled" in decision.reasons[0]


def test_write_gate_files_and_kfp_scalars(tmp_path: Path) -> None:
    decision = decide(_evaluation(wrong=set(range(40, 50))), _evaluation(), CFG)
    path = write_gate(decision, tmp_path / "gate")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) >= {"passed", "mode", "reasons", "checks", "comparisons", "detectability", "candidate", "champion"}
    assert data["passed"] is False
    row = next(c for c in data["comparisons"] if c["name"] == "intent_accuracy[overall]_vs_champion")
    assert {"candidate", "champion", "diff", "ci_low", "ci_high", "p_adjusted", "mcnemar_p", "blocked"} <= set(row)
    assert (row["champion"], row["diff"], row["blocked"]) == (1.0, pytest.approx(-0.1), True)
    markdown = (tmp_path / "gate" / GATE_MD).read_text(encoding="utf-8")
    assert markdown.startswith("# Promotion gate: FAILED")
    assert "| intent_accuracy | overall | 100 | 90.0% | 100.0% | -10.0 pt | [" in markdown
    assert "**BLOCKED**" in markdown and "What this test set can detect" in markdown
    page = (tmp_path / "gate" / GATE_HTML).read_text(encoding="utf-8")
    assert "<td>intent_accuracy</td><td>overall</td><td>100</td>" in page
    scalars = gate_scalar_metrics(decision)
    assert scalars["gate_passed"] == 0.0
    assert scalars["gate_intent_accuracy_overall_diff"] == pytest.approx(-0.1)
    assert scalars["gate_intent_accuracy_lang_en_blocked"] in (0.0, 1.0)
    assert not list((tmp_path / "gate").glob(".*tmp"))


def test_decide_reads_evaluation_folders(tmp_path: Path) -> None:
    for name, wrong in (("cand", {1}), ("champ", {2})):
        folder = tmp_path / name
        folder.mkdir()
        evaluation = _evaluation(wrong=wrong)
        (folder / METRICS_FILE).write_text(json.dumps({"dataset": evaluation.dataset, "decoding": "generate"}))
        (folder / PREDICTIONS_FILE).write_text("\n".join(json.dumps(r) for r in evaluation.rows) + "\n")
    decision = decide(tmp_path / "cand", tmp_path / "champ", CFG)
    assert decision.passed and decision.champion["decoding"] == "generate"
    with pytest.raises(FileNotFoundError, match=r"predictions\.jsonl: not found"):
        decide(tmp_path / "missing", None, CFG)
