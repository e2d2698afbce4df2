"""Issue 11 cross-cutting safety checks: secrets in URIs, MLflow outages."""

from __future__ import annotations

from pathlib import Path

import pytest

from intentops.artifacts import TRAIN_FILE
from intentops.config import ConfigError, load_config


def test_redact_uri_strips_user_and_password() -> None:
    from intentops.storage import redact_uri

    assert redact_uri("http://alice:s3cret@mlflow:5000/api") == "http://mlflow:5000/api"
    assert redact_uri("postgresql://u:p%40ss@db/x and s3://b/k") == "postgresql://db/x and s3://b/k"
    assert redact_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert redact_uri(3) == "3"


def test_credentials_are_refused_as_parameters() -> None:
    """Issue 11.6: a password in a knob would end up in MLflow params and compiled pipeline defaults."""
    with pytest.raises(ConfigError, match=r"registry__tracking_uri.*MLFLOW_TRACKING_USERNAME") as caught:
        load_config(overrides={"registry__tracking_uri": "http://alice:s3cret@mlflow:5000"})
    assert "s3cret" not in str(caught.value)


def test_stage_params_never_carry_credentials(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from intentops.tracking import stage_run

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(overrides={"registry__tracking_uri": store, "registry__experiment": "secrets"})
    with stage_run("evaluate", cfg, "pipe-s", params={"endpoint": "http://bob:hunter2@vllm:8000/v1"}) as run:
        run_id = run.info.run_id
    client = MlflowClient(tracking_uri=store)
    params = client.get_run(run_id).data.params
    assert params["endpoint"] == "http://vllm:8000/v1"
    parent = client.get_run(client.get_run(run_id).data.tags["mlflow.parentRunId"]).data.params
    assert all("hunter2" not in value for value in [*params.values(), *parent.values()])


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_champion_against_an_unreachable_server_is_quick_and_distinct(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 11.13: 252 s then exit 1 (same as "no champion"); now bounded by the budget, its own exit status."""
    import time

    from intentops.cli import main
    from intentops.cli.registry import UNREACHABLE_EXIT

    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    status = main(["champion", "--set", f"registry__tracking_uri={uri}", "--set", "registry__request_budget_s=4"])
    elapsed = time.monotonic() - started
    assert status == UNREACHABLE_EXIT and status not in (0, 1, 2)
    assert elapsed < 15
    assert "cannot reach MLflow" in capsys.readouterr().err


def test_default_request_budget_bounds_mlflow_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from intentops.tracking import apply_request_budget

    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.delenv(name, raising=False)
    cfg = load_config()
    assert cfg.registry.request_budget_s <= 60
    apply_request_budget(cfg)
    retries = int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    factor = float(os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    timeout = float(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    worst = (retries + 1) * timeout + sum(factor * 2**n for n in range(retries)) + retries  # + jitter (1 s each)
    assert worst <= cfg.registry.request_budget_s


def test_string_metric_in_the_gate_names_the_field() -> None:
    """Issue 11.12: a metric stored as text crashed the gate with a TypeError."""
    from intentops.config import GateConfig
    from intentops.evaluation.gate import threshold_checks

    metrics = {"intent_accuracy": "0.95", "param_accuracy": 0.9, "format_error_rate": 0.0}
    with pytest.raises(ValueError, match=r"intent_accuracy.*'0\.95' is not a number"):
        threshold_checks(metrics, GateConfig())
    with pytest.raises(ValueError, match=r"format_error_rate.*'none' is not a number"):
        threshold_checks({**metrics, "intent_accuracy": 0.9, "format_error_rate": "none"}, GateConfig())


@pytest.mark.parametrize("version", ["abc", "1.5", "-2", "0"])
def test_promote_needs_a_whole_version_number(version: str, capsys: pytest.CaptureFixture[str]) -> None:
    from intentops.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["promote", version])
    assert exit_info.value.code == 2 and "version" in capsys.readouterr().err


def test_checkpoints_of_other_data_or_config_are_not_resumed(tmp_path: Path) -> None:
    """Issue 11.3: after a data change the finished run's last checkpoint was resumed (0 steps, old model)."""
    from intentops.training.sft import resumable_checkpoint

    def checkpoint(name: str) -> None:  # the smallest checkpoint the usability check accepts
        (checkpoints / name).mkdir()
        (checkpoints / name / "trainer_state.json").write_text('{"global_step": 1}', encoding="utf-8")

    checkpoints = tmp_path / "out" / "checkpoints"
    key = {"dataset": "aaaa", "base": "tiny", "sft": {"epochs": 3}}
    assert resumable_checkpoint(checkpoints, key) is None  # nothing yet: the key is recorded
    checkpoint("checkpoint-8")
    assert str(resumable_checkpoint(checkpoints, dict(key))).endswith("checkpoint-8")  # same run: resume

    changed = {**key, "dataset": "bbbb"}
    assert resumable_checkpoint(checkpoints, changed) is None
    assert not (checkpoints / "checkpoint-8").exists()  # a later crash cannot resume the stale one either
    checkpoint("checkpoint-2")
    assert str(resumable_checkpoint(checkpoints, changed)).endswith("checkpoint-2")
    assert resumable_checkpoint(checkpoints, {**changed, "sft": {"epochs": 4}}) is None


def test_sft_after_a_data_change_trains_afresh(
    tmp_path: Path, tiny_model_dir: Path, small_dataset_dir: Path, training_config
) -> None:
    """Issue 11.3, end to end: the second run must train on the new data, not resume the finished run."""
    import shutil

    from intentops.config import RunConfig
    from intentops.models import read_model_card
    from intentops.training.sft import run_sft

    cfg = RunConfig.from_flat(
        {"sft__epochs": 1, "sft__batch_size": 16, "sft__save_steps": 2, "sft__check_samples": 0},
        base=training_config,
    )
    out = tmp_path / "sft"
    run_sft(small_dataset_dir, str(tiny_model_dir), cfg, out)
    changed = tmp_path / "dataset"
    shutil.copytree(small_dataset_dir, changed)
    lines = (changed / TRAIN_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    (changed / TRAIN_FILE).write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")

    run_sft(changed, str(tiny_model_dir), cfg, out)
    training = read_model_card(out)["training"]
    assert training["resumed_from"] is None and training["records"] == len(lines) // 2
    assert training["steps"] == -(-(len(lines) // 2) // 16)
