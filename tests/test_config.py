"""The run configuration: shipped files load, knobs round-trip, and bad combinations fail naming the knob."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from intentops.artifacts import CATALOG_FILE, RECORDS_FILE
from intentops.config import (
    DEFAULT_CONFIG,
    EXAMPLE_DIR,
    IMAGES_ENV,
    RESOURCES,
    ConfigError,
    RunConfig,
    flat_fields,
    load_config,
)
from intentops.knob_rules import THOUGHT_MIN_TOKENS

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), RunConfig)


def test_flat_round_trip_and_overrides():
    cfg = load_config(None, {"sft__epochs": 1, "data__unseen_intents": ["play_music"]})
    assert cfg.sft.epochs == 1
    assert cfg.data.unseen_intents == ["play_music"]
    assert RunConfig.from_flat(cfg.flat()) == cfg


def test_every_knob_is_a_described_flat_field():
    fields = {f.name: f for f in flat_fields()}
    assert set(fields) == set(RunConfig().flat())
    assert all(f.description for f in fields.values())
    assert fields["grpo__num_generations"].type is int
    assert fields["gate__mode"].default == "enabled"


def test_errors_name_the_source_and_field(tmp_path):
    with pytest.raises(ConfigError, match="unknown configuration knob 'sft__nope'"):
        load_config(None, {"sft__nope": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  epochs: -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: sft__epochs: Input should be greater than 0"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("- a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)
    bad.write_text("grpo:\n  vllm_mode: server\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="grpo__vllm_mode: unknown knob"):
        load_config(bad)


# Each bad combination -> the knob its message must start with (the flat name a user sets in the Kubeflow UI).
BAD_COMBINATIONS = [
    ({"grpo__batch_size": 6, "grpo__num_generations": 4}, "grpo__batch_size: .* = 6 completions per step"),
    (
        {"grpo__batch_size": 4, "grpo__gradient_accumulation_steps": 3, "grpo__num_generations": 8},
        "grpo__batch_size: .*4 x 3 = 12 .*grpo__num_generations=8",
    ),
    ({"data__val_fraction": 0.5, "data__test_fraction": 0.5}, "data__test_fraction: .* leaves nothing to train on"),
    ({"data__multi_share_min": 0.6, "data__multi_share_max": 0.5}, "data__multi_share_min: 0.6 is above"),
    ({"model__profile": "pretrained"}, "model__base_model: model__profile=pretrained needs"),
    ({"model__load_in_4bit": True}, "model__load_in_4bit: .*model__lora=true"),
    ({"model__tiny_hidden_size": 30, "model__tiny_num_heads": 4}, "model__tiny_num_heads: "),
    ({"model__tiny_num_heads": 4, "model__tiny_num_kv_heads": 3}, "model__tiny_num_kv_heads: "),
    ({"model__tiny_max_positions": 256, "sft__max_length": 384}, "sft__max_length: .*384 tokens exceeds"),
    ({"model__tiny_max_positions": 400}, "grpo__max_prompt_length: .*= 408 tokens exceeds"),
    (
        {"evaluation__decoding": "vllm", "model__tiny_max_positions": 2048, "serving__max_model_len": 4096},
        "serving__max_model_len: .*4096 tokens exceeds model__tiny_max_positions=2048",
    ),
    (
        {"serving__target": "kserve", "serving__max_model_len": 256, "sft__max_length": 384},
        "serving__max_model_len: 256 tokens is shorter than the training examples",
    ),
    ({"prompt__output_mode": "thought"}, "grpo__max_completion_length: 24 tokens cannot hold a reasoning block"),
    (
        {
            "prompt__output_mode": "thought",
            "grpo__max_completion_length": THOUGHT_MIN_TOKENS,
            "evaluation__max_new_tokens": THOUGHT_MIN_TOKENS,
            "evaluation__decoding": "label_scoring",
        },
        "evaluation__decoding: label_scoring",
    ),
    ({"prompt__few_shot": "fixed", "prompt__few_shot_k": 0}, "prompt__few_shot_k: "),
]


@pytest.mark.parametrize(
    ("overrides", "message"), BAD_COMBINATIONS, ids=lambda v: ",".join(v) if isinstance(v, dict) else ""
)
def test_bad_combinations_fail_naming_the_knob(overrides, message):
    with pytest.raises(ConfigError, match=f"flat parameters: {message}"):
        load_config(None, overrides)


def test_completion_lengths_follow_the_output_mode_when_unset():
    """Unset or 0: the output mode's default (64 answer, 256 thought); a value the user sets is kept."""
    lengths = lambda cfg: (cfg.grpo.max_completion_length, cfg.evaluation.max_new_tokens)  # noqa: E731
    assert lengths(RunConfig()) == (64, 64)
    assert lengths(RunConfig.model_validate({"prompt": {"output_mode": "thought"}})) == (256, 256)
    explicit = {"prompt": {"output_mode": "thought"}, "grpo": {"max_completion_length": 200}}
    assert lengths(RunConfig.model_validate(explicit | {"evaluation": {"max_new_tokens": 0}})) == (200, 256)
    # A flat override of the mode re-derives the lengths that were defaulted, and keeps the ones that were set.
    thought = RunConfig.from_flat({"prompt__output_mode": "thought"})
    assert lengths(thought) == (256, 256)
    assert lengths(RunConfig.from_flat({"prompt__output_mode": "answer"}, base=thought)) == (64, 64)
    kept = RunConfig.from_flat({"prompt__output_mode": "thought", "evaluation__max_new_tokens": 300})
    assert lengths(RunConfig.from_flat({"prompt__output_mode": "answer"}, base=kept)) == (64, 300)
    # tiny-cpu.yaml sets 24 tokens for answers: too few for thought mode, and the error says how to get the default.
    with pytest.raises(
        ConfigError, match=r"grpo__max_completion_length: 24 tokens .*0 or unset takes the thought default, 256"
    ):
        load_config(None, {"prompt__output_mode": "thought"})
    zeros = {"grpo__max_completion_length": 0, "evaluation__max_new_tokens": 0}
    assert lengths(load_config(None, {"prompt__output_mode": "thought"} | zeros)) == (256, 256)
    # The GPU configs write 0: the same file serves both modes.
    gpu = RESOURCES / "configs" / "gpu-lora-1p5b.yaml"
    assert lengths(load_config(gpu)) == (64, 64)
    assert lengths(load_config(gpu, {"prompt__output_mode": "thought"})) == (256, 256)
    # Pipeline parameters offer both as 0, so a run that only switches the mode in the UI gets the thought lengths.
    defaults = {field.name: field.default for field in flat_fields()}
    assert {name: defaults[name] for name in zeros} == zeros
    assert lengths(RunConfig.from_flat(defaults | {"prompt__output_mode": "thought"})) == (256, 256)
    assert lengths(RunConfig.from_flat(defaults)) == (64, 64)
    # ... and so do the arguments of a run (or a compiled variant's defaults); a length the config sets is passed on.
    from pipelines.parameters import pipeline_arguments

    arguments = pipeline_arguments(thought)
    assert {name: arguments[name] for name in zeros} == zeros
    assert lengths(RunConfig.from_flat(arguments)) == (256, 256)
    assert pipeline_arguments(load_config(None))["grpo__max_completion_length"] == 24


