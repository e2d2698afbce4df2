"""The compiled pipeline end to end on this machine (`intentops run`: kfp.local SubprocessRunner), both gate branches.

One MLflow store for the module, in order: a run whose gate passes (register + bounded local deploy run), a run whose
gate cannot pass (registered as @challenger only, deploy skipped, champion unchanged), then retrain-if-changed on the same inputs
(stops after check-changes). Knobs are shrunk (6 intents, a 1-layer model, a few steps) so the three runs stay
within a few minutes on two cores; what they check is the orchestration, not model quality.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
from collections import Counter
from pathlib import Path

import pytest

from intentops.artifacts import CATALOG_FILE, RECORDS_FILE
from intentops.catalog import load_catalog
from intentops.config import EXAMPLE_DIR, load_config

pytestmark = pytest.mark.slow

INTENTS = ("play_music", "volume_down", "weather_search", "set_alarm", "send_message", "turn_on_light")
PER_INTENT = 12
SMALL_KNOBS = {
    "data__min_examples_per_intent": 4,
    "model__tiny_hidden_size": 32,
    "model__tiny_num_layers": 1,
    "model__tiny_num_heads": 2,
    "model__tiny_num_kv_heads": 1,
    "model__tiny_intermediate_size": 64,
    "model__tiny_vocab_size": 400,
    "model__tiny_max_positions": 512,
    "sft__epochs": 1.0,
    "sft__max_length": 256,
    "sft__check_samples": 0,
    "sft__argument_swaps": 0,
    "grpo__stage1_max_steps": 2,
    "grpo__stage2_max_steps": 1,
    "grpo__batch_size": 4,
    "grpo__num_generations": 2,
    "grpo__max_prompt_length": 256,
    "grpo__max_completion_length": 12,
    "grpo__logging_steps": 1,
    "evaluation__decoding": "generate",
    "evaluation__max_samples": 12,
    "evaluation__max_new_tokens": 12,
    "evaluation__baselines": False,
    "serving__target": "local",
    "serving__smoke_min_valid": 0.0,  # a 1-layer model after 8 steps answers badly; the branch is what is tested
    "serving__ready_timeout_s": 300,
}
PASS_GATE = {
    "gate__min_intent_accuracy": 0.0,
    "gate__min_param_accuracy": 0.0,
    "gate__min_per_intent_recall": 0.0,
    "gate__max_format_error_rate": 1.0,
    "gate__max_regression": 1.0,
}
FAIL_GATE = {"gate__min_intent_accuracy": 1.0, "gate__min_param_accuracy": 1.0, "gate__max_format_error_rate": 0.0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory) -> dict[str, str]:
    """A 6-intent slice of the bundled example: the original iTAG lines, and the catalog subset."""
    from intentops.data.itag import convert_manifest

    folder = tmp_path_factory.mktemp("inputs")
    convert_manifest(EXAMPLE_DIR / "manifest.jsonl", folder / "records", 1.0)
    keep: set[int] = set()
    taken: Counter[str] = Counter()
    with open(folder / "records" / RECORDS_FILE, encoding="utf-8") as handle:
        for record in map(json.loads, handle):
            names = {call["name"] for call in record["calls"]}
            if names <= set(INTENTS) and taken[record["intent"]] < PER_INTENT:
                taken[record["intent"]] += 1
                keep.add(record["source_line"])
    assert set(taken) == set(INTENTS)
    lines = (EXAMPLE_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(lines[number - 1] for number in sorted(keep)), encoding="utf-8")
    catalog = folder / CATALOG_FILE
    load_catalog(EXAMPLE_DIR / CATALOG_FILE).subset(list(INTENTS)).to_yaml(catalog)
    return {"data__manifest": str(manifest), "data__catalog": str(catalog)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("intentops-run")


@pytest.fixture(scope="module", autouse=True)
def _no_server_left_behind(tmp_path_factory):
    """The module's local servers are recorded in a cache of its own (a developer's running server is not ours to
    see or stop); whatever a failing test leaves there is stopped."""
    from intentops.serving.deploy import read_local_state, stop_local

    with pytest.MonkeyPatch.context() as env:
        env.setenv("INTENTOPS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
        if read_local_state() is not None:
            stop_local()


def _config(small_inputs: dict[str, str], gate: dict) -> object:
    return load_config(None, {**SMALL_KNOBS, **small_inputs, **gate, "serving__local_port": _free_port()})


def _mlflow_runs(tracking_uri: str, pipeline_run_id: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("intentops")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`intentops.pipeline_run_id` = '{pipeline_run_id}'"
    )
    return {run.info.run_name: run.data.tags.get("mlflow.parentRunId", "") for run in runs}


@pytest.fixture(scope="module")
def passed_job(small_inputs, workdir) -> tuple[int, str]:
    """`intentops run` as a user types it (gate lowered so the 1-layer model passes): exit status and console."""
    from intentops.cli import main

    argv = ["run", "--workdir", str(workdir)]
    for key, value in {**SMALL_KNOBS, **small_inputs, **PASS_GATE, "serving__local_port": _free_port()}.items():
        argv += ["--set", f"{key}={value}"]
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        status = main(argv)
    return status, console.getvalue()


@pytest.fixture(scope="module")
def passed_run(passed_job, workdir):
    from intentops.cli.pipeline import summarize_run

    written = json.loads((workdir / "summary.json").read_text())
    return summarize_run(Path(written["run_dir"]), written["wall_seconds"], written["tracking_uri"])


def test_the_job_ends_with_predictions_through_the_endpoint_and_a_readable_log(passed_job, passed_run, workdir):
    from intentops.serving.deploy import read_local_state

    status, console = passed_job
    assert status == 0, console
    endpoint = passed_run.deployment["endpoint"]
    assert f"predictions through the deployed endpoint {endpoint} (version 1):" in console
    assert "我想去杭州玩，帮我查下天气预报" in console and "as expected" in console
    assert "intentops deploy --target local --version 1 --detach" in console and "intentops serve stop" in console
    assert "champion/challenger: promoted version 1 to @champion, the first champion" in console
    # The job stopped the server it started for the predictions (no --keep-serving).
    assert "the job stopped the server it started" in console and read_local_state() is None
    # The console is the readable view; run.log has every line, and its path is printed.
    log = (workdir / "run.log").read_text(encoding="utf-8")
    assert f"full log: {workdir / 'run.log'}" in console
    assert "Got executor_input" in log and "Got executor_input" not in console
    assert "Downloading artifacts" not in log and "is deprecated" not in log


def test_gate_pass_branch_registers_and_deploys(passed_run, workdir):
    from intentops.registry import champion_info
    from intentops.serving.deploy import process_alive

    summary = passed_run
    assert summary.skipped == []
    assert set(summary.stage_seconds) == {
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
    assert summary.gate["passed"] is True
    assert summary.evaluation["n"] == 12
    assert summary.registered["version"] == "1"
    assert "champion" in summary.registered["aliases"].split(",")
    assert summary.deployment["target"] == "local"
    assert summary.deployment["stopped_after_smoke_test"] is True
    assert summary.deployment["endpoint"].startswith("http://127.0.0.1:")
    # The summary is read from the run's outputs, and timing adds up.
    assert 0 < summary.stages_total < summary.wall_seconds
    assert 0 < summary.overhead_share < 1
    written = json.loads((workdir / "summary.json").read_text())
    assert written["registered"]["version"] == "1" and written["overhead_seconds"] == round(summary.overhead_seconds, 3)
    # The YAML that ran is the compiled pipeline, MLflow is the work folder's sqlite store.
    assert (workdir / "pipeline" / "training_pipeline.yaml").is_file()
    assert summary.tracking_uri == f"sqlite:///{workdir / 'mlflow.db'}"
    cfg = load_config(None, {"registry__tracking_uri": summary.tracking_uri})
    champion = champion_info(cfg)
    assert champion is not None and champion.version == "1"
    assert champion.tags["pipeline_run_id"] == summary.pipeline_run_id
    # One parent run for the pipeline run, every stage nested under it.
    runs = _mlflow_runs(summary.tracking_uri, summary.pipeline_run_id)
    parent = {name for name, parent_id in runs.items() if not parent_id}
    assert parent == {f"pipeline-{summary.pipeline_run_id}"}
    assert {"convert-itag", "validate-dataset", "sft", "evaluate", "gate", "register", "deploy-vllm"} <= set(runs)
    # The bounded local deployment left no server behind.
    state_pid = summary.deployment.get("pid")
    assert state_pid is None or not process_alive(int(state_pid))


def test_gate_fail_branch_registers_a_challenger_and_skips_deploy(passed_run, small_inputs, workdir, capsys):
    from intentops.cli.pipeline import format_summary, run_local
    from intentops.registry import champion_info

    summary = run_local(_config(small_inputs, FAIL_GATE), workdir)
    assert summary.gate["passed"] is False
    assert summary.skipped == ["deploy-vllm"]
    assert summary.deployment == {}
    assert summary.registered["version"] == "2"  # every candidate is registered...
    assert summary.registered["aliases"].split(",") == ["challenger"]  # ...but only as the challenger
    assert summary.gate["champion_version"] == "1"  # the champion was evaluated on the same test set
    cfg = load_config(None, {"registry__tracking_uri": summary.tracking_uri})
    assert champion_info(cfg).version == "1"  # nothing new was promoted
    text = format_summary(summary)
    assert "gate (enabled): FAILED" in text
    # The second run on the same work folder: compared with the champion, which stays.
    assert "champion/challenger: kept champion v1; version 2 is registered as @challenger only" in text
    assert "paired with champion v1 on the same 12 test records" in text
    assert "deployment: skipped - the gate did not pass" in text and "predictions through" not in text
    assert "deploy-vllm" in text and "skipped" in text
    assert f"mlflow ui --backend-store-uri {summary.tracking_uri}" in text


def test_retrain_if_changed_stops_when_nothing_changed(passed_run, small_inputs, workdir):
    from intentops.cli.pipeline import RETRAIN, execute_local

    cfg = _config(small_inputs, PASS_GATE)
    run_dir = execute_local(RETRAIN, cfg, workdir).run_dir
    check = json.loads((run_dir / "check-changes" / "executor_output.json").read_text())
    assert check["parameterValues"]["Output"] is False
    meta = check["artifacts"]["changes"]["artifacts"][0]["metadata"]
    # The newest version trained on these inputs is named: 2 (gate failed) after the gate-fail test, else 1.
    version = meta["last_trained_version"]
    outcome = "gate passed, the champion" if version == "1" else "gate failed: .+"
    hashes = f"data {meta['dataset_hash'][:12]} and catalog {meta['catalog_hash'][:12]}"
    expected = rf"{hashes} were already trained by version {version} \(pipeline run [^,]+, {outcome}\); nothing changed"
    assert re.fullmatch(expected, meta["reason"]), meta["reason"]
    assert not (run_dir / "sft-warmup").exists()


def test_run_cli_prints_the_summary_of_a_failed_stage_as_one_error(small_inputs, tmp_path, capsys):
    from intentops.cli import main

    bad = {**small_inputs, "data__min_examples_per_intent": 1000}
    argv = ["run", "--workdir", str(tmp_path)]
    for key, value in bad.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "intentops run: error: local run failed" in err and "validate-dataset" in err
