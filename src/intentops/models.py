"""Model folders: loading (local path or s3://), the model-folder contract (card, catalog), and generation.

Every stage hands the next one an ordinary Hugging Face folder plus `intentops.json` (the model card: base model,
stage, catalog/dataset hashes, prompt configuration, parent card) and `catalog.yaml`, so evaluation, registry and
serving load any stage's output with `from_pretrained` exactly as they would load Qwen2.5-7B-Instruct, and rebuild the
very prompt the model was trained with. The tiny profile's base model is built in `intentops.tiny_model`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops import __version__
from intentops.artifacts import DATASET_MANIFEST, MODEL_CARD, NOT_MODEL_FILES
from intentops.config import ModelConfig
from intentops.io import atomic_path, read_json, write_json

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from intentops.prompting import PromptBuilder


class ModelCardError(FileNotFoundError):
    """A folder that is not a complete IntentOps model (no card, or a card that cannot be read)."""


def model_dtype(model_cfg: ModelConfig) -> Any:
    """The torch dtype to load and train with: `auto` means bf16 where CUDA supports it, else fp32."""
    import torch

    if model_cfg.dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, model_cfg.dtype)


def bf16_available() -> bool:
    """Whether mixed-precision bf16 training is possible here (trainer flags follow the hardware, not the config)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def dataset_hash(dataset_dir: str | Path) -> str:
    """The validated dataset's content hash from its manifest ("" for a folder without one)."""
    manifest = Path(dataset_dir) / DATASET_MANIFEST
    return str(read_json(manifest).get("dataset_hash", "")) if manifest.exists() else ""


def resolve_model(uri: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local Hugging Face folder for `uri`: local folders as they are, s3:// prefixes fetched once into the cache."""
    from intentops.storage import ensure_local

    path = ensure_local(str(uri), cache_dir or None)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{uri}: not a Hugging Face model folder (no config.json in {path})")
    return path


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The model folder's tokenizer, padding on the left so batched generation continues every prompt at its end."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(f"{path}: the tokenizer has no chat template; use an instruct/chat model or the tiny profile")
    return tokenizer


def load_model_and_tokenizer(
    path: str | Path, model_cfg: ModelConfig, *, for_training: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer with the configured dtype (QLoRA: 4-bit base via bitsandbytes)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    kwargs: dict[str, Any] = {"dtype": model_dtype(model_cfg)}
    if model_cfg.load_in_4bit:
        import torch
        from transformers import BitsAndBytesConfig

        if not torch.cuda.is_available():
            raise ValueError("model.load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes; none is available here")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=model_dtype(model_cfg),
        )
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not for_training:
        model.eval()
    return model, tokenizer


def write_model_card(model_dir: str | Path, **meta: Any) -> dict[str, Any]:
    """Write `intentops.json` (atomically, last: its presence marks the folder complete) and return it."""
    card = {**meta, "intentops_version": __version__, "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json(Path(model_dir) / MODEL_CARD, card)
    return card


def read_model_card(model_dir: str | Path) -> dict[str, Any]:
    """The model card of a finished model folder; a folder without one is incomplete or not ours."""
    path = Path(model_dir) / MODEL_CARD
    if not path.is_file():
        raise ModelCardError(f"{model_dir}: no {MODEL_CARD}; not a complete IntentOps model folder")
    try:
        card = read_json(path)
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{path}: not valid JSON: {exc.msg}") from None
    if not isinstance(card, dict) or "stage" not in card:
        raise ModelCardError(f"{path}: not a model card (no 'stage')")
    return card


def base_card(model_dir: str | Path) -> dict[str, Any]:
    """The card of a model folder used as a training base: ours, or a minimal one for a plain HF folder."""
    try:
        return read_model_card(model_dir)
    except ModelCardError:
        return {"stage": "pretrained", "base_model": str(model_dir)}


def invalidate_model_dir(model_dir: str | Path) -> None:
    """Drop the card of an output folder about to be rewritten, so a crash midway never looks like a finished model."""
    card = Path(model_dir) / MODEL_CARD
    if card.exists():
        card.unlink()


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    builder: PromptBuilder,
    **card: Any,
) -> Path:
    """Save weights, tokenizer, the prompt builder's files and the card into `out_dir` (see `publish_model_dir`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    invalidate_model_dir(out)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return publish_model_dir(staging, out, builder, **card)


def publish_model_dir(staging: str | Path, out_dir: str | Path, builder: PromptBuilder, **card: Any) -> Path:
    """Move a written staging folder (weights + tokenizer) into `out_dir`, add the prompt builder's files
    (catalog.yaml, few-shot pool) and write the card with the prompt configuration last, as the completion marker.

    Files move in one by one, so a folder with a card always holds the whole model; other content of `out_dir`
    (checkpoints/, rollouts.parquet) stays. `PromptBuilder.from_model_dir` rebuilds the training prompt from it.
    """
    staging, out = Path(staging), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    invalidate_model_dir(out)
    try:
        builder.save(staging)
        for item in staging.iterdir():
            target = out / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_model_card(out, **{"prompt": builder.to_dict(), **card})
    return out


# Card fields that describe the model's identity and carry over when a folder is passed on unchanged.
IDENTITY_FIELDS = ("base_model", "catalog_hash", "dataset_hash", "prompt")


def copy_model(src_dir: str | Path, out_dir: str | Path, **card_updates: Any) -> Path:
    """Pass a model folder on unchanged (weights, tokenizer, catalog) under a new card, atomically.

    The new card keeps the source's identity (base model, hashes, prompt) and records the source card as parent.
    """
    src = Path(src_dir)
    parent_card = read_model_card(src)
    identity = {key: parent_card[key] for key in IDENTITY_FIELDS if key in parent_card}
    with atomic_path(out_dir) as tmp:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*NOT_MODEL_FILES))
        write_model_card(tmp, **identity, **card_updates, parent=parent_card)
    return Path(out_dir)


def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Greedy completions for chat prompts, batched with left padding (used for quick in-training checks)."""
    import torch

    model_was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start : start + batch_size]
            texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chunk]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                generated = model.generate(
                    **encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            new_tokens = generated[:, encoded["input_ids"].shape[1] :]
            outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        model.train(model_was_training)
    return outputs
