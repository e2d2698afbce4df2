"""The sections of the run configuration: every knob, its default and what it does.

`intentops.config` assembles them into `RunConfig`, loads YAML and flat overrides and exposes the knobs to Kubeflow;
this module only says what each section holds. Paths of the bundled defaults (example, configs, image pins) are here
because the defaults point at them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from intentops.artifacts import CATALOG_FILE

PACKAGE_ROOT = Path(__file__).resolve().parent
RESOURCES = PACKAGE_ROOT / "resources"
DEFAULT_CONFIG = RESOURCES / "configs" / "tiny-cpu.yaml"
EXAMPLE_DIR = RESOURCES / "examples" / "assistant"
IMAGES_ENV = RESOURCES / "images" / "versions.env"
FLAT_SEPARATOR = "__"

# Secret key -> environment variable. Keys missing from an optional mapping are simply not set (IRSA / workload
# identity clusters need no S3 keys); the MLflow tracking URI is required so a pod never logs to a local file.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION",
}
MLFLOW_REQUIRED_ENV = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}
MLFLOW_OPTIONAL_ENV = {
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN": "MLFLOW_TRACKING_TOKEN",
    # The S3 root behind MLflow's artifact proxy: deploy maps mlflow-artifacts:/ sources to s3:// with it.
    "MLFLOW_ARTIFACTS_DESTINATION": "MLFLOW_ARTIFACTS_DESTINATION",
}


class ConfigSection(BaseModel):
    """A section of the run configuration: unknown keys are an error, and so is an assignment of the wrong type."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def bundled_path(value: str) -> str:
    """A relative path that is not found here but names a bundled default (`examples/...`, `configs/...`) resolves
    inside the installed package; anything else (absolute, s3://, found relative to the working folder) is kept."""
    if not value or "://" in value or Path(value).is_absolute() or Path(value).exists():
        return value
    bundled = RESOURCES / value
    return str(bundled) if bundled.exists() else value


class DataConfig(ConfigSection):
    manifest: str = Field(str(EXAMPLE_DIR / "manifest.jsonl"), description="iTAG manifest: local path or s3:// URI.")
    catalog: str = Field(str(EXAMPLE_DIR / CATALOG_FILE), description="Intent catalog YAML: local path or s3:// URI.")
    max_reject_rate: float = Field(
        0.05, ge=0, le=1, description="Fail conversion when more manifest lines are rejected."
    )
    min_examples_per_intent: int = Field(50, ge=0, description="Fewer single-intent training examples is an error.")
    max_imbalance_ratio: float = Field(3.0, ge=1, description="Largest/smallest intent count above this warns.")
    max_text_chars: int = Field(512, ge=1, description="Longer utterances are flagged too_long.")
    multi_share_min: float = Field(0.0, ge=0, le=1, description="Multi-intent/multi-turn share below this warns.")
    multi_share_max: float = Field(0.5, ge=0, le=1, description="Multi-intent/multi-turn share above this warns.")
    severities: dict[str, Literal["error", "warning", "off"]] = Field(
        default_factory=dict, description="Override a validation check's severity, e.g. {imbalance: error}."
    )
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of each intent held out for validation.")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="Share of each intent held out for testing.")
    unseen_intents: list[str] = Field(
        default_factory=list, description="Intents left out of training entirely, tested as unseen."
    )
    unseen_domain: str = Field("", description="Leave every intent of this catalog domain out of training.")
    seed: int = Field(42, description="Seed for deterministic splitting.")

    _bundled = field_validator("manifest", "catalog")(bundled_path)


class ModelConfig(ConfigSection):
    profile: Literal["tiny", "pretrained"] = Field(
        "tiny",
        description="tiny: a small randomly initialised Qwen2 built and trained here (CPU demo); "
        "pretrained: fine-tune model.base_model.",
    )
    base_model: str = Field(
        "", description="pretrained: Hugging Face model folder or s3:// prefix (e.g. Qwen2.5-7B-Instruct)."
    )
    tiny_hidden_size: int = Field(96, ge=8, description="tiny profile: hidden size.")
    tiny_num_layers: int = Field(2, ge=1, description="tiny profile: decoder layers.")
    tiny_num_heads: int = Field(4, ge=1, description="tiny profile: attention heads.")
    tiny_num_kv_heads: int = Field(2, ge=1, description="tiny profile: key/value heads.")
    tiny_intermediate_size: int = Field(192, ge=8, description="tiny profile: MLP width.")
    tiny_vocab_size: int = Field(3000, ge=300, description="tiny profile: BPE vocabulary trained on the data.")
    tiny_copy_tokens: bool = Field(
        False, description="tiny profile: intent names, call punctuation, space and CJK characters as whole tokens."
    )
    tiny_max_positions: int = Field(
        4096, ge=64, description="tiny profile: longest sequence (prompt + answer) the model accepts, in tokens."
    )
    tiny_initializer_range: float = Field(
        0.08, gt=0, description="tiny profile: init std; above HF's 0.02 so a from-scratch model learns in few steps."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bf16 on GPU, else fp32."
    )
    lora: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Modules that get LoRA adapters.",
    )
    load_in_4bit: bool = Field(False, description="QLoRA: load the base model in 4-bit (bitsandbytes, GPU only).")
    cache_dir: str = Field("", description="Where s3:// models are fetched once; empty = ~/.cache/intentops.")


