"""Rules that tie configuration knobs together, checked whenever a RunConfig is built.

Each rule mirrors a check that would otherwise fail late (TRL's GRPOConfig, the tiny model's position table, the
prompt builder, the split) so the first command or pipeline step reports it in seconds. Messages start with the
flat knob name a user sets (`section__field`, as in the Kubeflow UI).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from intentops.config import RunConfig

# An answer in thought mode is a reasoning block, then the calls, then the template's closing literal: below this
# many new tokens the close is cut off and every rollout and evaluation answer counts as a format error.
THOUGHT_MIN_TOKENS = 128

# Completion budgets per output mode, used where a config leaves the knob unset (or 0). A call string is short; a
# reasoning block that GRPO lets grow needs room, and a rollout cut off before its answer earns no format or answer
# reward (GRPO also masks truncated completions out of the loss in thought mode).
MODE_LENGTH_DEFAULTS: dict[str, dict[str, int]] = {
    "answer": {"grpo__max_completion_length": 64, "evaluation__max_new_tokens": 64},
    "thought": {"grpo__max_completion_length": 256, "evaluation__max_new_tokens": 256},
}


def fill_mode_defaults(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`data` (a RunConfig as sections) with every completion-length knob left unset or 0 set to its output mode's
    default, and the flat names of the knobs so filled (RunConfig keeps them so a later change of mode re-derives
    them instead of keeping the old mode's value)."""
    data = dict(data)
    prompt = data.get("prompt")
    mode = prompt.get("output_mode") if isinstance(prompt, dict) else getattr(prompt, "output_mode", None)
    defaults = MODE_LENGTH_DEFAULTS.get(mode or "answer", MODE_LENGTH_DEFAULTS["answer"])
    filled = []
    for knob, value in defaults.items():
        section_name, _, key = knob.partition("__")
        section = data.get(section_name) or {}
        if isinstance(section, BaseModel):
            section = section.model_dump(exclude_unset=True)
        if not isinstance(section, dict):
            continue  # not a mapping: pydantic reports it with the section's own error
        if section.get(key) in (None, 0):
            section = {**section, key: value}
            filled.append(knob)
        data[section_name] = section
    return data, filled


def problems(cfg: RunConfig) -> list[str]:
    """Every broken rule of `cfg`, one message each (empty when the knobs agree)."""
    return [
        *_grpo_batch(cfg),
        *_split(cfg),
        *_model(cfg),
        *_lengths(cfg),
        *_vllm(cfg),
        *_prompt(cfg),
        *_processes(cfg),
        *_copying(cfg),
    ]


def _copying(cfg: RunConfig) -> list[str]:
    if cfg.evaluation.copy_arguments and not cfg.evaluation.constrained:
        return [
            "evaluation__copy_arguments: copying arguments from the utterance is a constraint on decoding; "
            "set evaluation__constrained=true as well"
        ]
    return []


def _processes(cfg: RunConfig) -> list[str]:
    # One training process drives one GPU (NCCL refuses two processes on one device).
    cluster = cfg.cluster
    if cluster.gpus_per_training_stage and cluster.training_processes > cluster.gpus_per_training_stage:
        return [
            f"cluster__training_processes: {cluster.training_processes} processes on "
            f"cluster__gpus_per_training_stage={cluster.gpus_per_training_stage} GPUs; use at most one per GPU "
            "(0 starts one per GPU)"
        ]
    if cluster.training_nodes > 1 and not cfg.storage.checkpoint_uri:
        # The nodes of a TrainJob share no disk with the stage's pod: inputs, the model and the result go through it.
        return [
            f"storage__checkpoint_uri: cluster__training_nodes={cluster.training_nodes} needs a location every node "
            "reaches (an s3:// prefix or a ReadWriteMany volume path) for the stage's inputs and model"
        ]
    return []


def _grpo_batch(cfg: RunConfig) -> list[str]:
    # TRL's GRPOConfig.__post_init__: generation_batch_size = per-device batch x processes x steps_per_generation
    # (= gradient_accumulation_steps by default) must be divisible by num_generations. Requiring it for one process
    # makes it hold for any number of processes, so the stage never fails after SFT has run.
    grpo = cfg.grpo
    per_process = grpo.generation_batch_size(1)
    if per_process % grpo.num_generations:
        return [
            f"grpo__batch_size: grpo__batch_size x grpo__gradient_accumulation_steps = {grpo.batch_size} x "
            f"{grpo.gradient_accumulation_steps} = {per_process} completions per step is not divisible by "
            f"grpo__num_generations={grpo.num_generations}; every step must hold whole groups of completions"
        ]
    return []


def _split(cfg: RunConfig) -> list[str]:
    data, found = cfg.data, []
    if data.val_fraction + data.test_fraction >= 1:
        found.append(
            f"data__test_fraction: data__val_fraction + data__test_fraction = "
            f"{data.val_fraction + data.test_fraction:g} leaves nothing to train on; keep the sum below 1"
        )
    if data.multi_share_min > data.multi_share_max:
        found.append(
            f"data__multi_share_min: {data.multi_share_min:g} is above data__multi_share_max={data.multi_share_max:g}"
        )
    return found


