"""Constrained decoding over the tiny profile's default tokenizer, whose copy tokens (`name(`, call punctuation, the
space, Chinese characters) are added tokens.

Before: `token_bytes` left every added token out of the grammar's vocabulary, so a copy-token model could never write
`weather_search(` under the grammar and constrained generation scored 0.0 intent accuracy (bench/README.md).
"""

from __future__ import annotations

from pathlib import Path

from intentops.artifacts import CATALOG_FILE, TRAIN_FILE
from intentops.catalog import load_catalog
from intentops.config import PromptConfig
from intentops.evaluation.constrained import CallGrammar, TokenGrammar, token_bytes
from intentops.io import read_jsonl
from intentops.prompting import PromptBuilder


def test_added_text_tokens_write_their_own_text_and_special_tokens_nothing(copy_tokenizer) -> None:
    written = token_bytes(copy_tokenizer)
    name_token = copy_tokenizer.convert_tokens_to_ids("weather_search(")
    assert written[name_token] == b"weather_search("
    assert written[copy_tokenizer.convert_tokens_to_ids("杭")] == "杭".encode()
    assert not set(copy_tokenizer.all_special_ids) & set(written)


def test_every_gold_answer_is_a_token_path_the_grammar_allows(copy_tokenizer, small_dataset_dir: Path) -> None:
    builder = PromptBuilder(load_catalog(small_dataset_dir / CATALOG_FILE), PromptConfig())
    grammar = TokenGrammar(CallGrammar.for_builder(builder), copy_tokenizer, [copy_tokenizer.eos_token_id])
    records = list(read_jsonl(small_dataset_dir / TRAIN_FILE))
    assert records
    for record in records:
        target = builder.target(record["output"])
        state = grammar.start
        for token_id in copy_tokenizer(target, add_special_tokens=False)["input_ids"]:
            allowed = set(grammar.options(state)[0].tolist())
            assert token_id in allowed, (record["id"], target, copy_tokenizer.decode([token_id]))
            state = grammar.advance(state, token_id)
        assert grammar.accepting(state), (record["id"], target)