class PromptConfig(ConfigSection):
    output_mode: Literal["answer", "thought"] = Field(
        "answer",
        description="answer: the call only; thought: a reasoning block, then the call (GRPO rewards only the format "
        "and the call; the reasoning is the model's own).",
    )
    thought_template: Literal["react", "think_answer"] = Field(
        "react",
        description="Thought mode's template: react = `Thought: ...` / `Action: <calls>` / `Finish!` on their own "
        "lines; think_answer = `<think>...</think><answer><calls></answer>`.",
    )
    category_definitions: bool = Field(True, description="Show each intent's description and parameters.")
    few_shot: Literal["none", "fixed", "similar"] = Field(
        "none",
        description="In-context examples in the prompt: none; fixed (the same k for every prompt); "
        "similar (the k training examples closest to the utterance by TF-IDF).",
    )
    few_shot_k: int = Field(3, ge=0, description="How many in-context examples.")
    numeric_labels: bool = Field(False, description="Answer with the intent's number instead of its name.")
    uncertain_label: bool = Field(False, description="Offer an explicit `uncertain()` answer.")
    system_prompt: str = Field(
        "You are an intent detection expert. Pick the tool that serves the user's request and answer with the call.",
        description="First line of the system prompt.",
    )


class SftConfig(ConfigSection):
    enabled: bool = Field(
        True, description="Run the supervised warm-up; false starts GRPO straight from the base or instruct model."
    )
    epochs: float = Field(3.0, gt=0, description="Training epochs.")
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate.")
    batch_size: int = Field(8, ge=1, description="Per-device batch size.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Gradient accumulation.")
    max_length: int = Field(1024, ge=16, description="Max tokens per example (prompt + completion).")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Warm-up share of steps.")
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="AdamW weight decay: shrinks the weights a little every step, against memorising a small training "
        "split; 0 = off.",
    )
    logging_steps: int = Field(10, ge=1, description="Log every N steps.")
    save_steps: int = Field(200, ge=1, description="Checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    resume: bool = Field(True, description="Resume from the last checkpoint in the output folder if one exists.")
    deepspeed: str = Field(
        "", description="DeepSpeed JSON config path (bundled: configs/deepspeed/zero2.json, zero3.json); empty = none."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory.")
    check_samples: int = Field(
        64, ge=0, description="After training, greedy intent accuracy on up to N training records (0 = skip)."
    )
    uncertain_share: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="With prompt.uncertain_label on: share of training records, the ones the warmed-up model is "
        "least confident of, relabelled `uncertain()` before GRPO; 0 = none.",
    )
    argument_swaps: int = Field(
        0,
        ge=0,
        description="Extra copies of each training record whose arguments appear in its utterance, with each such "
        "argument swapped (in text and answer) for another value the same intent parameter takes in the training "
        "split, so the model learns to copy arguments from the utterance instead of recalling them from the "
        "phrasing; 0 = off. Each copy adds up to one training split's worth of steps per epoch.",
    )
    argument_swap_pool: Literal["intent", "shared", "similar_length"] = Field(
        "intent",
        description="Where swapped-in arguments come from: `intent` = values of the same parameter of the same "
        "intent; `shared` = any argument value of the training split in the same script (Chinese, digits, other); "
        "`similar_length` = the shared values within one character of the swapped one's length (all shared values "
        "when none is).",
    )
    seed: int = Field(42, description="Training seed.")

    _bundled = field_validator("deepspeed")(bundled_path)


class GrpoConfig(ConfigSection):
    stage1_max_steps: int = Field(200, ge=1, description="GRPO stage-1 optimizer steps.")
    stage2_max_steps: int = Field(100, ge=1, description="GRPO stage-2 optimizer steps on the hard set.")
    learning_rate: float = Field(1e-6, gt=0, description="Peak learning rate.")
    batch_size: int = Field(
        8,
        ge=1,
        description="Completions per device and step; x gradient_accumulation_steps divisible by num_generations.",
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Gradient accumulation.")
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt (group size).")
    beta: float = Field(0.04, ge=0, description="KL coefficient against the reference model.")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "dapo",
        description="How token losses are averaged: grpo (per completion), bnpo (per token of the device batch), "
        "dr_grpo (by a fixed length), dapo (per token of the whole step).",
    )
    algorithm: Literal["grpo", "dr_grpo", "reinforce_pp_baseline", "reinforce_pp", "rloo"] = Field(
        "grpo",
        description=(
            "How rewards become advantages. grpo: centred and scaled per group; dr_grpo: centred per group, unscaled, "
            "length-unbiased loss; reinforce_pp_baseline: centred per group, scaled by the batch std, KL in the "
            "reward; reinforce_pp: centred and scaled over the batch, KL in the reward; rloo: leave-one-out baseline "
            "(TRL RLOOTrainer), KL in the reward."
        ),
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for rollouts.")
    max_prompt_length: int = Field(1024, ge=16, description="Prompt tokens kept.")
    max_completion_length: int = Field(
        64,
        ge=4,
        description="Generated tokens per rollout; 0 or unset = the output mode's default (answer 64, thought 256).",
    )
    use_vllm: bool = Field(
        False, description="Generate rollouts with vLLM inside the training process, sharing its GPUs (needs vllm)."
    )
    reward_format_weight: float = Field(1.0, ge=0, description="Weight of the format reward.")
    reward_intent_weight: float = Field(1.0, ge=0, description="Weight of the intent reward.")
    reward_params_weight: float = Field(1.0, ge=0, description="Weight of the parameter reward.")
    strict_format: bool = Field(
        True, description="Format reward only for an answer that is exactly the template; off: a valid call anywhere."
    )
    reward_partial_credit: bool = Field(
        True, description="Multi-intent answers with some right calls earn their Jaccard overlap instead of 0."
    )
    collapse_threshold: float = Field(0.05, ge=0, description="Mean reward share at or below this counts as collapse.")
    collapse_patience: int = Field(
        20, ge=1, description="Optimizer steps of collapse before training stops with an error."
    )
    collapse_intent_drop: float = Field(
        0.25, ge=0, le=1, description="Intent reward below this share of its first logged value counts as collapse."
    )
    collapse_zero_std_share: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Share of groups whose rollouts all score the same at or above this, while the reward is not "
        "near perfect, counts as collapse (the policy is stuck on one answer); 1 = off.",
    )
    collapse_max_kl: float = Field(
        5.0, ge=0, description="Mean per-token KL to the reference above this counts as collapse; 0 = off."
    )
    collapse_length_ratio: float = Field(
        4.0,
        ge=0,
        description="Mean completion length more than this factor above or below its first logged value counts as "
        "collapse (in thought mode only below: the reasoning may grow); 0 = off.",
    )
    online_filtering: bool = Field(
        False,
        description="Drop prompt groups whose rollouts all score the same (no gradient) and refill the batch with "
        "fresh prompts from the sampler.",
    )
    logging_steps: int = Field(5, ge=1, description="Log every N steps.")
    save_steps: int = Field(100, ge=1, description="Checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory.")
    deepspeed: str = Field("", description="DeepSpeed JSON config path (as sft.deepspeed); empty = none.")
    seed: int = Field(42, description="Training seed.")

    _bundled = field_validator("deepspeed")(bundled_path)

    def generation_batch_size(self, num_processes: int = 1) -> int:
        """Completions TRL generates per optimizer step (its default: batch x processes x accumulation steps)."""
        return self.batch_size * num_processes * self.gradient_accumulation_steps

    def prompts_per_step(self, num_processes: int = 1) -> int:
        """Distinct prompts in one generation batch: each is sampled num_generations times."""
        return self.generation_batch_size(num_processes) // self.num_generations


class MiningConfig(ConfigSection):
    hard_threshold: float = Field(
        1.0, ge=0, le=1, description="A sample is hard when its share of perfect rollouts is below this."
    )
    easy_per_hard: float = Field(
        0.0, ge=0, description="Easy samples mixed into stage 2 per hard sample; 0 trains on hard samples only."
    )
    hard_includes_params: bool = Field(
        False, description="A perfect rollout also needs a perfect parameter reward (else format and intent only)."
    )
    score_generations: int = Field(
        0, ge=0, description="Completions sampled per record in the scoring pass; 0 = grpo.num_generations."
    )
    score_batch_size: int = Field(32, ge=1, description="Prompts per generation batch in the scoring pass.")
    score_backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="Scoring-pass generation: auto = vLLM when importable with a GPU, else transformers."
    )
    seed: int = Field(42, description="Seed for sampling easy examples.")


