"""SFT warm-up: it teaches the task, writes a complete model folder, resumes from checkpoints, merges LoRA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from intentops.artifacts import CATALOG_FILE, DATASET_MANIFEST, MODEL_CARD, TRAIN_FILE
from intentops.config import RunConfig
from intentops.models import load_model_and_tokenizer, read_model_card
from intentops.prompting import PromptBuilder
from intentops.training.sft import check_sample, load_split, quick_check, run_sft


def _records(dataset_dir: Path) -> list[dict[str, Any]]:
    return load_split(dataset_dir / TRAIN_FILE)


def _accuracy(model_dir: Path, records: list[dict[str, Any]], cfg: RunConfig) -> dict[str, float]:
    model, tokenizer = load_model_and_tokenizer(model_dir, cfg.model, for_training=False)
    builder = PromptBuilder.from_model_dir(model_dir)
    return quick_check(model, tokenizer, builder, records, max_new_tokens=24, batch_size=32)


def test_sft_lifts_training_accuracy_far_above_chance(
    sft_model_dir: Path, tiny_model_dir: Path, small_dataset_dir: Path, training_config: RunConfig
) -> None:
    sample = check_sample(_records(small_dataset_dir), 48, seed=1)
    before = _accuracy(tiny_model_dir, sample, training_config)
    after = _accuracy(sft_model_dir, sample, training_config)
    chance = 1 / len(json.loads((small_dataset_dir / DATASET_MANIFEST).read_text())["seen_intents"])
    assert before["intent_accuracy"] < chance  # the random model cannot even answer in format
    assert after["format_valid"] >= 0.95
    assert after["intent_accuracy"] >= 0.75 > 3 * chance
    assert after["param_accuracy"] > before["param_accuracy"]


def test_sft_output_is_a_complete_model_folder(sft_model_dir: Path, small_dataset_dir: Path) -> None:
    card = read_model_card(sft_model_dir)
    manifest = json.loads((small_dataset_dir / DATASET_MANIFEST).read_text())
    assert card["stage"] == "sft"
    assert card["parent"]["stage"] == "init" and card["base_model"] == card["parent"]["base_model"]
    assert card["dataset_hash"] == manifest["dataset_hash"] and card["catalog_hash"] == manifest["catalog_hash"]
    training = card["training"]
    assert training["records"] == manifest["counts"]["train"]["total"]
    assert training["steps"] > 0 and training["train_check"]["intent_accuracy"] >= 0.75
    assert (sft_model_dir / CATALOG_FILE).exists() and (sft_model_dir / "tokenizer.json").exists()
    assert not list(sft_model_dir.glob(".staging*")) and not (sft_model_dir / "training_args.bin").exists()


def test_sft_logs_params_and_per_step_metrics_to_mlflow(sft_model_dir: Path, training_config: RunConfig) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(training_config.registry.tracking_uri)
    run = client.get_run(read_model_card(sft_model_dir)["training"]["mlflow_run_id"])
    assert run.data.tags["intentops.stage"] == "sft"
    assert run.data.params["sft__learning_rate"] == str(training_config.sft.learning_rate)
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert len(losses) >= 3 and losses[-1].value < losses[0].value
    assert [m.step for m in losses] == sorted(m.step for m in losses)
    assert run.data.metrics["train_check_intent_accuracy"] >= 0.75


class _Interrupt(RuntimeError):
    pass


class _CrashAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        raise _Interrupt(f"simulated crash after saving step {state.global_step}")


class _RecordSteps(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.steps.append(state.global_step)


def test_sft_resumes_from_the_last_checkpoint(
    tmp_path: Path, tiny_model_dir: Path, small_dataset_dir: Path, training_config: RunConfig
) -> None:
    cfg = RunConfig.from_flat(
        {"sft__epochs": 1, "sft__batch_size": 16, "sft__save_steps": 4, "sft__check_samples": 0},
        base=training_config,
    )
    out = tmp_path / "sft"
    with pytest.raises(_Interrupt):
        run_sft(small_dataset_dir, str(tiny_model_dir), cfg, out, callbacks=[_CrashAfterFirstSave()])
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    assert not (out / MODEL_CARD).exists()  # a crashed run never looks finished

    steps = _RecordSteps()
    run_sft(small_dataset_dir, str(tiny_model_dir), cfg, out, callbacks=[steps])
    card = read_model_card(out)
    total = -(-len(_records(small_dataset_dir)) // 16)
    assert card["training"]["resumed_from"].endswith("checkpoint-4")
    assert steps.steps == list(range(5, total + 1))  # continued after step 4, did not start over
    assert card["training"]["steps"] == total

    fresh = RunConfig.from_flat({"sft__resume": False}, base=cfg)
    steps = _RecordSteps()
    run_sft(small_dataset_dir, str(tiny_model_dir), fresh, out, callbacks=[steps])
    assert steps.steps[0] == 1 and read_model_card(out)["training"]["resumed_from"] is None


def test_sft_lora_merges_adapters_into_a_plain_model(
    tmp_path: Path, tiny_model_dir: Path, small_dataset_dir: Path, training_config: RunConfig
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    cfg = RunConfig.from_flat(
        {
            "model__lora": True,
            "model__lora_r": 4,
            "sft__epochs": 1,
            "sft__learning_rate": 0.01,
            "sft__check_samples": 8,
        },
        base=training_config,
    )
    out = run_sft(small_dataset_dir, str(tiny_model_dir), cfg, tmp_path / "lora")
    assert not (out / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(out)
    base, merged = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(merged) == set(base)  # same plain Qwen2 weights, no lora_A/lora_B tensors
    changed = [k for k in base if not bool((base[k] == merged[k]).all())]
    assert changed and all(any(m in k for m in cfg.model.lora_target_modules) for k in changed)
    assert read_model_card(out)["training"]["lora"] is True


def test_sft_needs_a_base_for_the_pretrained_profile(
    tmp_path: Path, small_dataset_dir: Path, training_config: RunConfig
) -> None:
    """Refused when the configuration is built (intentops.knob_rules), before any stage runs."""
    with pytest.raises(ValueError, match=r"model__base_model: model__profile=pretrained needs"):
        RunConfig.from_flat({"model__profile": "pretrained", "model__base_model": ""}, base=training_config)


def test_sft_rejects_records_without_output(tmp_path: Path, small_dataset_dir: Path, training_config) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in (CATALOG_FILE, DATASET_MANIFEST):
        (broken / name).write_bytes((small_dataset_dir / name).read_bytes())
    lines = (small_dataset_dir / TRAIN_FILE).read_text().splitlines()
    record = json.loads(lines[2])
    record["output"] = ""
    lines[2] = json.dumps(record)
    (broken / TRAIN_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train\.jsonl:3: record lacks output"):
        run_sft(broken, "", training_config, tmp_path / "out")


# ---- shipped configurations ------------------------------------------------------------------------------------------

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["zero2.json", "zero3.json"])
def test_deepspeed_configs_load_through_the_trainer_arguments(name: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install 'intentops[train]')")
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from intentops.config import load_config
    from intentops.training.grpo import grpo_training_args
    from intentops.training.sft import sft_training_args

    # loaded first: while ZeRO-3 arguments are alive, from_pretrained would enter deepspeed.zero.Init
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    path = f"configs/deepspeed/{name}"
    cfg = load_config(overrides={"sft__deepspeed": path, "grpo__deepspeed": path})
    stage = 3 if name == "zero3.json" else 2
    try:
        for args in (sft_training_args(cfg, tmp_path / "sft"), grpo_training_args(cfg, tmp_path / "g", 4, [1, 1, 1])):
            ds = args.hf_deepspeed_config
            assert ds.is_zero3() == (stage == 3) and (stage == 3 or ds.is_zero2())
            ds.trainer_config_finalize(args, model, num_training_steps=10)
            assert '"auto"' not in json.dumps(ds.config)  # every auto value filled from the run configuration
            assert ds.config["train_micro_batch_size_per_gpu"] == args.per_device_train_batch_size
            assert ds.config["gradient_accumulation_steps"] == args.gradient_accumulation_steps
            assert ds.config["bf16"]["enabled"] is False  # no bf16 GPU here: the trainer decides, not the file
    finally:
        unset_hf_deepspeed_config()  # later tests in this process must not see a ZeRO-3 context


def test_weight_decay_reaches_the_optimizer(training_config: RunConfig, tmp_path: Path) -> None:
    from intentops.training.sft import sft_training_args

    assert sft_training_args(training_config, tmp_path).weight_decay == 0.0
    cfg = RunConfig.from_flat({"sft__weight_decay": 0.1}, base=training_config)
    assert sft_training_args(cfg, tmp_path).weight_decay == 0.1
    with pytest.raises(ValueError, match="weight_decay"):
        RunConfig.from_flat({"sft__weight_decay": -1}, base=training_config)


def test_deepspeed_path_must_exist(training_config: RunConfig, tmp_path: Path) -> None:
    from intentops.training.sft import sft_training_args

    cfg = RunConfig.from_flat({"sft__deepspeed": "configs/deepspeed/zero9.json"}, base=training_config)
    with pytest.raises(FileNotFoundError, match=r"sft\.deepspeed='configs/deepspeed/zero9\.json'"):
        sft_training_args(cfg, tmp_path)


@pytest.mark.parametrize("name", ["tiny-cpu.yaml", "gpu-lora-1p5b.yaml", "multi-gpu-zero3-7b.yaml"])
def test_shipped_run_configs_load(name: str) -> None:
    from intentops.config import load_config

    cfg = load_config(PROJECT / "configs" / name)
    if name == "tiny-cpu.yaml":
        assert cfg.model.profile == "tiny"
        return
    assert cfg.model.profile == "pretrained" and cfg.model.base_model and cfg.grpo.use_vllm
    assert (cfg.grpo.batch_size * cfg.grpo.gradient_accumulation_steps) % cfg.grpo.num_generations == 0
    if name == "gpu-lora-1p5b.yaml":
        assert cfg.model.lora and "1.5B" in cfg.model.base_model
    else:
        assert not cfg.model.lora and cfg.grpo.gradient_checkpointing and "7B" in cfg.model.base_model
        for path in (cfg.sft.deepspeed, cfg.grpo.deepspeed):
            assert json.loads((PROJECT / path).read_text())["zero_optimization"]["stage"] == 3


def test_shared_prefix_pass_gives_the_plain_forwards_loss_and_gradients(
    tmp_path: Path, tiny_model_dir: Path, small_dataset_dir: Path, training_config: RunConfig
) -> None:
    """The batch's common prompt prefix runs once; loss and every gradient match TRL's per-row forward."""
    import torch
    from datasets import Dataset

    from intentops.catalog import load_catalog
    from intentops.training.sft import sft_rows, sft_training_args
    from intentops.training.shared_prefix import SharedPrefixSFTTrainer, shared_prefix_length

    records = _records(small_dataset_dir)[:6]
    builder = PromptBuilder(load_catalog(small_dataset_dir / CATALOG_FILE), training_config.prompt)
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, training_config.model)
    trainer = SharedPrefixSFTTrainer(
        model=model,
        args=sft_training_args(training_config, tmp_path),
        train_dataset=Dataset.from_list(sft_rows(records, builder)),
        processing_class=tokenizer,
    )
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    split = shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert split > batch["input_ids"].shape[1] // 2  # the system prompt and catalog are most of every row
    assert (batch["labels"][:, : split + 1] == -100).all()

    def loss_and_grads(shared: bool) -> tuple[float, list]:
        model.train()
        model.zero_grad()
        inputs = {key: value.clone() for key, value in batch.items()}
        loss = (
            trainer.compute_loss(model, inputs)
            if shared
            else super(SharedPrefixSFTTrainer, trainer).compute_loss(model, inputs)
        )
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    shared_loss, shared_grads = loss_and_grads(shared=True)
    plain_loss, plain_grads = loss_and_grads(shared=False)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    assert len(shared_grads) == len(plain_grads) > 0
    for got, want in zip(shared_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_training_arguments_use_the_installed_transformers_names(training_config: RunConfig, tmp_path: Path) -> None:
    import warnings

    from intentops.training.sft import sft_training_args

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated argument names
        args = sft_training_args(training_config, tmp_path)
    assert args.get_warmup_steps(1000) == round(1000 * training_config.sft.warmup_ratio)
    assert args.dataloader_pin_memory is False  # CPU here: pinned memory only helps copies to a GPU