def test_good_neighbours_of_the_bad_combinations_load():
    """The rules draw the line where TRL and the model do, not further."""
    load_config(None, {"grpo__batch_size": 4, "grpo__gradient_accumulation_steps": 2, "grpo__num_generations": 8})
    load_config(None, {"data__val_fraction": 0.4, "data__test_fraction": 0.5})
    load_config(None, {"model__profile": "pretrained", "model__base_model": "s3://models/x"})
    load_config(None, {"model__load_in_4bit": True, "model__lora": True})
    load_config(
        None,
        {
            "prompt__output_mode": "thought",
            "grpo__max_completion_length": THOUGHT_MIN_TOKENS,
            "evaluation__max_new_tokens": THOUGHT_MIN_TOKENS,
        },
    )
    # The tiny-model limit does not apply to a pretrained model; vLLM's limit only where vLLM loads the model.
    load_config(None, {"model__profile": "pretrained", "model__base_model": "/m", "model__tiny_max_positions": 64})
    load_config(None, {"model__tiny_max_positions": 1024, "serving__max_model_len": 4096})
    # label scoring scores the tokens answers begin with, so it works with the copy tokens (one `intent(` token)
    load_config(None, {"model__tiny_copy_tokens": True, "evaluation__decoding": "label_scoring"})
    load_config(None, {"serving__max_model_len": 256, "sft__max_length": 384})  # tiny-cpu: no vLLM
    load_config(None, {"grpo__use_vllm": True, "model__tiny_max_positions": 1024})  # TRL sizes its own engine
    load_config(None, {"data__unseen_intents": ["play_music"], "data__unseen_domain": "weather"}).check_catalog()
    # A catalog that cannot be read now (s3://) is checked by the data stages, not here.
    load_config(None, {"data__catalog": "s3://bucket/catalog.yaml", "data__unseen_intents": ["x"]}).check_catalog()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data__unseen_intents": ["no_such_intent"]}, "data__unseen_intents: not in the catalog: no_such_intent"),
        ({"data__unseen_domain": "space"}, "data__unseen_domain: 'space' is not a domain"),
        ({"data__unseen_intents": "ALL"}, "data__unseen_intents: every catalog intent is held out"),
    ],
)
def test_held_out_intents_are_checked_against_the_catalog(overrides, message):
    """Separate from loading: CLI data commands may check against another catalog (--catalog); resolve-config and
    the pipeline use data.catalog."""
    from intentops.catalog import load_catalog

    if overrides.get("data__unseen_intents") == "ALL":
        overrides = {"data__unseen_intents": load_catalog(EXAMPLE_DIR / CATALOG_FILE).names}
    cfg = load_config(None, overrides)
    with pytest.raises(ConfigError, match=message):
        cfg.check_catalog()


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"model__profile": "pretrained", "data__val_fraction": 0.5, "data__test_fraction": 0.6})
    assert "model__base_model" in str(caught.value) and "data__test_fraction" in str(caught.value)


