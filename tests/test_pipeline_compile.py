"""The compiled pipelines: committed YAML up to date, every knob a parameter, pod settings, dsl.If, CLI errors."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from intentops.cli import main
from intentops.config import RESOURCES, flat_fields

ROOT = Path(__file__).resolve().parents[1]
PIPELINES_DIR = ROOT / "pipelines"
GPU_TASKS = {"sft-warmup", "grpo-stage1", "grpo-stage2", "evaluate", "evaluate-champion"}
CACHED_TASKS = {"resolve-config", "validate-dataset", "mine-hard-samples", "evaluate"}
TRAINING_TASKS = {
    "resolve-config",
    "convert-itag",
    "validate-dataset",
    "sft-warmup",
    "grpo-stage1",
    "mine-hard-samples",
    "grpo-stage2",
    "evaluate",
    "evaluate-champion",
    "gate",
    "register-model",
    "deploy-vllm",
}
KFP_TYPES = {
    bool: "BOOLEAN",
    int: "NUMBER_INTEGER",
    float: "NUMBER_DOUBLE",
    str: "STRING",
    list: "LIST",
    dict: "STRUCT",
}


def _load(path: Path) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return spec, platform


def _without_sdk_version(spec: dict) -> dict:
    """The spec minus what changes with every commit: the SDK version and the image tag (it carries the commit)."""
    spec = json.loads(json.dumps({key: value for key, value in spec.items() if key != "sdkVersion"}))
    for executor in spec.get("deploymentSpec", {}).get("executors", {}).values():
        executor["container"]["image"] = executor["container"]["image"].rpartition(":")[0]
    return spec


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    from intentops.cli.pipeline import compile_pipeline

    out = tmp_path_factory.mktemp("compiled")
    return {
        stem: _load(compile_pipeline(stem, out / f"{stem}.yaml"))
        for stem in ("training_pipeline", "retrain_if_changed")
    }


def _all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of the pipeline, sub-DAGs included, by task name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def _executor_of(spec: dict, task: dict) -> str:
    return spec["components"][task["componentRef"]["name"]]["executorLabel"]


@pytest.mark.parametrize("stem", ["training_pipeline", "retrain_if_changed"])
def test_committed_yaml_is_up_to_date(compiled, stem):
    committed_spec, committed_platform = _load(PIPELINES_DIR / f"{stem}.yaml")
    spec, platform = compiled[stem]
    assert _without_sdk_version(committed_spec) == _without_sdk_version(spec), (
        f"pipelines/{stem}.yaml is stale: run `intentops compile` and commit the result"
    )
    assert committed_platform == platform


def test_every_knob_is_a_typed_described_parameter_with_its_default(compiled):
    spec, _ = compiled["training_pipeline"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {field.name for field in flat_fields()}
    for field in flat_fields():
        param = params[field.name]
        assert param["parameterType"] == KFP_TYPES[field.type], field.name
        assert param["description"] == field.description, field.name
        default = param["defaultValue"]
        expected = field.default
        if isinstance(expected, str) and expected.startswith(f"{RESOURCES}/"):
            expected = expected[len(f"{RESOURCES}/") :]  # bundled defaults by their bundled name
        assert default == expected, field.name
    assert params["data__manifest"]["defaultValue"] == "examples/assistant/manifest.jsonl"
    assert str(RESOURCES) not in json.dumps(spec) and str(ROOT) not in json.dumps(spec)


def test_training_dag_has_every_stage_and_gates_deployment(compiled):
    spec, _ = compiled["training_pipeline"]
    tasks = _all_tasks(spec)
    assert set(tasks) >= TRAINING_TASKS
    root = spec["root"]["dag"]["tasks"]
    # Every candidate is registered (the gate's decision picks its aliases); only deployment is conditional.
    assert "register-model" in root and "deploy-vllm" not in root
    assert set(root["register-model"]["dependentTasks"]) >= {"gate", "grpo-stage2", "evaluate"}
    condition = next(task for task in root.values() if task.get("triggerPolicy"))
    assert condition["taskInfo"]["name"] == "gate-passed"
    assert condition["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-Output'] == true"
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"deploy-vllm"}
    assert inner["deploy-vllm"]["inputs"]["parameters"]["version"]["componentInputParameter"] == (
        "pipelinechannel--register-model-version"
    )
    assert tasks["grpo-stage2"]["dependentTasks"] == ["grpo-stage1", "mine-hard-samples", "resolve-config"]
    # The champion is evaluated by its own task (the evaluate stage on @champion); the gate only compares.
    gate_inputs = tasks["gate"]["inputs"]["artifacts"]
    assert gate_inputs["evaluation"]["taskOutputArtifact"]["producerTask"] == "evaluate"
    assert gate_inputs["champion_evaluation"]["taskOutputArtifact"]["producerTask"] == "evaluate-champion"
    champion_inputs = tasks["evaluate-champion"]["inputs"]["artifacts"]
    assert champion_inputs["candidate_evaluation"]["taskOutputArtifact"]["producerTask"] == "evaluate"


def test_stages_get_the_run_id_and_the_config_artifact(compiled):
    spec, _ = compiled["training_pipeline"]
    for name, task in _all_tasks(spec).items():
        if name == "resolve-config" or name not in TRAINING_TASKS:
            continue
        params = task["inputs"]["parameters"]
        assert params["pipeline_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}", name
        source = task["inputs"]["artifacts"]["config"]
        producer = source.get("taskOutputArtifact", {}).get("producerTask") or source["componentInputArtifact"]
        assert "resolve-config" in producer, name


def test_gpu_stages_request_gpus_on_the_gpu_pool_per_run(compiled):
    spec, platform = compiled["training_pipeline"]
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, task in _all_tasks(spec).items():
        if name not in TRAINING_TASKS:
            continue
        label = _executor_of(spec, task)
        resources = executors[label]["container"]["resources"]
        assert resources["resourceCpuRequest"] and resources["resourceCpuLimit"], name
        assert resources["resourceMemoryRequest"] and resources["resourceMemoryLimit"], name
        if name in GPU_TASKS:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu", name
            assert "cluster__gpus_per_training_stage" in resources["accelerator"]["resourceCount"], name
            assert k8s[label]["nodeSelector"]["nodeSelectorJson"]["taskOutputParameter"] == {
                "outputParameterKey": "gpu_node_selector",
                "producerTask": "resolve-config",
            }
            assert k8s[label]["tolerations"] == [
                {
                    "tolerationJson": {
                        "taskOutputParameter": {
                            "outputParameterKey": "gpu_tolerations",
                            "producerTask": "resolve-config",
                        }
                    }
                }
            ]
            assert "pipelinechannel--cluster__gpus_per_training_stage" in task["inputs"]["parameters"]
        else:
            assert "accelerator" not in resources, name
            assert "nodeSelector" not in k8s.get(label, {}) and "tolerations" not in k8s.get(label, {}), name


def test_credentials_come_from_secrets_never_parameters(compiled):
    spec, platform = compiled["training_pipeline"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert not [name for name in params if re.search(r"password|access_key|secret_key|_token$|credential", name)]
    for name, task in _all_tasks(spec).items():
        if name not in TRAINING_TASKS:
            continue
        label = _executor_of(spec, task)
        if name == "resolve-config":
            assert "secretAsEnv" not in k8s.get(label, {})
            continue
        secrets = k8s[label]["secretAsEnv"]
        by_env = {
            entry["envVar"]: (mapping["secretNameParameter"]["componentInputParameter"], mapping["optional"])
            for mapping in secrets
            for entry in mapping["keyToEnv"]
        }
        assert by_env["AWS_ACCESS_KEY_ID"][0].endswith("cluster__s3_secret"), name
        assert by_env["AWS_SECRET_ACCESS_KEY"][1] is True, name
        assert by_env["MLFLOW_TRACKING_URI"] == (by_env["MLFLOW_TRACKING_URI"][0], False), name
        assert by_env["MLFLOW_TRACKING_URI"][0].endswith("cluster__mlflow_secret"), name


def test_caching_and_retries(compiled):
    spec, _ = compiled["training_pipeline"]
    tasks = _all_tasks(spec)
    cached = {name for name in TRAINING_TASKS if tasks[name]["cachingOptions"].get("enableCache")}
    assert cached == CACHED_TASKS
    retries = {name: tasks[name].get("retryPolicy", {}).get("maxRetryCount", 0) for name in TRAINING_TASKS}
    assert retries["sft-warmup"] == retries["grpo-stage1"] == retries["grpo-stage2"] == 2
    assert retries["gate"] == retries["deploy-vllm"] == retries["convert-itag"] == 0
    assert tasks["sft-warmup"]["retryPolicy"]["backoffDuration"] == "60s"


def test_every_executor_runs_the_pinned_trainer_image(compiled):
    from intentops.images import image_pins

    image = image_pins(ROOT / "images" / "versions.env")["TRAINER_IMAGE"]
    for spec, _ in compiled.values():
        images = {executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()}
        assert images == {image}


def test_retrain_if_changed_runs_training_only_when_inputs_changed(compiled):
    spec, _ = compiled["retrain_if_changed"]
    root = {task["taskInfo"]["name"]: task for task in spec["root"]["dag"]["tasks"].values()}
    # The config is resolved and the data converted and validated once; training starts from that dataset.
    assert set(root) == {"resolve-config", "convert-itag", "validate-dataset", "check-changes", "inputs-changed"}
    assert root["check-changes"]["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"]["producerTask"] == (
        "validate-dataset"
    )
    condition = root["inputs-changed"]["triggerPolicy"]["condition"]
    assert condition == "inputs.parameter_values['pipelinechannel--check-changes-Output'] == true"
    inner = spec["components"][root["inputs-changed"]["componentRef"]["name"]]["dag"]["tasks"]
    assert "sft-warmup" in inner and not {"resolve-config", "convert-itag", "validate-dataset"} & set(inner)
    assert inner["sft-warmup"]["inputs"]["artifacts"]["dataset"]["componentInputArtifact"] == (
        "pipelinechannel--validate-dataset-dataset"
    )
    assert set(_all_tasks(spec)) >= TRAINING_TASKS
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {field.name for field in flat_fields()}
    assert root["check-changes"]["cachingOptions"] == {}


def test_compile_cli_bakes_a_config_into_the_defaults(tmp_path, capsys):
    assert main(["compile", "--out", str(tmp_path), "--config", "configs/tiny-cpu.yaml", "--set", "sft__epochs=2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retrain_if_changed.yaml", "training_pipeline.yaml"]
    spec, _ = _load(tmp_path / "training_pipeline.yaml")
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["sft__epochs"]["defaultValue"] == 2.0
    assert params["model__dtype"]["defaultValue"] == "float32"  # from tiny-cpu.yaml, not RunConfig's "auto"
    assert "training_pipeline.yaml" in capsys.readouterr().out


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_unreachable_host_is_one_clear_error(command, capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    argv = [command, "--host", url] + (["--cron", "0 3 * * *"] if command == "schedule" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"intentops {command}: error: cannot reach Kubeflow Pipelines at {url}")
    assert "Traceback" not in "\n".join(err)


def test_a_host_that_is_not_kfp_is_named(tmp_path, capsys):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["submit", "--host", url]) == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert f"answered 404: {url} is not a Kubeflow Pipelines API URL" in capsys.readouterr().err


def test_unknown_knob_and_bad_cron_are_config_errors(capsys):
    assert main(["submit", "--host", "http://127.0.0.1:1", "--set", "sft__nope=1"]) == 2
    assert "unknown configuration knob 'sft__nope'" in capsys.readouterr().err
    assert main(["schedule", "--host", "http://127.0.0.1:1", "--cron", "0 3 * *"]) == 2
    assert "--cron '0 3 * *': expected 5 fields" in capsys.readouterr().err


def test_cron_expressions():
    from intentops.cli.pipeline import cron_expression

    assert cron_expression("0 3 * * *") == "0 0 3 * * *"
    assert cron_expression("30 0 3 * * 1-5") == "30 0 3 * * 1-5"
    assert cron_expression("@daily") == "@daily"


def test_arguments_the_pipeline_does_not_declare_are_rejected(tmp_path):
    from intentops.cli.pipeline_build import checked_arguments, compile_pipeline
    from intentops.config import ConfigError

    package = compile_pipeline("training_pipeline", tmp_path / "p.yaml")
    assert checked_arguments(package, {"sft__epochs": 1.0}) == {"sft__epochs": 1.0}
    with pytest.raises(ConfigError, match="no parameter sft__gone"):
        checked_arguments(package, {"sft__gone": 1})


def _write_task(run_dir: Path, task: str, parameters: dict, artifacts: dict[str, dict]) -> None:
    (run_dir / task).mkdir(parents=True, exist_ok=True)
    body = {
        "parameterValues": parameters,
        "artifacts": {name: {"artifacts": [{"name": name, "metadata": meta}]} for name, meta in artifacts.items()},
    }
    (run_dir / task / "executor_output.json").write_text(json.dumps(body))


def test_summary_is_read_from_the_run_outputs(tmp_path):
    from intentops.cli.pipeline import STAGES, format_summary, summarize_run

    for stage in STAGES[:9]:
        _write_task(tmp_path, stage, {}, {"main": {"stage_seconds": 10.0}})
    _write_task(tmp_path, "convert-itag", {}, {"records": {"stage_seconds": 4.0, "pipeline_run_id": "abc123"}})
    _write_task(
        tmp_path,
        "evaluate",
        {},
        {"evaluation": {"stage_seconds": 6.0, "intent_accuracy": 0.75, "param_accuracy": 0.5, "n": 8}, "metrics": {}},
    )
    _write_task(
        tmp_path, "gate", {"Output": False}, {"decision": {"stage_seconds": 2.0, "mode": "enabled", "reasons": "x"}}
    )
    summary = summarize_run(tmp_path, wall_seconds=100.0, tracking_uri="sqlite:////w/mlflow.db")
    assert summary.pipeline_run_id == "abc123"
    assert summary.stage_seconds["convert-itag"] == 4.0 and summary.stage_seconds["gate"] == 2.0
    # seven stages at 10 s: resolve-config, validate-dataset, sft, grpo1, mine, grpo2, evaluate-champion
    assert summary.stages_total == 4.0 + 6.0 + 2.0 + 7 * 10.0
    assert summary.overhead_seconds == pytest.approx(100.0 - 82.0)
    assert summary.overhead_share == pytest.approx(0.18)
    assert summary.skipped == ["register-model", "deploy-vllm"]
    assert summary.gate["passed"] is False
    text = format_summary(summary)
    assert "gate (enabled): FAILED - x" in text
    assert "intent accuracy 0.750" in text
    assert "orchestration overhead 18.0 s (18.0% of the wall time" in text
    assert "registry: nothing registered" in text
    assert "mlflow ui --backend-store-uri sqlite:////w/mlflow.db" in text
