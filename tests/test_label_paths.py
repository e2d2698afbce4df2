"""Label paths and label scores checked by hand: a fake bigram model whose logits are a table we write, over the tiny
profile's two tokenizers (plain byte-level BPE, and copy tokens where `name(` is ONE token), so every expected score
is a closed formula of the table."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig, Qwen2Config

from intentops.artifacts import CATALOG_FILE
from intentops.catalog import load_catalog
from intentops.config import PromptConfig
from intentops.evaluation.label_paths import LabelTrie, label_paths
from intentops.evaluation.label_scoring import LabelScoringPredictor
from intentops.evaluation.predictors import chat_prompts
from intentops.prompting import PromptBuilder


class _OneHotDecoder(torch.nn.Module):
    """Hidden state = one-hot of the input token, so the output head's column for a token is its logit row."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids: torch.Tensor, past_key_values: Any, **_: Any) -> SimpleNamespace:
        """The mask and positions do not matter to a bigram model; the cache only needs the right width."""
        rows, width = input_ids.shape
        blank = torch.zeros(rows, 1, width, 1)
        past_key_values.update(blank, blank, 0)
        return SimpleNamespace(
            last_hidden_state=torch.nn.functional.one_hot(input_ids, self.vocab).float(),
            past_key_values=past_key_values,
        )


class BigramLM(torch.nn.Module):
    """A fake causal LM: the next token's logits are `table[current token]`, whatever came before."""

    def __init__(self, table: torch.Tensor, eos_id: int) -> None:
        super().__init__()
        vocab = table.shape[0]
        self.config = Qwen2Config(
            vocab_size=vocab, hidden_size=vocab, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1
        )
        self.config._attn_implementation = "sdpa"
        self.generation_config = GenerationConfig(eos_token_id=eos_id)
        self.head = torch.nn.Linear(vocab, vocab, bias=False)
        self.head.weight.data = table.T.contiguous()  # head(one_hot(c)) = table[c]
        self.decoder = _OneHotDecoder(vocab)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def get_decoder(self) -> torch.nn.Module:
        return self.decoder

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head


@pytest.fixture(scope="module")
def plain_tokenizer(tiny_model_dir: Path):
    """The tests' tokenizer: plain byte-level BPE (tests/fixtures/models.py turns the copy tokens off)."""
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def builder(small_dataset_dir: Path) -> PromptBuilder:
    return PromptBuilder(load_catalog(small_dataset_dir / CATALOG_FILE), PromptConfig())


def _scorer(tokenizer, builder: PromptBuilder, table: torch.Tensor, **kwargs) -> LabelScoringPredictor:
    model = BigramLM(table, tokenizer.eos_token_id)
    return LabelScoringPredictor(model, tokenizer, builder, prefix_cache=False, progress=False, **kwargs)


def _last_prompt_token(tokenizer, builder: PromptBuilder, text: str) -> int:
    return tokenizer(chat_prompts(tokenizer, builder, [text])[0], add_special_tokens=False)["input_ids"][-1]


