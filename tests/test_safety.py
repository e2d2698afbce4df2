"""Issue 11 cross-cutting safety checks: secrets in URIs, MLflow outages."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    from intentops.evaluation.gate import decide

    metrics = {"intent_accuracy": "0.95", "param_accuracy": 0.9, "format_error_rate": 0.0}
    with pytest.raises(ValueError, match=r"intent_accuracy.*'0\.95' is not a number"):
        decide(metrics, None, GateConfig())


@pytest.mark.parametrize("version", ["abc", "1.5", "-2", "0"])
def test_promote_needs_a_whole_version_number(version: str, capsys: pytest.CaptureFixture[str]) -> None:
    from intentops.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["promote", version])
    assert exit_info.value.code == 2 and "version" in capsys.readouterr().err
