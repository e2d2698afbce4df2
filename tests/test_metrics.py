"""Metrics against hand-computed examples, the seed 002 script's own arithmetic, and the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentops.evaluation import load_split
from intentops.evaluation.baselines import majority_baseline, run_baselines
from intentops.evaluation.metrics import (
    INVALID_LABEL,
    answer_text,
    compute_metrics,
    score_one,
    strict_accuracy,
    strict_outcome,
)


def _record(output: str, lang: str = "zh", seen: bool = True, rid: str = "r") -> dict:
    return {"id": rid, "text": "t", "output": output, "lang": lang, "seen": seen}


# gold, prediction (canonical call string, None = format broken), language, seen
CASES = [
    ("weather_search(杭州)", "weather_search(杭州)", "zh", True),  # all right
    ("play_music(周杰伦)", "play_music(Jay)", "zh", True),  # intent right, argument wrong
    ("set_alarm(7点,明天)", "set_alarm(明天,7点)", "en", True),  # argument SET equal: right (seed 002)
    ("music_pause();volume_up()", "music_pause()", "zh", True),  # multi-intent gold: first call only
    ("volume_up()", None, "en", True),  # format broken: wrong
    ("weather_search(北京)", "play_music(北京)", "en", True),  # wrong intent
    ("music_next()", "music_next()", "en", False),  # unseen intent, right
]


@pytest.fixture
def case_metrics() -> dict:
    records = [_record(gold, lang, seen, f"r{i}") for i, (gold, _, lang, seen) in enumerate(CASES)]
    calls = [pred for _, pred, _, _ in CASES]
    return compute_metrics(records, calls, latencies_s=[1, 2, 3, 4, 5, 6, 7], elapsed_s=14.0)


def test_headline_metrics_match_hand_computation(case_metrics: dict) -> None:
    m = case_metrics
    assert m["n"] == 7
    assert m["intent_accuracy"] == pytest.approx(5 / 7)
    assert m["param_accuracy"] == pytest.approx(4 / 7)
    assert m["format_valid_rate"] == pytest.approx(6 / 7)
    assert m["format_error_rate"] == pytest.approx(1 / 7)
    # exact match compares the whole call list, in order, arguments in order: right for records 1 and 7 only
    # (record 3 swaps its arguments, record 4 answers one of two calls)
    assert m["exact_match"] == pytest.approx(2 / 7)
    assert m["multi_intent"] == {"n": 1, "exact_match": 0.0}


def test_metrics_agree_with_the_seed_002_script_on_well_formed_answers() -> None:
    golds = [gold for gold, _, _, _ in CASES]
    raws = [pred if pred is not None else "" for _, pred, _, _ in CASES]
    seed_intent, seed_params = strict_accuracy(golds, raws)
    ours = compute_metrics([_record(g) for g in golds], [pred for _, pred, _, _ in CASES])
    assert (ours["intent_accuracy"], ours["param_accuracy"]) == pytest.approx((seed_intent, seed_params))


def test_strict_figure_is_reported_exactly_beside_the_normalised_one() -> None:
    # The probe from the issue: the seed 002 script takes the prediction's text up to its last character, so a
    # full multi-intent answer and a space after a comma make its parameter check fail.
    probe = [
        ("weather_search(杭州);volume_down()", "weather_search(杭州);volume_down()"),
        ("set_temperature(bedroom,27)", "set_temperature(bedroom, 27)"),
        ("weather_search(杭州)", "weather_search(杭州)"),
    ]
    records = [_record(gold, rid=f"p{i}") for i, (gold, _) in enumerate(probe)]
    raws = [raw for _, raw in probe]
    m = compute_metrics(records, raws, raws=raws)
    assert (m["strict_intent_accuracy"], m["strict_param_accuracy"]) == pytest.approx((1.0, 1 / 3))
    assert (m["intent_accuracy"], m["param_accuracy"], m["exact_match"]) == (1.0, 1.0, 1.0)
    assert strict_accuracy([g for g, _ in probe], raws) == pytest.approx((1.0, 1 / 3))


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ("weather_search(杭州)", "weather_search(杭州)", (True, True)),
        ("weather_search(杭州);volume_down()", "weather_search(杭州);volume_down()", (True, False)),
        ("set_temperature(bedroom,27)", "set_temperature(bedroom, 27)", (True, False)),
        ("set_alarm(7点,明天)", "set_alarm(明天,7点)", (True, True)),  # argument sets
        ("volume_up()", "volume_up", (True, False)),  # the script would crash here (IndexError)
        ("volume_up()", " volume_up()", (False, False)),  # the name is compared before any strip()
        ("volume_up()", "volume_up() ", (True, True)),  # ... the arguments after it
        ("play_music(周杰伦)", "weather_search(周杰伦)", (False, False)),
    ],
)
def test_strict_rule_by_hand(gold: str, pred: str, expected: tuple[bool, bool]) -> None:
    assert strict_outcome(gold, pred) == expected


def test_strict_figure_reads_the_answer_span_of_a_reasoning_completion() -> None:
    raw = "<think>the user wants the weather</think><answer>weather_search(杭州)</answer>"
    outcome = score_one(_record("weather_search(杭州)"), "weather_search(杭州)", raw=raw)
    assert (outcome.strict_intent_ok, outcome.strict_params_ok) == (True, True)
    react = "Thought: the user wants the weather\nAction: weather_search(杭州)\nFinish!"
    assert answer_text(react) == "weather_search(杭州)"
    outcome = score_one(_record("weather_search(杭州)"), "weather_search(杭州)", raw=react)
    assert (outcome.strict_intent_ok, outcome.strict_params_ok) == (True, True)
    # without the Action line the seed rule reads the whole completion, whose name part is not the intent
    cut = score_one(_record("weather_search(杭州)"), None, raw="Thought: weather_search(杭州) it is")
    assert (cut.strict_intent_ok, cut.strict_params_ok) == (False, False)


def test_parse_failures_and_full_width_punctuation() -> None:
    record = _record("weather_search(杭州)")
    assert score_one(record, "weather_search（杭州）").params_ok  # same call, full-width punctuation
    broken = score_one(record, "weather_search(杭州")
    assert (broken.format_ok, broken.intent_ok, broken.pred_intent) == (False, False, INVALID_LABEL)
    assert not score_one(record, "weather_search(杭州,西湖)").params_ok  # extra argument: set differs


def test_splits_by_seen_and_language(case_metrics: dict) -> None:
    by_seen, by_lang = case_metrics["by_seen"], case_metrics["by_lang"]
    assert by_seen["unseen"] == {
        "n": 1,
        "intent_accuracy": 1.0,
        "param_accuracy": 1.0,
        "exact_match": 1.0,
        "format_valid_rate": 1.0,
    }
    assert by_seen["seen"]["n"] == 6 and by_seen["seen"]["intent_accuracy"] == pytest.approx(4 / 6)
    assert by_lang["zh"]["n"] == 3 and by_lang["zh"]["intent_accuracy"] == pytest.approx(1.0)
    assert by_lang["en"]["n"] == 4 and by_lang["en"]["intent_accuracy"] == pytest.approx(2 / 4)
    assert by_lang["en"]["param_accuracy"] == pytest.approx(2 / 4)
    assert case_metrics["unseen_intents"] == ["music_next"]


def test_per_intent_scores_confusion_and_macro_f1() -> None:
    records = [_record("a()"), _record("a()"), _record("b()"), _record("b()")]
    m = compute_metrics(records, ["a()", "b()", "b()", None], catalog_names=["b", "a", "c"])
    # a: precision 1/1, recall 1/2; b: precision 1/2, recall 1/2
    assert m["per_intent"]["a"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2, "seen": True}
    )
    assert m["per_intent"]["b"]["precision"] == pytest.approx(0.5)
    assert m["per_intent"]["b"]["f1"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # catalog order first, labels absent from gold and predictions left out, invalid last
    assert m["confusion"] == {"labels": ["b", "a", INVALID_LABEL], "matrix": [[1, 0, 1], [1, 1, 0], [0, 0, 0]]}
    assert m["worst_confusions"] == [
        {"gold": "a", "predicted": "b", "count": 1},
        {"gold": "b", "predicted": INVALID_LABEL, "count": 1},
    ]
    assert m["unknown_intent_rate"] == 0.0
    assert compute_metrics(records, ["zzz()"] * 4, catalog_names=["a", "b"])["unknown_intent_rate"] == 1.0


def test_latency_and_throughput(case_metrics: dict) -> None:
    latency = case_metrics["latency"]
    assert latency["p50_s"] == pytest.approx(4.0)
    assert latency["p95_s"] == pytest.approx(6.7)
    assert latency["throughput_per_s"] == pytest.approx(0.5)


def test_confidence_summary() -> None:
    records = [_record("a()"), _record("b()")]
    m = compute_metrics(records, ["a()", "a()"], confidences=[0.9, 0.6])
    assert m["confidence"] == pytest.approx({"mean": 0.75, "mean_when_right": 0.9, "mean_when_wrong": 0.6})


def test_uncertain_answers_are_counted_by_hand(case_metrics: dict) -> None:
    # gold: 3 in-scope records and 1 out-of-scope (uncertain); the model abstains on 1 in-scope and on the oos one
    golds = ["a()", "b()", "a()", "uncertain()"]
    preds = ["uncertain()", "b()", "a()", "uncertain()"]
    m = compute_metrics([_record(g, rid=f"r{i}") for i, g in enumerate(golds)], preds)
    assert m["uncertain"] == pytest.approx({"rate": 0.5, "rate_on_in_scope": 1 / 3, "recall_out_of_scope": 1.0})
    assert "uncertain" not in case_metrics  # no uncertain() anywhere: no block


def test_metrics_are_json_ready(case_metrics: dict) -> None:
    assert json.loads(json.dumps(case_metrics)) == case_metrics


def test_bad_inputs_name_the_record() -> None:
    with pytest.raises(ValueError, match=r"'bad-1'.*does not parse"):
        compute_metrics([_record("not a call", rid="bad-1")], ["a()"])
    with pytest.raises(ValueError, match="2 test records but 1 predictions"):
        compute_metrics([_record("a()"), _record("b()")], ["a()"])


def test_majority_baseline_by_hand() -> None:
    result = majority_baseline(["b", "a", "a", "b", "c"], ["a", "b", "c", "a"], [True, True, False, True])
    assert result["predicted"] == "a"  # a and b tie at 2: alphabetical
    assert result["intent_accuracy"] == pytest.approx(0.5)
    assert result["unseen_intent_accuracy"] == 0.0
    assert result["seen_intent_accuracy"] == pytest.approx(2 / 3)


def test_baselines_on_the_small_dataset(small_dataset_dir: Path) -> None:
    train = load_split(small_dataset_dir, "train")
    test = load_split(small_dataset_dir, "test")
    result = run_baselines(train, test)
    unseen = sum(1 for r in test if r["seen"] is False)
    assert result["n_test"] == len(test) and unseen > 0
    assert result["max_reachable_accuracy"] == pytest.approx(1 - unseen / len(test))
    tfidf, majority = result["tfidf_logreg"], result["majority"]
    assert tfidf["unseen_intent_accuracy"] == 0.0 and majority["unseen_intent_accuracy"] == 0.0
    # character n-grams separate these intents well; the majority class cannot
    assert tfidf["intent_accuracy"] > majority["intent_accuracy"] + 0.3
    assert tfidf["intent_accuracy"] <= result["max_reachable_accuracy"]


def test_baselines_reject_records_without_intent() -> None:
    with pytest.raises(ValueError, match=r"train record 'x'.*'intent'"):
        run_baselines([{"id": "x", "text": "hi"}], [{"id": "y", "text": "hi", "intent": "a"}])