def _model(cfg: RunConfig) -> list[str]:
    model, found = cfg.model, []
    if model.profile == "pretrained" and not model.base_model:
        found.append("model__base_model: model__profile=pretrained needs the base model's folder or s3:// prefix")
    if model.load_in_4bit and not model.lora:
        found.append("model__load_in_4bit: 4-bit weights cannot be trained directly; set model__lora=true (QLoRA)")
    if model.profile == "tiny":
        if model.tiny_hidden_size % model.tiny_num_heads:
            found.append(
                f"model__tiny_num_heads: model__tiny_hidden_size={model.tiny_hidden_size} is not divisible by "
                f"{model.tiny_num_heads} heads"
            )
        if model.tiny_num_heads % model.tiny_num_kv_heads:
            found.append(
                f"model__tiny_num_kv_heads: model__tiny_num_heads={model.tiny_num_heads} is not divisible by "
                f"{model.tiny_num_kv_heads} key/value heads"
            )
    return found


def _lengths(cfg: RunConfig) -> list[str]:
    """The tiny model accepts at most tiny_max_positions tokens; so must everything that feeds it."""
    if cfg.model.profile != "tiny":
        return []
    limit, found = cfg.model.tiny_max_positions, []
    needs = {
        "sft__max_length": cfg.sft.max_length,
        "grpo__max_prompt_length + grpo__max_completion_length": cfg.grpo.max_prompt_length
        + cfg.grpo.max_completion_length,
    }
    # vLLM refuses a --max-model-len above the model's position table.
    if _vllm_serves(cfg):
        needs["serving__max_model_len"] = cfg.serving.max_model_len
    for knob, tokens in needs.items():
        if tokens > limit:
            found.append(f"{knob.split(' ')[0]}: {knob} = {tokens} tokens exceeds model__tiny_max_positions={limit}")
    return found


def _vllm_serves(cfg: RunConfig) -> bool:
    """Evaluation or deployment loads the model in vLLM with --max-model-len = serving.max_model_len."""
    return cfg.evaluation.decoding in ("vllm", "auto") or cfg.serving.target in ("kserve", "k8s")


def _vllm(cfg: RunConfig) -> list[str]:
    # A context shorter than the training examples would reject prompts the model was trained to answer.
    if _vllm_serves(cfg) and cfg.serving.max_model_len < cfg.sft.max_length:
        return [
            f"serving__max_model_len: {cfg.serving.max_model_len} tokens is shorter than the training examples "
            f"(sft__max_length={cfg.sft.max_length}); vLLM would reject prompts the model was trained on"
        ]
    return []


def _prompt(cfg: RunConfig) -> list[str]:
    prompt, found = cfg.prompt, []
    if prompt.few_shot != "none" and prompt.few_shot_k < 1:
        found.append(f"prompt__few_shot_k: prompt__few_shot={prompt.few_shot} needs at least one example")
    if prompt.output_mode == "thought":
        for knob, tokens in (
            ("grpo__max_completion_length", cfg.grpo.max_completion_length),
            ("evaluation__max_new_tokens", cfg.evaluation.max_new_tokens),
        ):
            if tokens < THOUGHT_MIN_TOKENS:
                found.append(
                    f"{knob}: {tokens} tokens cannot hold a reasoning block and the answer "
                    f"(prompt__output_mode=thought needs at least {THOUGHT_MIN_TOKENS}; 0 or unset takes the thought "
                    f"default, {MODE_LENGTH_DEFAULTS['thought'][knob]})"
                )
        if cfg.evaluation.decoding == "label_scoring":
            found.append(
                "evaluation__decoding: label_scoring ranks the intent name right after the prompt, which "
                "prompt__output_mode=thought puts after a reasoning block; use generate, vllm or auto"
            )
    return found


def catalog_problems(cfg: RunConfig) -> list[str]:
    """Held-out intents must exist in data.catalog, when it is a local file that can be read now.

    Not part of `problems`: CLI data commands may take another catalog (`--catalog`) and check against that one.
    The pipeline always uses data.catalog, so resolve-config runs this too.
    """
    data = cfg.data
    if not (data.unseen_intents or data.unseen_domain) or "://" in data.catalog or not Path(data.catalog).is_file():
        return []
    from intentops.catalog import CatalogError, load_catalog

    try:
        catalog = load_catalog(data.catalog)
    except CatalogError:
        return []  # the data stages report a broken catalog with the file's own errors
    found = []
    unknown = sorted(set(data.unseen_intents) - set(catalog.names))
    if unknown:
        found.append(f"data__unseen_intents: not in the catalog: {', '.join(unknown)} ({data.catalog})")
    if data.unseen_domain and data.unseen_domain not in catalog.domains:
        found.append(
            f"data__unseen_domain: {data.unseen_domain!r} is not a domain of {data.catalog} "
            f"(domains: {', '.join(catalog.domains)})"
        )
    held_out = set(data.unseen_intents) | {i.name for i in catalog.intents if i.domain == data.unseen_domain}
    if not unknown and held_out >= set(catalog.names):
        found.append("data__unseen_intents: every catalog intent is held out; nothing is left to train on")
    return found
