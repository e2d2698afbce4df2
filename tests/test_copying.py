"""Copied arguments: constrained decoding where every argument value is a span of the utterance.

Before: a model that learned which value goes with which phrasing answered `Ring David a call` with
`call_contact(Olivia)`; 68 of the tiny profile's 87 wrong arguments were values absent from the utterance
(bench/README.md). The automaton (`evaluation.copying`), the EBNF grammar the vLLM server gets
(`serving.copy_grammar`, checked with xgrammar, vLLM's structured-output backend) and the definition (the catalog
grammar, and every parsed argument a non-empty substring) must accept the same answers.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from intentops.artifacts import CATALOG_FILE, RECORDS_FILE
from intentops.catalog import load_catalog
from intentops.config import EXAMPLE_DIR, ModelConfig, PromptConfig, load_config
from intentops.evaluation import load_split
from intentops.evaluation.constrained import CallGrammar, CallGrammarProcessor, TokenGrammar
from intentops.evaluation.copying import CopyingGrammar
from intentops.evaluation.decoding import stop_token_ids
from intentops.evaluation.generation import GenerationPredictor
from intentops.evaluation.label_scoring import LabelScoringPredictor
from intentops.grammar import parse_calls
from intentops.io import read_jsonl
from intentops.models import load_model_and_tokenizer
from intentops.prompting import PromptBuilder
from intentops.serving.client import IntentClient, structured_outputs

xgrammar_testing = pytest.importorskip("xgrammar.testing")


def _accepts(grammar: CopyingGrammar, text: str, source: str) -> bool:
    state = grammar.start_for(source)
    for byte in text.encode("utf-8"):
        state = grammar.step_byte(state, byte)
        if state is None:
            return False
    return grammar.accepting(state)


def _definition(grammar: CallGrammar, text: str, source: str) -> bool:
    return grammar.matches(text) and all(arg and arg in source for call in parse_calls(text) for arg in call.args)


def _candidates(rng: random.Random, source: str, gold: str, labels: list[str]) -> list[str]:
    """The gold answer and calls whose arguments are spans of `source` bare, quoted, escaped, or spans plus noise."""
    found = [gold]
    for _ in range(8):
        start = rng.randrange(len(source))
        span = source[start : rng.randrange(start, len(source) + 1)]
        form = rng.choice(["bare", "quoted", "escaped", "noise"])
        if form == "bare":
            arg = span
        elif form == "quoted":
            arg = '"' + span.replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif form == "escaped":
            arg = '"' + "".join(ch if ch == "\n" else "\\" + ch for ch in span) + '"'
        else:
            arg = span + rng.choice(["x", "杭", "", " ", ",", '""'])
        label = rng.choice(labels)
        found += [f"{label}({arg})", f"{label}({arg},{arg})", f"{label}({arg});{gold}"]
    return found


@pytest.mark.parametrize("thought_template", [None, "think_answer"])
def test_automaton_server_grammar_and_definition_accept_the_same_answers(
    copy_tokenizer, thought_template: str | None
) -> None:
    prompt_cfg = PromptConfig(output_mode="thought", thought_template=thought_template) if thought_template else None
    builder = PromptBuilder(load_catalog(EXAMPLE_DIR / CATALOG_FILE), prompt_cfg or PromptConfig())
    answer_builder = PromptBuilder(builder.catalog, PromptConfig())
    answer_grammar = CallGrammar.for_builder(answer_builder)
    copying = CopyingGrammar(
        TokenGrammar(CallGrammar.for_builder(builder), copy_tokenizer, [copy_tokenizer.eos_token_id])
    )
    rng = random.Random(0)
    labels = list(answer_grammar.labels)
    outcomes = []
    for record in list(read_jsonl(EXAMPLE_DIR / RECORDS_FILE))[::40]:
        source = record["text"]
        server = structured_outputs(builder, source=source)["grammar"]
        gold = answer_builder.target(record["output"])
        for answer in _candidates(rng, source, gold, labels):
            text = f"<think>x</think><answer>{answer}</answer>" if thought_template else answer
            accepted = _accepts(copying, text, source)
            assert accepted == _definition(answer_grammar, answer, source), (source, text)
            assert accepted == xgrammar_testing._is_grammar_accept_string(server, text), (source, text)
            outcomes.append(accepted)
    assert 0.15 < sum(outcomes) / len(outcomes) < 0.85  # both outcomes exercised


def test_a_value_the_utterance_does_not_hold_is_never_allowed(copy_tokenizer) -> None:
    builder = PromptBuilder(load_catalog(EXAMPLE_DIR / CATALOG_FILE), PromptConfig())
    base = TokenGrammar(CallGrammar.for_builder(builder), copy_tokenizer, [copy_tokenizer.eos_token_id])
    copying = CopyingGrammar(base)
    source = "我想去杭州玩，帮我查下天气预报"
    state = copying.state_after("weather_search(", source)
    allowed = {copy_tokenizer.decode([i]) for i in copying.options(state)[0].tolist()}
    assert {"杭", "州", '"'} <= allowed and not allowed & {"重", ")"}
    assert "重" in {copy_tokenizer.decode([i]) for i in base.options(state[0])[0].tolist()}  # the catalog allows it
    inside = copying.state_after("weather_search(杭州", source)
    after = {copying.base.bytes_of[i] for i in copying.options(inside)[0].tolist()}
    next_char = "玩".encode()
    # continue the span (the next character, whole or its first bytes), or close it (the intent takes one argument)
    assert b")" in after and after - {b")"} and all(data == b")" or next_char.startswith(data) for data in after)
    with pytest.raises(ValueError, match="utterance"):
        copying.start  # noqa: B018


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    torch.set_num_threads(1)
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, ModelConfig(), for_training=False)
    return model, tokenizer, PromptBuilder.from_model_dir(tiny_model_dir)


def _arguments_are_spans(predictions, texts: list[str]) -> bool:
    return all(arg in text for p, text in zip(predictions, texts, strict=True) for arg in (p.params or []))


def test_generation_and_label_scoring_copy_every_argument(loaded, small_dataset_dir: Path) -> None:
    """A random-init model, free, writes arguments from anywhere; copying, only spans of its utterance."""
    model, tokenizer, builder = loaded
    texts = [r["text"] for r in load_split(small_dataset_dir, "test")[:6]]
    common = {"batch_size": 3, "max_new_tokens": 16, "constrained": True, "progress": False}
    free = GenerationPredictor(model, tokenizer, builder, **common)
    copying = GenerationPredictor(model, tokenizer, builder, copy_arguments=True, **common)
    scoring = LabelScoringPredictor(model, tokenizer, builder, copy_arguments=True, **common)
    assert copying.copy_arguments and not free.copy_arguments and not copying.unconstrained().copy_arguments
    assert not _arguments_are_spans(free.predict(texts), texts)
    for predictor in (copying, scoring):
        answers = predictor.predict(texts)
        assert all(p.call is not None for p in answers) and _arguments_are_spans(answers, texts)
        assert any(p.params for p in answers)


def test_the_processor_needs_each_rows_utterance(loaded) -> None:
    model, tokenizer, builder = loaded
    grammar = CopyingGrammar(
        TokenGrammar(CallGrammar.for_builder(builder), tokenizer, stop_token_ids(model, tokenizer))
    )
    with pytest.raises(ValueError, match="utterance"):
        CallGrammarProcessor(grammar, 16)
    assert CallGrammarProcessor(grammar, 16, sources=["play some jazz"]).start_states[0][1] == b"play some jazz"


def test_copy_arguments_needs_constrained_decoding() -> None:
    with pytest.raises(ValueError, match="evaluation__copy_arguments"):
        load_config(overrides={"evaluation__copy_arguments": True, "evaluation__constrained": False})
    cfg = load_config(overrides={"evaluation__copy_arguments": True, "evaluation__constrained": True})
    assert cfg.evaluation.copy_arguments


def test_the_openai_client_sends_each_utterance_its_own_grammar() -> None:
    builder = PromptBuilder(load_catalog(EXAMPLE_DIR / CATALOG_FILE), PromptConfig())
    copying = IntentClient("http://127.0.0.1:1", builder=builder, copy_arguments=True)
    plain = IntentClient("http://127.0.0.1:1", builder=builder)
    assert plain.constraint_for("去杭州") == plain.constraint and "regex" in plain.constraint
    grammar = copying.constraint_for("去杭州")["grammar"]
    assert xgrammar_testing._is_grammar_accept_string(grammar, "weather_search(杭州)")
    assert not xgrammar_testing._is_grammar_accept_string(grammar, "weather_search(重庆)")


def test_no_step_leads_where_no_span_can_be_finished(copy_tokenizer) -> None:
    """A blank inside a bare value must be followed by more of the span, an escape by one more character of it; a
    step into a value that cannot end would leave the answer unfinishable within any budget."""
    builder = PromptBuilder(load_catalog(EXAMPLE_DIR / CATALOG_FILE), PromptConfig())
    copying = CopyingGrammar(
        TokenGrammar(CallGrammar.for_builder(builder), copy_tokenizer, [copy_tokenizer.eos_token_id])
    )
    source = "play Norah Jones "
    jones = copying.state_after("play_music(Norah Jones", source)
    assert copying.step_byte(jones, ord(" ")) is None  # only the trailing blank follows: a dead end
    assert copying.step_byte(copying.state_after("play_music(Norah", source), ord(" ")) is not None
    quoted = copying.state_after('play_music("Norah Jones ', source)
    assert copying.step_byte(quoted, ord("\\")) is None and copying.step_byte(quoted, ord('"')) is not None
