"""The KFP components: resolve-config takes every knob, folder layout, images, stage specs."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from intentops.config import RunConfig, flat_fields, load_config

STAGES = {
    "convert_itag": "convert-itag",
    "validate_dataset": "validate-dataset",
    "sft_warmup": "sft-warmup",
    "grpo_stage1": "grpo-stage1",
    "mine_hard_samples": "mine-hard-samples",
    "grpo_stage2": "grpo-stage2",
    "evaluate": "evaluate",
    "evaluate_champion": "evaluate-champion",
    "gate": "gate",
    "register_model": "register-model",
    "deploy_vllm": "deploy-vllm",
    "check_changes": "check-changes",
}
GPU_STAGES = {"sft_warmup", "grpo_stage1", "grpo_stage2", "evaluate", "evaluate_champion"}
ROOT = Path(__file__).resolve().parents[1]
COMPONENTS_DIR = ROOT / "components"


def _module(folder: str):
    return importlib.import_module(f"components.{folder}.component")


def _component(folder: str):
    return getattr(_module(folder), folder)


def test_resolve_config_takes_every_knob_with_its_type_and_description():
    from components.resolve_config.component import resolve_config

    inputs = resolve_config.component_spec.inputs
    for field in flat_fields():
        assert field.name in inputs, field.name
        assert inputs[field.name].description == field.description
    assert set(inputs) == {field.name for field in flat_fields()}
    assert set(resolve_config.component_spec.outputs) == {"config", "gpu_node_selector", "gpu_tolerations"}


@pytest.mark.parametrize("folder", sorted(STAGES))
def test_stage_folder_layout_and_readme_names_every_input_and_output(folder):
    readme = (COMPONENTS_DIR / folder / "README.md").read_text(encoding="utf-8")
    spec = _component(folder).component_spec
    assert spec.name == STAGES[folder]
    assert readme.startswith(f"# {STAGES[folder]}\n")
    for name in [*spec.inputs, *(spec.outputs or {})]:
        assert f"`{name}`" in readme, f"components/{folder}/README.md does not describe {name!r}"
    assert _module(folder).SPEC.name == STAGES[folder]


def test_index_lists_every_stage():
    index = (COMPONENTS_DIR / "README.md").read_text(encoding="utf-8")
    for folder in [*STAGES, "resolve_config"]:
        assert f"({folder}/README.md)" in index, folder


@pytest.mark.parametrize("folder", [*sorted(STAGES), "resolve_config"])
def test_components_run_in_the_pinned_trainer_image_without_pip_installs(folder):
    from intentops.images import image_pins

    module = importlib.import_module(f"components.{folder}.component")
    component = getattr(module, folder)
    container = component.component_spec.implementation.container
    assert container.image == image_pins(ROOT / "images" / "versions.env")["TRAINER_IMAGE"]
    command = " ".join(container.command)
    assert "pip install" not in command, "the trainer image already has intentops and kfp"
    assert "kfp.dsl.executor_main" in command, "kfp.local's SubprocessRunner only runs lightweight components"


def test_stage_specs_put_gpus_caching_and_retries_where_they_belong():
    specs = {folder: _module(folder).SPEC for folder in STAGES}
    assert {folder for folder, spec in specs.items() if spec.gpu} == GPU_STAGES
    assert {folder for folder, spec in specs.items() if spec.caching} == {
        "validate_dataset",
        "mine_hard_samples",
        "evaluate",
    }
    for folder in ("sft_warmup", "grpo_stage1", "grpo_stage2"):
        assert specs[folder].retries >= 1, folder
    for folder in ("gate", "deploy_vllm", "check_changes"):
        assert specs[folder].retries == 0 and not specs[folder].caching, folder
    assert not specs["evaluate_champion"].caching  # the registry's champion changes between runs
    for spec in specs.values():
        assert spec.cpu_request and spec.cpu_limit and spec.memory_request and spec.memory_limit


def test_resolve_config_runs_under_kfp_local_and_writes_the_run_config(tmp_path):
    """The component really executes (kfp.local, as in `intentops run`) and round-trips the config."""
    import kfp.local

    from components.resolve_config.component import resolve_config

    cfg = load_config(
        None, {"sft__epochs": 2.0, "data__unseen_intents": ["play_music"], "cluster__gpu_toleration_key": ""}
    )
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    with pytest.warns(RuntimeWarning, match="non-Python base image"):
        task = resolve_config(**cfg.flat())
    config_path = Path(task.outputs["config"].path)
    assert load_config(config_path) == cfg
    assert task.outputs["config"].metadata["knobs"] == len(flat_fields())
    assert re.fullmatch(r"[0-9a-f]{64}", task.outputs["config"].metadata["config_sha256"])
    assert task.outputs["gpu_node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert task.outputs["gpu_tolerations"] == []
    assert yaml.safe_load(config_path.read_text())["sft"]["epochs"] == 2.0


@pytest.mark.parametrize(
    ("bad", "knob"),
    [
        ({"grpo__batch_size": 6, "grpo__num_generations": 4}, "grpo__batch_size"),
        ({"data__unseen_intents": ["no_such_intent"]}, "data__unseen_intents"),
    ],
    ids=["grpo-batch", "unseen-vs-catalog"],
)
def test_resolve_config_rejects_a_bad_knob_combination_naming_the_knob(tmp_path, capfd, bad, knob):
    import kfp.local

    from components.resolve_config.component import resolve_config

    flat = RunConfig().flat() | bad
    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True
    )
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="resolve-config"):
        resolve_config(**flat)
    assert f"{knob}: " in capfd.readouterr().out