class EvaluationConfig(ConfigSection):
    decoding: Literal["generate", "label_scoring", "vllm", "auto"] = Field(
        "auto", description="auto: vllm when importable, else batched generation."
    )
    batch_size: int = Field(32, ge=1, description="Prompts per forward pass.")
    max_new_tokens: int = Field(
        64,
        ge=1,
        description="Tokens generated per answer; 0 or unset = the output mode's default (answer 64, thought 256).",
    )
    constrained: bool = Field(
        False,
        description="Generate only calls the catalog allows, as the vLLM server does (structured outputs); "
        "the unconstrained figures are reported beside.",
    )
    copy_arguments: bool = Field(
        False,
        description="With constrained: every argument value must be a span of the utterance, copied as written "
        "(for catalogs whose parameters are words the user said, e.g. a city or an order number; the data stage "
        "reports how many training arguments are). Serving enforces the same.",
    )
    label_score: Literal["sum", "mean"] = Field(
        "sum", description="label_scoring ranks by the label's total log-probability, or its mean per token."
    )
    label_normalization: Literal["vocabulary", "catalog"] = Field(
        "vocabulary",
        description="label_scoring: each token's probability against the whole vocabulary, or against the tokens "
        "some label can take there (what constrained decoding chooses from; much faster).",
    )
    baselines: bool = Field(True, description="Log majority-class and TF-IDF + linear baselines with every evaluation.")
    max_samples: int = Field(0, ge=0, description="Evaluate at most N test records; 0 = all.")


