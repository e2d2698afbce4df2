"""Reward functions: strict vs loose format, multi-intent intent/params credit, thought mode, TRL wrappers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from intentops.catalog import Catalog
from intentops.config import GrpoConfig, PromptConfig
from intentops.prompting import PromptBuilder
from intentops.rewards import (
    RewardWeights,
    combined,
    completion_text,
    format_reward,
    intent_reward,
    make_reward_funcs,
    params_reward,
    score_completion,
)


@pytest.fixture
def answer_builder(example_catalog: Catalog) -> PromptBuilder:
    return PromptBuilder(example_catalog, PromptConfig(output_mode="answer"))


@pytest.fixture
def thought_builder(example_catalog: Catalog) -> PromptBuilder:
    return PromptBuilder(example_catalog, PromptConfig(output_mode="thought", thought_template="think_answer"))


@pytest.fixture
def react_builder(example_catalog: Catalog) -> PromptBuilder:
    return PromptBuilder(example_catalog, PromptConfig(output_mode="thought", thought_template="react"))


@pytest.mark.parametrize(
    ("completion", "strict", "loose"),
    [
        ("weather_search(杭州)", 1.0, 1.0),
        ("  weather_search（杭州） ", 1.0, 1.0),  # full-width and surrounding space still the template
        ("volume_down();play_music(周杰伦)", 1.0, 1.0),
        ("Sure! weather_search(杭州)", 0.0, 1.0),  # chatter around the call: loose only
        ("weather_search(杭州) hope this helps", 0.0, 1.0),
        ("weather_search(杭州", 0.0, 0.0),
        ("I don't know", 0.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_format_reward_answer_mode(answer_builder: PromptBuilder, completion: str, strict: float, loose: float) -> None:
    assert format_reward(completion, answer_builder, strict=True) == strict
    assert format_reward(completion, answer_builder, strict=False) == loose


@pytest.mark.parametrize(
    ("completion", "strict", "loose"),
    [
        ("<think>the user wants weather</think><answer>weather_search(杭州)</answer>", 1.0, 1.0),
        ("<think>x</think>\n<answer>volume_down();volume_down()</answer>\n", 1.0, 1.0),
        ("<answer>weather_search(杭州)</answer>", 0.0, 1.0),  # no reasoning block
        ("Let me see. <think>x</think><answer>weather_search(杭州)</answer>", 0.0, 1.0),  # text before the template
        ("<think>x</think><answer>weather_search(杭州)</answer> done", 0.0, 1.0),  # text after
        ("<think>x</think>weather_search(杭州)", 0.0, 0.0),  # no answer tag at all
        ("<think>x</think><answer>not a call</answer>", 0.0, 0.0),
    ],
)
def test_format_reward_thought_mode(
    thought_builder: PromptBuilder, completion: str, strict: float, loose: float
) -> None:
    assert format_reward(completion, thought_builder, strict=True) == strict
    assert format_reward(completion, thought_builder, strict=False) == loose


# (completion, strict format, loose format, intent, params) against the reference weather_search(杭州)
REACT_CASES = [
    ("Thought: 杭州 is a city and the user asks about rain.\nAction: weather_search(杭州)\nFinish!", 1, 1, 1, 1),
    ("Thought:\nAction: weather_search(杭州)\nFinish!", 1, 1, 1, 1),  # the SFT target: empty reasoning, full reward
    ("Thought: weather\nAction: weather_search(北京)\nFinish!", 1, 1, 1, 0),  # right template, wrong city
    ("Thought: music\nAction: play_music(杭州)\nFinish!", 1, 1, 0, 0),  # right template, wrong intent
    ("Thought: weather\nAction: weather_search(杭州)", 0, 1, 1, 1),  # cut off before Finish!
    ("Action: weather_search(杭州)\nFinish!", 0, 1, 1, 1),  # no Thought line
    ("Thought: weather\nAction: weather_search(杭州)\nFinish!\nThought: more", 0, 1, 1, 1),  # text after Finish!
    ("Thought: weather\nAction: the weather in 杭州\nFinish!", 0, 0, 0, 0),  # no call on the Action line
    ("Thought: weather, so weather_search(杭州)", 0, 0, 0, 0),  # never acts: the thought is not read
    ("<think>weather</think><answer>weather_search(杭州)</answer>", 0, 0, 0, 0),  # the other template
]


@pytest.mark.parametrize(("completion", "strict", "loose", "intent", "params"), REACT_CASES)
def test_rewards_on_react_completions(
    react_builder: PromptBuilder, completion: str, strict: int, loose: int, intent: int, params: int
) -> None:
    weights = RewardWeights()
    for strict_format, expected_format in ((True, strict), (False, loose)):
        score = score_completion(completion, "weather_search(杭州)", react_builder, weights, strict=strict_format)
        assert score.as_dict() == {
            "format": expected_format,
            "intent": intent,
            "params": params,
            "total": expected_format + intent + params,
        }


def test_intent_reward_single_and_unparseable() -> None:
    assert intent_reward("weather_search(北京)", "weather_search(杭州)") == 1.0  # intent right, params wrong
    assert intent_reward("play_music(杭州)", "weather_search(杭州)") == 0.0
    assert intent_reward(None, "weather_search(杭州)") == 0.0
    assert intent_reward("weather_search(", "weather_search(杭州)") == 0.0
    with pytest.raises(ValueError, match="does not parse"):
        intent_reward("a()", "broken(")


def test_intent_reward_multi_intent() -> None:
    ref = "volume_down();play_music(周杰伦)"
    assert intent_reward("play_music(周杰伦);volume_down()", ref) == 1.0  # order-free by default
    assert intent_reward("play_music(周杰伦);volume_down()", ref, ordered=True) == pytest.approx(1.0)
    assert intent_reward("play_music(周杰伦);volume_down()", ref, ordered=True, partial=False) == 0.0
    assert intent_reward("volume_down()", ref) == pytest.approx(0.5)  # one of two calls: Jaccard 1/2
    assert intent_reward("volume_down()", ref, partial=False) == 0.0
    assert intent_reward("volume_down();play_music(x);music_next()", ref) == pytest.approx(2 / 3)
    assert intent_reward("volume_down();volume_down()", "volume_down()") == pytest.approx(0.5)  # multiset
    assert intent_reward("music_next()", ref) == 0.0


def test_params_reward() -> None:
    assert params_reward("weather_search(杭州)", "weather_search(杭州)") == 1.0
    assert params_reward("weather_search( 杭州 )", "weather_search(杭州)") == 1.0
    assert params_reward("set_temperature(卧室,２６)", "set_temperature(卧室,26)") == 1.0  # NFKC: full-width digits
    assert params_reward("weather_search(北京)", "weather_search(杭州)") == 0.0
    assert params_reward("volume_down()", "volume_down()") == 1.0
    assert params_reward("play_music(杭州)", "weather_search(杭州)") == 0.0  # no call of that name
    ref = "volume_down();play_music(周杰伦)"
    assert params_reward("play_music(周杰伦);volume_down()", ref) == 1.0
    assert params_reward("volume_down();play_music(林俊杰)", ref) == pytest.approx(0.5)
    assert params_reward("volume_down()", ref) == pytest.approx(0.5)  # missing call costs credit
    assert params_reward("weather_search(杭州);volume_up()", "weather_search(杭州)") == pytest.approx(0.5)
    assert params_reward(None, ref) == 0.0


def test_score_completion_and_weights(answer_builder: PromptBuilder, thought_builder: PromptBuilder) -> None:
    weights = RewardWeights(format=1.0, intent=2.0, params=0.5)
    perfect = score_completion("weather_search(杭州)", "weather_search(杭州)", answer_builder, weights)
    assert perfect.as_dict() == {"format": 1.0, "intent": 1.0, "params": 1.0, "total": 3.5}
    # content is scored on what evaluation and serving would parse (PromptBuilder.extract_calls): in answer mode
    # chatter around the call earns loose format credit but no intent credit, since serving could not read it
    chatter = score_completion(
        "Sure: weather_search(杭州)", "weather_search(杭州)", answer_builder, weights, strict=False
    )
    assert (chatter.format, chatter.intent, chatter.params) == (1.0, 0.0, 0.0)
    wrong_city = score_completion("weather_search(北京)", "weather_search(杭州)", answer_builder, weights)
    assert (wrong_city.format, wrong_city.intent, wrong_city.params, wrong_city.total) == (1.0, 1.0, 0.0, 3.0)
    thought = score_completion(
        "<think>weather</think><answer>weather_search(杭州)</answer>", "weather_search(杭州)", thought_builder, weights
    )
    assert thought.total == weights.total
    # thought mode reads the answer tag wherever it is: strict format fails, the content still counts
    untidy = score_completion(
        "ok <answer>weather_search(杭州)</answer>", "weather_search(杭州)", thought_builder, weights
    )
    assert (untidy.format, untidy.intent, untidy.params) == (0.0, 1.0, 1.0)
    assert combined({"format": 1.0, "intent": 0.5, "params": 0.0}, weights) == 2.0


def test_weights_from_config_reject_all_zero() -> None:
    assert RewardWeights.from_config(GrpoConfig()).as_list() == [1.0, 1.0, 1.0]
    cfg = GrpoConfig(reward_format_weight=0, reward_intent_weight=0, reward_params_weight=0)
    with pytest.raises(ValueError, match="all 0"):
        RewardWeights.from_config(cfg)


def test_completion_text_accepts_trl_formats() -> None:
    assert completion_text("a()") == "a()"
    assert completion_text([{"role": "assistant", "content": "a()"}]) == "a()"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a()"}]}]) == "a()"
    with pytest.raises(TypeError):
        completion_text(3)


def test_trl_reward_funcs_score_once_and_log_every_rollout(answer_builder: PromptBuilder) -> None:
    rows: list[dict[str, Any]] = []
    funcs, weights = make_reward_funcs(answer_builder, GrpoConfig(reward_intent_weight=2.0), rows.extend)
    assert [f.__name__ for f in funcs] == ["format", "intent", "params"]
    assert weights == [1.0, 2.0, 1.0]
    completions = [
        [{"role": "assistant", "content": "weather_search(杭州)"}],
        [{"role": "assistant", "content": "weather_search(北京)"}],
        [{"role": "assistant", "content": "oops"}],
    ]
    metrics: dict[str, float] = {}
    kwargs = {
        "output": ["weather_search(杭州)"] * 3,
        "id": ["s1", "s1", "s1"],
        "trainer_state": SimpleNamespace(global_step=7),
        "log_metric": metrics.__setitem__,
    }
    prompts = [[{"role": "user", "content": "杭州天气"}]] * 3
    columns = [func(prompts=prompts, completions=completions, completion_ids=None, **kwargs) for func in funcs]
    assert columns == [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert len(rows) == 3  # one row per rollout, although three functions were called
    assert rows[0] == {
        "sample_id": "s1",
        "step": 7,
        "completion": "weather_search(杭州)",
        "format": 1.0,
        "intent": 1.0,
        "params": 1.0,
        "total": 4.0,
    }
    assert rows[2]["total"] == 0.0
    assert metrics["format_valid_strict"] == pytest.approx(2 / 3)
    assert metrics["perfect_rate"] == pytest.approx(1 / 3)
    # a new batch (new list object) is scored again
    one = {**kwargs, "output": ["weather_search(杭州)"], "id": ["s2"]}
    assert funcs[1](prompts=prompts[:1], completions=[completions[2]], **one) == [0.0]
    assert len(rows) == 4 and rows[-1]["sample_id"] == "s2"


def test_trl_reward_funcs_need_the_output_column(answer_builder: PromptBuilder) -> None:
    funcs, _ = make_reward_funcs(answer_builder, GrpoConfig())
    with pytest.raises(ValueError, match="'output' column"):
        funcs[0](prompts=[[]], completions=["a()"])
