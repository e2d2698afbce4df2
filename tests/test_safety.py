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
