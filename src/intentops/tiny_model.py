"""The tiny profile's base model: a byte-level BPE tokenizer and a random-initialised Qwen2 built from the dataset.

The tiny profile exists so the whole recipe runs on a CPU: a byte-level BPE tokenizer is trained on the dataset's
texts, the call strings, the catalog and the rendered prompts (so the long system prompt costs few tokens), wrapped
with the Qwen2.5 special tokens and chat template, and a small `Qwen2ForCausalLM` is initialised from a fixed seed.
The result is an ordinary model folder (`intentops.models.save_model`), loaded like any pretrained base.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.artifacts import TRAIN_FILE
from intentops.catalog import Catalog
from intentops.config import ModelConfig, PromptConfig
from intentops.io import read_jsonl
from intentops.models import dataset_hash, save_model

if TYPE_CHECKING:
    from intentops.prompting import PromptBuilder

log = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

# Qwen2.5's chat layout (system/user/assistant turns between <|im_start|> and <|im_end|>), without the tool-call
# branches the intent detector does not use: the tools are rendered into the system prompt by PromptBuilder.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _training_texts(dataset_dir: Path) -> list[dict[str, Any]]:
    path = dataset_dir / TRAIN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: training split not found (expected a validated dataset folder)")
    records = list(read_jsonl(path))
    for index, record in enumerate(records, start=1):
        for field in ("text", "output"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise ValueError(f"{path}:{index}: record {record.get('id', '?')!r} has no {field!r} string")
    if not records:
        raise ValueError(f"{path}: no training records")
    return records


def _tokenizer_corpus(records: Sequence[dict[str, Any]], catalog: Catalog, builder: PromptBuilder) -> Iterator[str]:
    """What the tokenizer should compress well: every message the model will read and every answer it will write."""
    yield catalog.to_yaml_text()
    for record in records:
        yield record["text"]
        yield builder.target(record["output"])
        for message in builder.messages(record["text"]):
            yield f"{message['role']}\n{message['content']}"
        yield "assistant\n"
    if builder.cfg.output_mode == "answer":
        yield from builder.label_continuations().values()


# Punctuation of the call syntax, kept as tokens of their own: with Qwen2's pre-tokenisation a "(" or "," would
# otherwise be glued to the argument after it ("(garage", ",\"I"), so the answer spells an argument with other tokens
# than the utterance it is copied from.
CALL_PUNCTUATION = ("(", ")", ",", '"', ";")


def _is_cjk(char: str) -> bool:
    return unicodedata.name(char, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))


def copy_friendly_tokens(records: Sequence[dict[str, Any]], catalog: Catalog) -> list[str]:
    """Tokens that make the answer easy to learn: each intent name with its "(", call punctuation, space, CJK chars.

    An intent is then one token (picking it is one classification step), and an argument is the same tokens in the
    answer as in the utterance it is copied from: English words stop carrying their leading space (the space is a
    token of its own) and Chinese is split by character (BPE merges inside a run of Chinese text would make 杭州 in
    我想去杭州玩 different tokens from 杭州 in weather_search(杭州)).
    """
    chars = sorted({char for record in records for char in record["text"] + record["output"] if _is_cjk(char)})
    return [f"{name}(" for name in catalog.names] + list(CALL_PUNCTUATION) + [" "] + chars


def _split_on(tokens: Sequence[str], corpus: Iterable[str]) -> Iterator[str]:
    """The corpus as the trained tokenizer will see it: added tokens cut out first, so merges never span them."""
    pattern = re.compile("|".join(re.escape(token) for token in sorted(tokens, key=len, reverse=True)))
    for text in corpus:
        yield from (piece for piece in pattern.split(text) if piece)


def train_tokenizer(corpus: Iterable[str], vocab_size: int, added_tokens: Sequence[str] = ()) -> Any:
    """Byte-level BPE (any input text stays encodable) with Qwen2.5's special tokens and chat template.

    `added_tokens` are matched before BPE (ordinary, not special, tokens: they decode like text).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Exactly Qwen2's normalisation and pre-tokenisation: transformers loads any folder whose config says qwen2 with
    # Qwen2Tokenizer, which rebuilds these from vocab and merges, so training them any other way would make the
    # tokenizer split text differently from how its merges were learned.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_split_on(added_tokens, corpus) if added_tokens else corpus, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    wrapped.add_tokens([AddedToken(token, normalized=False, special=False) for token in added_tokens])
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def create_tiny_model(
    dataset_dir: str | Path,
    catalog: Catalog,
    model_cfg: ModelConfig,
    out_dir: str | Path,
    prompt_cfg: PromptConfig | None = None,
) -> Path:
    """Build the tiny profile's base model from a dataset: BPE tokenizer trained on its prompts, random-init Qwen2.

    Deterministic (fixed seed): the same dataset, catalog and config always give the same tokenizer and weights, so a
    re-run or a resumed SFT starts from the very same base.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from intentops.prompting import PromptBuilder

    if model_cfg.tiny_hidden_size % model_cfg.tiny_num_heads:
        raise ValueError(
            f"model.tiny_hidden_size={model_cfg.tiny_hidden_size} is not divisible by "
            f"model.tiny_num_heads={model_cfg.tiny_num_heads}"
        )
    if model_cfg.tiny_num_heads % model_cfg.tiny_num_kv_heads:
        raise ValueError(
            f"model.tiny_num_heads={model_cfg.tiny_num_heads} is not divisible by "
            f"model.tiny_num_kv_heads={model_cfg.tiny_num_kv_heads}"
        )
    dataset_dir = Path(dataset_dir)
    prompt_cfg = prompt_cfg or PromptConfig()
    records = _training_texts(dataset_dir)
    builder = PromptBuilder(catalog, prompt_cfg, examples=records)
    log.info("training a %d-token byte-level BPE tokenizer on %d records", model_cfg.tiny_vocab_size, len(records))
    added = copy_friendly_tokens(records, catalog) if model_cfg.tiny_copy_tokens else []
    tokenizer = train_tokenizer(_tokenizer_corpus(records, catalog, builder), model_cfg.tiny_vocab_size, added)

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg.tiny_hidden_size,
        intermediate_size=model_cfg.tiny_intermediate_size,
        num_hidden_layers=model_cfg.tiny_num_layers,
        num_attention_heads=model_cfg.tiny_num_heads,
        num_key_value_heads=model_cfg.tiny_num_kv_heads,
        max_position_embeddings=model_cfg.tiny_max_positions,
        initializer_range=model_cfg.tiny_initializer_range,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(ENDOFTEXT)],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny Qwen2: %d parameters, vocabulary %d", n_params, len(tokenizer))
    return save_model(
        model,
        tokenizer,
        out_dir,
        builder,
        base_model=f"tiny-qwen2:{model_cfg.tiny_num_layers}x{model_cfg.tiny_hidden_size}",
        stage="init",
        catalog_hash=catalog.content_hash,
        dataset_hash=dataset_hash(dataset_dir),
        parameters=n_params,
    )