class GateConfig(ConfigSection):
    mode: Literal["enabled", "dry_run", "disabled"] = Field(
        "enabled", description="enabled blocks promotion; dry_run records the decision but passes."
    )
    min_intent_accuracy: float = Field(0.8, ge=0, le=1, description="Minimum intent accuracy.")
    min_param_accuracy: float = Field(0.7, ge=0, le=1, description="Minimum parameter accuracy.")
    min_per_intent_recall: float = Field(0.5, ge=0, le=1, description="Every seen intent needs at least this recall.")
    min_intent_support: int = Field(
        10, ge=1, description="Per-intent recall is checked only for intents with at least this many test records."
    )
    max_format_error_rate: float = Field(0.05, ge=0, le=1, description="Maximum share of unparseable answers.")
    min_unseen_accuracy: float = Field(
        0.5, ge=0, le=1, description="Minimum accuracy on unseen intents; checked whenever the test set has some."
    )
    min_exact_match: float = Field(
        0.0, ge=0, le=1, description="Minimum share of answers whose whole call list is exact; 0 = no floor."
    )
    max_regression: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Allowed drop against the champion; blocks only when the drop is above it with confidence 1-alpha.",
    )
    alpha: float = Field(
        0.05, gt=0, lt=1, description="Chance of blocking a candidate whose drops all stay within max_regression."
    )
    bootstrap_resamples: int = Field(2000, ge=100, description="Resamples of the test records per comparison.")
    underpowered: Literal["warn", "block"] = Field(
        "warn",
        description="When max_regression is below the drop the test set can detect: warn, or fail the gate.",
    )


class RegistryConfig(ConfigSection):
    tracking_uri: str = Field("", description="MLflow tracking URI; empty = $MLFLOW_TRACKING_URI or local sqlite.")
    experiment: str = Field("intentops", description="MLflow experiment (one per pipeline).")
    model_name: str = Field("intent-detector", description="Registered model name.")
    request_budget_s: float = Field(
        60.0,
        gt=0,
        description="Longest time one MLflow call keeps retrying an unreachable or failing server before the command "
        "fails (sets MLFLOW_HTTP_REQUEST_MAX_RETRIES, _BACKOFF_FACTOR and _TIMEOUT).",
    )
    force_retrain: bool = Field(
        False,
        description="retrain-if-changed only: train even when a registered version was already trained on this "
        "catalog and data (e.g. to retry with other training knobs after a failed gate). Off: such a run stops "
        "after check-changes, naming that version.",
    )