def test_grpo_generation_batch_mirrors_trl():
    """The derived sizes grpo.py uses are the ones TRL's GRPOConfig computes."""
    trl = pytest.importorskip("trl")
    cfg = load_config(None, {"grpo__batch_size": 4, "grpo__gradient_accumulation_steps": 2, "grpo__num_generations": 8})
    args = trl.GRPOConfig(
        output_dir="unused",
        per_device_train_batch_size=cfg.grpo.batch_size,
        gradient_accumulation_steps=cfg.grpo.gradient_accumulation_steps,
        num_generations=cfg.grpo.num_generations,
        report_to="none",
        use_cpu=True,
    )
    assert cfg.grpo.generation_batch_size(args.world_size) == args.generation_batch_size == 8
    assert cfg.grpo.prompts_per_step(args.world_size) == 1
    assert cfg.grpo.generation_batch_size(3) == 24 and cfg.grpo.prompts_per_step(3) == 3


def test_defaults_are_bundled_with_the_package_not_a_checkout():
    cfg = RunConfig()
    for path in (cfg.data.manifest, cfg.data.catalog):
        assert Path(path).is_file() and Path(path).is_relative_to(RESOURCES), path
    assert DEFAULT_CONFIG.is_file() and IMAGES_ENV.is_file()
    assert (RESOURCES / "configs" / "deepspeed" / "zero3.json").is_file()


def test_relative_bundled_names_resolve_from_any_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        None,
        {"data__manifest": "examples/assistant/manifest.jsonl", "sft__deepspeed": "configs/deepspeed/zero2.json"},
    )
    assert cfg.data.manifest == str(EXAMPLE_DIR / "manifest.jsonl")
    assert cfg.sft.deepspeed == str(RESOURCES / "configs" / "deepspeed" / "zero2.json")
    # A file of that name in the working folder wins over the bundled one; unknown names stay as given.
    (tmp_path / "examples" / "assistant").mkdir(parents=True)
    (tmp_path / "examples" / "assistant" / "manifest.jsonl").write_text("", encoding="utf-8")
    assert load_config(None, {"data__manifest": "examples/assistant/manifest.jsonl"}).data.manifest == (
        "examples/assistant/manifest.jsonl"
    )
    assert load_config(None, {"sft__deepspeed": "configs/nope.json"}).sft.deepspeed == "configs/nope.json"


def test_ui_descriptions_say_what_the_knob_does():
    for field in flat_fields():
        assert "seed 00" not in field.description.lower(), field.name


@pytest.mark.parametrize(
    "command",
    [["compile", "--out", "{tmp}/compiled"], ["split", str(EXAMPLE_DIR / RECORDS_FILE), "--out", "{tmp}/split"]],
    ids=["compile", "split"],
)
def test_a_bad_combination_fails_the_cli_in_seconds_naming_the_knob(tmp_path, command):
    """`intentops compile` (and any other command) refuses a bad config before doing any work."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo:\n  batch_size: 6\n  num_generations: 4\n", encoding="utf-8")
    args = [part.format(tmp=tmp_path) for part in command]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from intentops.cli import main; raise SystemExit(main())", *args, "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode != 0
    assert "grpo__batch_size" in done.stderr and "grpo__num_generations=4" in done.stderr, done.stderr[-2000:]
    assert elapsed < 10, f"{elapsed:.1f} s"
    assert not (tmp_path / "compiled").exists() and not (tmp_path / "split").exists()


def test_model_cards_written_with_a_removed_prompt_knob_still_load(tmp_path):
    """prompt.similarity was removed (only TF-IDF ever worked); models registered before still rebuild their prompt."""
    import json

    from intentops.catalog import load_catalog
    from intentops.prompting import MODEL_CARD, PromptBuilder

    load_catalog(EXAMPLE_DIR / CATALOG_FILE).to_yaml(tmp_path / CATALOG_FILE)
    card = {"prompt": {"output_mode": "answer", "similarity": "tfidf", "few_shot": "none"}}
    (tmp_path / MODEL_CARD).write_text(json.dumps(card), encoding="utf-8")
    assert PromptBuilder.from_model_dir(tmp_path).cfg.output_mode == "answer"
