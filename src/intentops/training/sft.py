"""SFT warm-up: teach the base model the answer format before GRPO.

TRL's `SFTTrainer` on a conversational prompt-completion dataset built by `PromptBuilder`, so the loss covers only the
assistant's answer. Full fine-tuning or LoRA/QLoRA (peft; adapters are merged so the next stage gets a plain Hugging
Face folder), DeepSpeed ZeRO through the trainer arguments, bf16 only where the hardware has it, checkpoints under
`out_dir/checkpoints` and resume from the newest one. On the tiny profile the base model is first built from the
dataset itself (`intentops.tiny_model.create_tiny_model`).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import random
import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops import tracking
from intentops.artifacts import CATALOG_FILE, MODEL_CARD, TRAIN_FILE
from intentops.catalog import load_catalog
from intentops.config import RunConfig
from intentops.hf_names import checkpointing_arg
from intentops.io import read_json, read_jsonl, sha256_file, write_json
from intentops.models import (
    base_card,
    bf16_available,
    dataset_hash,
    generate_completions,
    invalidate_model_dir,
    load_model_and_tokenizer,
    load_tokenizer,
    model_dtype,
    publish_model_dir,
    read_model_card,
    resolve_model,
)
from intentops.prompting import PromptBuilder
from intentops.rewards import intent_reward, params_reward
from intentops.tiny_model import create_tiny_model
from intentops.training.augment import substituted_copies
from intentops.training.checkpoints import RemoteCheckpoints, check_model_weights, newest_usable, restore_once

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RESUME_KEY = "resume_key.json"  # what the checkpoints were trained from: data, base model, training config
TINY_BASE = "tiny-base"


def load_split(path: str | Path) -> list[dict[str, Any]]:
    """Records of a dataset split; each needs `id`, `text` and `output` (errors name the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset split not found")
    records = []
    for line_no, record in enumerate(read_jsonl(path), start=1):
        missing = [key for key in ("id", "text", "output") if not record.get(key)]
        if missing:
            raise ValueError(f"{path}:{line_no}: record lacks {', '.join(missing)}")
        records.append(record)
    return records


def sft_rows(records: Sequence[dict[str, Any]], builder: PromptBuilder) -> list[dict[str, Any]]:
    """TRL conversational prompt-completion rows: loss on the assistant turn only."""
    return [
        {
            "prompt": builder.messages(record["text"]),
            "completion": [{"role": "assistant", "content": builder.target(record["output"])}],
        }
        for record in records
    ]


def quick_check(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    builder: PromptBuilder,
    records: Sequence[dict[str, Any]],
    max_new_tokens: int,
    batch_size: int = 16,
) -> dict[str, float]:
    """Greedy intent/parameter accuracy and format validity on `records`: a sanity figure, not the evaluation."""
    if not records:
        return {"samples": 0}
    completions = generate_completions(
        model, tokenizer, [builder.messages(r["text"]) for r in records], max_new_tokens, batch_size
    )
    intent = params = valid = 0.0
    for record, completion in zip(records, completions, strict=True):
        calls = builder.extract_calls(completion)
        valid += builder.format_ok(completion, strict=True)
        intent += intent_reward(calls, record["output"], partial=False)
        params += params_reward(calls, record["output"])
    n = len(records)
    return {"samples": n, "intent_accuracy": intent / n, "param_accuracy": params / n, "format_valid": valid / n}


def check_sample(records: Sequence[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """Up to `n` records drawn reproducibly."""
    if n >= len(records):
        return list(records)
    return random.Random(seed).sample(list(records), n)


def resolve_base_model(dataset_dir: Path, base_model: str, cfg: RunConfig, out: Path) -> Path:
    """The base model folder: given URI, the config's pretrained base, or the tiny model built from the dataset."""
    uri = base_model or (cfg.model.base_model if cfg.model.profile == "pretrained" else "")
    if uri:
        return resolve_model(uri, cfg.model.cache_dir or None)
    if cfg.model.profile != "tiny":
        raise ValueError("model.profile is 'pretrained' but neither --base-model nor model.base_model is set")
    tiny_dir = out / CHECKPOINTS / TINY_BASE
    catalog = load_catalog(dataset_dir / CATALOG_FILE)
    if (tiny_dir / MODEL_CARD).exists() and read_model_card(tiny_dir).get("catalog_hash") == catalog.content_hash:
        log.info("reusing the tiny base model in %s", tiny_dir)
        return tiny_dir
    return create_tiny_model(dataset_dir, catalog, cfg.model, tiny_dir, cfg.prompt)


def lora_config(cfg: RunConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.model.lora_r,
        lora_alpha=cfg.model.lora_alpha,
        lora_dropout=cfg.model.lora_dropout,
        target_modules=list(cfg.model.lora_target_modules),
        task_type="CAUSAL_LM",
    )


def merge_adapter(adapter_dir: Path, base_dir: Path, cfg: RunConfig, staging: Path) -> None:
    """Merge saved LoRA adapters into a freshly loaded, unquantised base and save the plain model to `staging`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=model_dtype(cfg.model))
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(staging)


def stage_trained_model(
    trainer: Any, out: Path, name: str, base_dir: Path, cfg: RunConfig, tokenizer: PreTrainedTokenizerBase
) -> Path | None:
    """Write the trained weights (LoRA adapters merged into the base) and the tokenizer to `out/.staging-<name>`.

    Every process must call it (ZeRO-3 gathers the shards while saving); returns the folder on the main process and
    None elsewhere. The folder is then published with `intentops.models.publish_model_dir`.
    """
    staging = out / f".staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return None
    (staging / "training_args.bin").unlink(missing_ok=True)
    if cfg.model.lora:
        adapter = out / f".staging-{name}-adapter"
        shutil.rmtree(adapter, ignore_errors=True)
        staging.rename(adapter)
        staging.mkdir()
        merge_adapter(adapter, base_dir, cfg, staging)
        shutil.rmtree(adapter, ignore_errors=True)
    tokenizer.save_pretrained(staging)
    return staging


def deepspeed_config(path: str, knob: str) -> str | None:
    """The DeepSpeed JSON to hand the trainer (bundled `configs/deepspeed/...` names are resolved by the config)."""
    if not path:
        return None
    if Path(path).is_file():
        return path
    raise FileNotFoundError(f"{knob}={path!r}: DeepSpeed config not found (bundled ones: configs/deepspeed/*.json)")


def resumable_checkpoint(checkpoints: Path, key: dict[str, Any]) -> str | None:
    """The newest checkpoint if it was trained from the same data, base model and config (`key`), else None.

    Checkpoints of another key are removed (they are this output's own `checkpoint-N` folders), so neither this
    run nor a later resume can continue a model trained on other data.
    """
    key = json.loads(json.dumps(key, default=str))
    key_file = checkpoints / RESUME_KEY
    stored = read_json(key_file) if key_file.is_file() else None
    last = newest_usable(checkpoints)
    if last and stored == key:
        return last
    if last:
        changed = sorted(name for name in key if (stored or {}).get(name) != key[name])
        log.warning("not resuming from %s: %s changed since; training from the start", last, ", ".join(changed))
        for old in checkpoints.glob("checkpoint-*"):
            shutil.rmtree(old)
    checkpoints.mkdir(parents=True, exist_ok=True)
    write_json(key_file, key)
    return None


def sft_training_args(cfg: RunConfig, checkpoints: Path) -> Any:
    """TRL `SFTConfig` from the run configuration (bf16 only where the hardware has it; DeepSpeed passed through)."""
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=cfg.sft.epochs,
        learning_rate=cfg.sft.learning_rate,
        weight_decay=cfg.sft.weight_decay,
        per_device_train_batch_size=cfg.sft.batch_size,
        gradient_accumulation_steps=cfg.sft.gradient_accumulation_steps,
        max_length=cfg.sft.max_length,
        lr_scheduler_type="cosine",
        logging_steps=cfg.sft.logging_steps,
        save_strategy="steps",
        save_steps=cfg.sft.save_steps,
        save_total_limit=cfg.sft.save_total_limit,
        bf16=bf16_available() and cfg.model.dtype in ("auto", "bfloat16"),
        fp16=False,
        deepspeed=deepspeed_config(cfg.sft.deepspeed, "sft.deepspeed"),
        seed=cfg.sft.seed,
        data_seed=cfg.sft.seed,
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinned host memory only helps copies to a GPU
        use_cpu=not torch.cuda.is_available(),  # CPU workers under torchrun then form a gloo group
        **version_dependent_args(SFTConfig, cfg.sft.warmup_ratio, cfg.sft.gradient_checkpointing),
    )


def version_dependent_args(args_class: type, warmup_ratio: float, checkpointing: bool) -> dict[str, Any]:
    """Warm-up and activation-checkpointing arguments under the names the installed transformers reads.

    transformers 5 dropped `warmup_ratio` (a float `warmup_steps` below 1 is read as a ratio) and renamed
    `gradient_checkpointing` to `activation_checkpointing`; 4.x knows only the old names.
    """
    fields = {f.name for f in dataclasses.fields(args_class)}
    args: dict[str, Any] = (
        {"warmup_ratio": warmup_ratio} if "warmup_ratio" in fields else {"warmup_steps": warmup_ratio}
    )
    return args | checkpointing_arg(args_class, checkpointing)


def run_sft(
    dataset_dir: str | Path,
    base_model: str,
    cfg: RunConfig,
    out_dir: str | Path,
    pipeline_run_id: str | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    """Supervised warm-up of `base_model` (path or s3://; empty = config's base or the tiny profile) on the
    dataset's train split. Writes a model folder with card (stage "sft") and catalog.yaml to `out_dir`.

    `callbacks` are extra `transformers.TrainerCallback`s (progress hooks, tests that interrupt training).
    With `sft.enabled=false` the base model is handed on untrained (`intentops.training.start`).
    """
    if not cfg.sft.enabled:
        from intentops.training.start import hand_on_base

        return hand_on_base(dataset_dir, base_model, cfg, out_dir, pipeline_run_id)
    from datasets import Dataset

    from intentops.training.callbacks import MlflowStepMetrics, ProgressLog, UploadCheckpoints
    from intentops.training.launch import distributed_state
    from intentops.training.shared_prefix import SharedPrefixSFTTrainer

    _one_progress_bar()
    dataset_dir, out = Path(dataset_dir), Path(out_dir)
    records = load_split(dataset_dir / TRAIN_FILE)
    catalog = load_catalog(dataset_dir / CATALOG_FILE)
    out.mkdir(parents=True, exist_ok=True)
    invalidate_model_dir(out)
    state = distributed_state()
    # The local rank 0 of each node downloads the base model (nodes share no disk); the others then read it. A
    # multi-node TrainJob gets the tiny base from its stage (transformers writes model files on global rank 0 only).
    with state.local_main_process_first():
        base_dir = resolve_base_model(dataset_dir, base_model, cfg, out)
    builder = PromptBuilder(catalog, cfg.prompt, examples=records)
    tokenizer = load_tokenizer(base_dir)
    pool = cfg.sft.argument_swap_pool
    swapped = substituted_copies(
        records, cfg.sft.argument_swaps, cfg.sft.seed, shared=pool != "intent", similar_length=pool == "similar_length"
    )
    dataset = Dataset.from_list(sft_rows(records + swapped, builder))
    checkpoints = out / CHECKPOINTS
    resume_key = {
        "train_sha256": sha256_file(dataset_dir / TRAIN_FILE),
        "base_model": str(base_model or cfg.model.base_model or "tiny"),
        "sft": cfg.sft.model_dump(exclude={"resume"}),
        "model": cfg.model.model_dump(),
        "prompt": cfg.prompt.model_dump(),
    }
    resume_from = resumable_checkpoint(checkpoints, resume_key) if cfg.sft.resume else None
    if not cfg.sft.resume:  # checkpoints of this run must not pass for the recorded key's later
        (checkpoints / RESUME_KEY).unlink(missing_ok=True)
    remote = RemoteCheckpoints.from_config(cfg.storage.checkpoint_uri, pipeline_run_id, "sft", resume_key)
    if remote and cfg.sft.resume and not resume_from:
        resume_from = restore_once(remote, checkpoints)
    if resume_from:
        log.info("resuming SFT from %s", resume_from)
    check_model_weights(base_dir)

    args = sft_training_args(cfg, checkpoints)
    params = {
        "base_model": str(base_model or cfg.model.base_model or "tiny"),
        "base_dir": str(base_dir),
        "train_records": len(records),
        "substituted_records": len(swapped),
        "resumed_from": resume_from or "",
        **{f"sft__{k}": v for k, v in cfg.sft.model_dump().items()},
        **{f"model__{k}": v for k, v in cfg.model.model_dump().items()},
        **{f"prompt__{k}": v for k, v in cfg.prompt.model_dump().items() if k != "system_prompt"},
    }
    main = state.is_main_process
    stage_run = tracking.stage_run("sft", cfg, pipeline_run_id, params=params) if main else nullcontext(None)
    with stage_run as run:
        model, _ = load_model_and_tokenizer(base_dir, cfg.model)
        trainer = SharedPrefixSFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(cfg) if cfg.model.lora else None,
            callbacks=[
                MlflowStepMetrics(),
                ProgressLog("sft", ("loss", "learning_rate", "mean_token_accuracy")),
                *([UploadCheckpoints(remote, cfg.sft.save_total_limit)] if remote else []),
                *callbacks,
            ],
        )
        log.info("SFT on %d records from %s (%s)", len(records), base_dir, "LoRA" if cfg.model.lora else "full")
        result = trainer.train(resume_from_checkpoint=resume_from)
        staging = stage_trained_model(trainer, out, "sft", base_dir, cfg, tokenizer)
        del trainer, model
        gc.collect()
        _free_accelerator_memory()
        if staging is None:  # not the main process
            return out
        check = _final_check(staging, builder, records, cfg)
        parent = base_card(base_dir)
        card = {
            "base_model": parent.get("base_model", str(base_dir)),
            "stage": "sft",
            "catalog_hash": catalog.content_hash,
            "dataset_hash": dataset_hash(dataset_dir),
            "parent": parent,
            "training": {
                "records": len(records),
                "steps": result.global_step,
                "train_loss": result.training_loss,
                "lora": cfg.model.lora,
                "processes": state.num_processes,
                "resumed_from": resume_from,
                "mlflow_run_id": run.info.run_id,
                "train_check": check,
            },
        }
        publish_model_dir(staging, out, builder, **card)
        _log_final(result, check, out)
    log.info("SFT model written to %s (train-sample intent accuracy %s)", out, check.get("intent_accuracy"))
    return out


def _one_progress_bar() -> None:
    """Keep the trainer's step bar as the stage's one bar: no per-pass dataset bars, no weight loading/saving bars."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def _final_check(model_dir: Path, builder: PromptBuilder, records: list[dict[str, Any]], cfg: RunConfig) -> dict:
    """Reload the saved weights (proving they load like any HF model) and measure greedy accuracy on a sample."""
    import torch

    sample = check_sample(records, cfg.sft.check_samples, cfg.sft.seed)
    if not sample:
        return {"samples": 0}
    model, tokenizer = load_model_and_tokenizer(model_dir, cfg.model, for_training=False)
    if torch.cuda.is_available():
        model.to("cuda")
    check = quick_check(model, tokenizer, builder, sample, cfg.evaluation.max_new_tokens, cfg.evaluation.batch_size)
    del model
    gc.collect()
    return check


def _log_final(result: Any, check: dict[str, float], out: Path) -> None:
    import mlflow

    metrics = {f"train_check_{k}": float(v) for k, v in check.items()}
    metrics.update({k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)})
    mlflow.log_metrics(metrics)
    mlflow.log_artifact(str(out / MODEL_CARD))


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