class ServingConfig(ConfigSection):
    target: Literal["kserve", "k8s", "local"] = Field("local", description="Where deploy puts the model.")
    namespace: str = Field("intentops", description="Kubernetes namespace for serving objects.")
    service_name: str = Field("intent-detector", description="InferenceService / Deployment name.")
    vllm_image: str = Field("", description="Override the pinned vLLM server image; empty = images/versions.env.")
    max_model_len: int = Field(4096, ge=64, description="vLLM --max-model-len.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM --gpu-memory-utilization.")
    canary_percent: int = Field(10, ge=0, le=100, description="Traffic to a new version before full promotion.")
    ready_timeout_s: int = Field(900, ge=1, description="Wait this long for Ready.")
    smoke_min_valid: float = Field(0.95, ge=0, le=1, description="Smoke test: share of answers that must be valid.")
    local_port: int = Field(5005, ge=1, le=65535, description="Port of the local MLflow model server.")
    max_text_chars: int = Field(
        0, ge=0, description="Local server: longest utterance it accepts (longer: HTTP 422); 0 = data.max_text_chars."
    )
    request_timeout_s: int = Field(
        60, ge=1, description="Local server: a request still running after this many seconds is answered 504."
    )
    kserve_mode: Literal["auto", "Knative", "Standard"] = Field(
        "auto",
        description="KServe deployment mode: Knative (canary by traffic split between revisions), Standard (plain "
        "Deployment, replaced in place and restored if the smoke test fails), auto = what the live "
        "InferenceService runs, else the cluster's KServe default.",
    )
    api_key_secret: str = Field(
        "", description="Secret whose VLLM_API_KEY key vLLM requires from every client; empty = no API key."
    )
    model_cache_pvc: str = Field(
        "", description="k8s target: ReadWriteMany PVC where each model version is downloaded once for all its pods."
    )


class ClusterConfig(ConfigSection):
    gpu_node_selector_key: str = Field("nvidia.com/gpu.present", description="Node label of the GPU pool.")
    gpu_node_selector_value: str = Field("true", description="Value of that label.")
    gpu_toleration_key: str = Field("nvidia.com/gpu", description="Taint key tolerated by GPU stages.")
    gpus_per_training_stage: int = Field(1, ge=0, description="nvidia.com/gpu per training/eval stage.")
    training_processes: int = Field(
        0,
        ge=0,
        description="Training processes per SFT/GRPO stage, one per GPU, started with torchrun (DeepSpeed ZeRO "
        "shards across them); 0: one per GPU the pod sees, 1 on a CPU.",
    )
    training_nodes: int = Field(
        1,
        ge=1,
        description="Nodes per SFT/GRPO stage: above 1 the stage submits a Kubeflow Trainer TrainJob of that many "
        "nodes (each running cluster.training_processes workers, gpus_per_training_stage GPUs), waits for it and "
        "shows its status and logs; inputs and the model travel through storage.checkpoint_uri.",
    )
    trainjob_runtime: str = Field(
        "torch-distributed",
        description="ClusterTrainingRuntime a multi-node TrainJob runs on (its pod template: node pool, volumes).",
    )
    trainjob_image: str = Field(
        "",
        description="Image of the TrainJob's nodes; empty: the image of the stage's own pod.",
    )
    trainjob_timeout_s: int = Field(
        172800, ge=60, description="A multi-node TrainJob still running after this many seconds is failed."
    )
    s3_secret: str = Field("intentops-s3", description="Secret with AWS_ACCESS_KEY_ID/SECRET and endpoint.")
    mlflow_secret: str = Field("intentops-mlflow", description="Secret with MLFLOW_TRACKING_URI and credentials.")

    def gpu_node_selector(self) -> dict[str, str]:
        """Node selector of the GPU stages; none when the label key is empty."""
        return {self.gpu_node_selector_key: self.gpu_node_selector_value} if self.gpu_node_selector_key else {}

    def gpu_tolerations(self) -> list[dict[str, str]]:
        """Tolerations of the GPU stages: the GPU pool's taint, none when the key is empty."""
        if not self.gpu_toleration_key:
            return []
        return [{"key": self.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}]


class StorageConfig(ConfigSection):
    checkpoint_uri: str = Field(
        "",
        description=(
            "Run-scoped checkpoint location (s3:// prefix or a local/PVC folder): SFT and GRPO upload every checkpoint "
            "to <uri>/<pipeline_run_id>/<stage>/ and a retried pod resumes from the newest complete one; "
            "empty = checkpoints stay in the pod's scratch and a retry starts over."
        ),
    )
    models_uri: str = Field(
        "",
        description=(
            "Models by reference (s3:// prefix or a local/PVC folder): SFT and GRPO write their model to "
            "<uri>/<pipeline_run_id>/<stage>/ and the pipeline's model artifact holds only model-ref.json (uri, size, "
            "content hash), which readers download once into model.cache_dir; empty = the whole folder is the artifact."
        ),
    )
