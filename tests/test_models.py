"""Model folders: the tiny profile loads like any HF chat model, cards and catalogs travel, s3:// bases resolve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentops.artifacts import CATALOG_FILE, DATASET_MANIFEST, TRAIN_FILE
from intentops.catalog import load_catalog
from intentops.config import RunConfig
from intentops.models import (
    MODEL_CARD,
    ModelCardError,
    copy_model,
    read_model_card,
    resolve_model,
    write_model_card,
)
from intentops.prompting import PromptBuilder
from intentops.tiny_model import create_tiny_model


def test_tiny_model_loads_with_auto_classes_like_a_qwen_chat_model(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert model.config.vocab_size == len(tokenizer)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # special tokens stay single tokens
    eos_ids = model.generation_config.eos_token_id
    assert tokenizer.eos_token_id in (eos_ids if isinstance(eos_ids, list) else [eos_ids])


def test_tiny_tokenizer_is_byte_level_and_compresses_the_prompt(tiny_model_dir: Path, small_dataset_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for text in ("把客厅的灯打开，然后放周杰伦", "Unseen wörds ✓ 🎵", 'send_message(刘老师,"路上堵车")'):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    builder = PromptBuilder.from_model_dir(tiny_model_dir)
    system = builder.system_prompt()
    # trained on the rendered prompts: far fewer tokens than bytes
    assert len(tokenizer(system, add_special_tokens=False)["input_ids"]) < len(system.encode("utf-8")) / 3


def _contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[start : start + len(part)] == part for start in range(len(ids) - len(part) + 1))


def test_tiny_tokenizer_makes_intents_one_token_and_arguments_the_utterances_tokens(
    tmp_path: Path, small_dataset_dir: Path, training_config: RunConfig
) -> None:
    from transformers import AutoTokenizer

    cfg = training_config.model_copy(
        update={"model": training_config.model.model_copy(update={"tiny_copy_tokens": True})}
    )
    model_dir = create_tiny_model(
        small_dataset_dir, load_catalog(small_dataset_dir / CATALOG_FILE), cfg.model, tmp_path / "m", cfg.prompt
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    builder = PromptBuilder.from_model_dir(model_dir)
    records = [json.loads(line) for line in (small_dataset_dir / TRAIN_FILE).read_text().splitlines()]
    copied = 0
    for record in records:
        answer = tokenizer(builder.target(record["output"]), add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(answer[0]) == f"{record['calls'][0]['name']}(", record["output"]
        utterance = tokenizer(record["text"], add_special_tokens=False)["input_ids"]
        for arg in (arg for call in record["calls"] for arg in call["args"] if arg in record["text"]):
            arg_ids = tokenizer(arg, add_special_tokens=False)["input_ids"]
            assert _contains(answer, arg_ids), (record["output"], arg)  # "(" and "," do not glue onto the argument
            assert _contains(utterance, arg_ids), (record["text"], arg)  # nor a leading space or Chinese neighbours
            copied += 1
    assert copied > len(records) / 2
    # not only the training data: any Chinese city in any sentence
    sentence = tokenizer("我想去杭州玩，帮我查下天气预报", add_special_tokens=False)["input_ids"]
    assert _contains(sentence, tokenizer("杭州", add_special_tokens=False)["input_ids"])


def test_tiny_tokenizer_loads_as_qwen2_and_splits_text_as_trained(tiny_model_dir: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tiny_model_dir)  # transformers picks Qwen2Tokenizer from config.json
    assert type(loaded).__name__ == "Qwen2Tokenizer"
    trained = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))  # the merges as they were learned
    builder = PromptBuilder.from_model_dir(tiny_model_dir)
    for text in (
        builder.system_prompt(),
        "Play some Taylor Swift's songs",
        "把客厅的灯打开，然后放周杰伦",
        "ｆｕｌｌ　ｗｉｄｔｈ１２",
    ):
        assert loaded(text, add_special_tokens=False)["input_ids"] == trained.encode(text, add_special_tokens=False).ids


def test_tiny_model_card_and_catalog(tiny_model_dir: Path, small_dataset_dir: Path, training_config: RunConfig) -> None:
    card = read_model_card(tiny_model_dir)
    manifest = json.loads((small_dataset_dir / DATASET_MANIFEST).read_text())
    catalog = load_catalog(tiny_model_dir / CATALOG_FILE)
    assert card["stage"] == "init"
    assert card["catalog_hash"] == catalog.content_hash == manifest["catalog_hash"]
    assert card["dataset_hash"] == manifest["dataset_hash"]
    assert card["prompt"] == training_config.prompt.model_dump()
    assert card["parameters"] > 0 and card["created_at"]
    assert PromptBuilder.from_model_dir(tiny_model_dir).cfg == training_config.prompt


def test_tiny_model_is_deterministic(
    tmp_path: Path, tiny_model_dir: Path, small_dataset_dir: Path, training_config
) -> None:
    from safetensors.torch import load_file

    again = create_tiny_model(
        small_dataset_dir,
        load_catalog(small_dataset_dir / CATALOG_FILE),
        training_config.model,
        tmp_path / "again",
        training_config.prompt,
    )
    assert (again / "tokenizer.json").read_text() == (tiny_model_dir / "tokenizer.json").read_text()
    first, second = load_file(tiny_model_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(bool((first[k] == second[k]).all()) for k in first)


def test_tiny_model_rejects_inconsistent_dimensions(tmp_path: Path, small_dataset_dir: Path, training_config) -> None:
    model_cfg = training_config.model.model_copy(update={"tiny_hidden_size": 90, "tiny_num_heads": 4})
    with pytest.raises(ValueError, match="tiny_hidden_size=90"):
        create_tiny_model(small_dataset_dir, load_catalog(small_dataset_dir / CATALOG_FILE), model_cfg, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_model_card_roundtrip_and_missing_card(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match=r"no intentops\.json"):
        read_model_card(tmp_path)
    card = write_model_card(tmp_path, stage="sft", base_model="x", catalog_hash="c", dataset_hash="d")
    assert read_model_card(tmp_path) == card
    (tmp_path / MODEL_CARD).write_text("{broken")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        read_model_card(tmp_path)


def test_copy_model_passes_weights_on_with_a_new_card(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = copy_model(tiny_model_dir, tmp_path / "copy", stage="grpo2", note="skipped")
    card = read_model_card(out)
    assert card["stage"] == "grpo2" and card["note"] == "skipped"
    assert card["parent"]["stage"] == "init"
    assert (out / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert (out / CATALOG_FILE).exists()


def test_resolve_model_local_and_missing(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert resolve_model(tiny_model_dir) == tiny_model_dir
    with pytest.raises(FileNotFoundError):
        resolve_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        resolve_model(tmp_path / "empty")


def test_resolve_model_fetches_an_s3_prefix_once(tmp_path: Path, tiny_model_dir: Path, s3_bucket: str) -> None:
    from transformers import AutoModelForCausalLM

    from intentops.storage import upload

    uri = f"s3://{s3_bucket}/models/tiny"
    upload(tiny_model_dir, uri)
    cache = tmp_path / "cache"
    local = resolve_model(uri, cache)
    assert local.is_relative_to(cache)
    assert read_model_card(local) == read_model_card(tiny_model_dir)
    AutoModelForCausalLM.from_pretrained(local)
    (local / "sentinel").write_text("fetched once")
    assert resolve_model(uri, cache) == local
    assert (local / "sentinel").exists()  # served from the cache, not fetched again