def test_copy_token_labels_score_the_merged_token(copy_tokenizer, builder: PromptBuilder) -> None:
    tok = copy_tokenizer.convert_tokens_to_ids
    weather, volume, close = tok("weather_search("), tok("volume_down("), tok(")")
    paths = {p.label: p for p in label_paths(copy_tokenizer, builder, builder.labels, _takes(builder))}
    assert (paths["weather_search"].tokens, paths["weather_search"].rest) == ((weather,), "")
    assert (paths["volume_down"].tokens, paths["volume_down"].rest) == ((volume, close), "")
    assert paths["volume_down"].text == "volume_down()" and paths["weather_search"].openers == ()

    vocab = len(copy_tokenizer)
    last = _last_prompt_token(copy_tokenizer, builder, "今天杭州天气")
    table = torch.zeros(vocab, vocab)
    table[last, weather] = math.log(4.0)  # e^logit = 4 against 1 for every other token
    table[volume, close] = math.log(2.0)
    index = {label: i for i, label in enumerate(builder.labels)}

    total = _scorer(copy_tokenizer, builder, table).score(["今天杭州天气"])[0]
    assert total[index["weather_search"]] == pytest.approx(math.log(4 / (4 + vocab - 1)), abs=1e-5)
    volume_total = math.log(1 / (4 + vocab - 1)) + math.log(2 / (2 + vocab - 1))
    assert total[index["volume_down"]] == pytest.approx(volume_total, abs=1e-5)

    mean = _scorer(copy_tokenizer, builder, table, length_normalized=True).score(["今天杭州天气"])[0]
    assert mean[index["weather_search"]] == pytest.approx(math.log(4 / (vocab + 3)), abs=1e-5)  # one token
    assert mean[index["volume_down"]] == pytest.approx(volume_total / 2, abs=1e-5)  # two tokens: the mean halves

    # catalog normalisation: the first token chooses among the labels' own first tokens (one each); `)` after
    # `volume_down(` is the only continuation any label takes there, so it has probability 1
    labels = len(builder.labels)
    catalog = _scorer(copy_tokenizer, builder, table, normalization="catalog").score(["今天杭州天气"])[0]
    assert catalog[index["weather_search"]] == pytest.approx(math.log(4 / (4 + labels - 1)), abs=1e-5)
    assert catalog[index["volume_down"]] == pytest.approx(math.log(1 / (4 + labels - 1)), abs=1e-5)


def test_plain_bpe_labels_score_the_name_then_the_opening_mass(plain_tokenizer, builder: PromptBuilder) -> None:
    paths = {p.label: p for p in label_paths(plain_tokenizer, builder, builder.labels, _takes(builder))}
    weather = paths["weather_search"]
    assert plain_tokenizer.decode(weather.tokens) == "weather_search" and weather.rest == "("
    openers = {i for i in range(len(plain_tokenizer)) if plain_tokenizer.decode([i]).startswith("(")}
    openers -= set(plain_tokenizer.all_special_ids)
    assert set(weather.openers) == openers and len(openers) > 1  # `(` merges with what follows: a set of tokens

    vocab, name_end = len(plain_tokenizer), weather.tokens[-1]
    last = _last_prompt_token(plain_tokenizer, builder, "what's the weather")
    assert name_end not in (*weather.tokens[:-1], last)  # only the opening step reads the row written below
    table = torch.zeros(vocab, vocab)
    table[name_end, sorted(openers)] = math.log(3.0)
    n_open, n_name = len(openers), len(weather.tokens)
    expected = n_name * math.log(1 / vocab) + math.log(3 * n_open / (3 * n_open + vocab - n_open))
    index = builder.labels.index("weather_search")
    assert _scorer(plain_tokenizer, builder, table).score(["what's the weather"])[0][index] == pytest.approx(
        expected, abs=1e-4
    )
    mean = _scorer(plain_tokenizer, builder, table, length_normalized=True).score(["what's the weather"])[0]
    assert mean[index] == pytest.approx(expected / (n_name + 1), abs=1e-4)


def test_label_trie_without_an_opening_set() -> None:
    # copy tokens: label A is the one token [1]; label B is [2, 3] (`name(` then `)`); label C is [2] then {4, 5}
    trie = LabelTrie.build([[1], [2, 3], [2]], [[], [], [4, 5]])
    assert trie.nodes == ((2,),)  # no edge leaves [1]: the node is never fed to the model
    assert trie.edges == ((0, (1,)), (0, (2,)), (1, (3,)), (1, (4, 5)))
    assert trie.paths == ((0,), (1, 2), (1, 3)) and trie.lengths() == [1, 2, 2]
    catalog = trie.for_catalog()
    assert catalog.paths == ((0,), (1, 2), (1, 3)) and catalog.nodes == ((2,),)
    lone = LabelTrie.build([[1], [2, 3]], [[], []]).for_catalog()
    assert lone.nodes == () and lone.edges == ((0, (1,)), (0, (2,))) and lone.paths == ((0,), (1,))
    with pytest.raises(ValueError, match="neither tokens nor an opening set"):
        LabelTrie.build([[]], [[]])


def _takes(builder: PromptBuilder) -> list[bool]:
    return [bool(builder.catalog.get(label).parameters) for label in builder.labels]
