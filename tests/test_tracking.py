"""intentops.tracking against a real MLflow server: one parent run per pipeline run, one nested run per stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from intentops.config import RunConfig
from intentops.tracking import PIPELINE_RUN_TAG, ROLE_TAG, STAGE_TAG, resolve_tracking_uri, stage_run


def _runs(cfg: RunConfig, filter_string: str = "") -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.registry.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.registry.experiment)
    assert experiment is not None, f"experiment {cfg.registry.experiment} was not created"
    return client.search_runs([experiment.experiment_id], filter_string=filter_string, max_results=100)


def test_stages_of_one_pipeline_run_share_one_parent(mlflow_tracking) -> None:
    cfg = mlflow_tracking.config()
    with stage_run("sft-warmup", cfg, "pipe-1", params={"epochs": 3}) as first:
        first_id = first.info.run_id
    with stage_run("evaluate", cfg, "pipe-1") as second:
        second_id = second.info.run_id
    with stage_run("sft-warmup", cfg, "pipe-2"):
        pass

    parents = _runs(cfg, f"tags.`{ROLE_TAG}` = 'pipeline'")
    assert sorted(run.data.tags[PIPELINE_RUN_TAG] for run in parents) == ["pipe-1", "pipe-2"]
    parent_1 = next(run for run in parents if run.data.tags[PIPELINE_RUN_TAG] == "pipe-1")
    # The parent carries the whole configuration, flat, as the pipeline's parameters.
    assert parent_1.data.params["registry__experiment"] == cfg.registry.experiment

    stages = _runs(cfg, f"tags.`{PIPELINE_RUN_TAG}` = 'pipe-1' and tags.`{ROLE_TAG}` = 'stage'")
    assert {run.info.run_id for run in stages} == {first_id, second_id}
    for run in stages:
        assert run.data.tags["mlflow.parentRunId"] == parent_1.info.run_id
        assert run.info.status == "FINISHED"
    by_id = {run.info.run_id: run for run in stages}
    assert by_id[first_id].data.tags[STAGE_TAG] == "sft-warmup"
    assert by_id[first_id].data.params == {"epochs": "3"}
    assert by_id[second_id].data.tags[STAGE_TAG] == "evaluate"


def test_stage_without_pipeline_run_is_a_top_level_run(mlflow_tracking) -> None:
    cfg = mlflow_tracking.config()
    with stage_run("evaluate", cfg, None) as run:
        run_id = run.info.run_id
    runs = _runs(cfg)
    assert [r.info.run_id for r in runs] == [run_id]
    assert "mlflow.parentRunId" not in runs[0].data.tags


def test_failed_stage_is_recorded_as_failed(mlflow_tracking) -> None:
    cfg = mlflow_tracking.config()
    with pytest.raises(RuntimeError, match="boom"), stage_run("grpo-stage1", cfg, None):
        raise RuntimeError("boom")
    (stage,) = _runs(cfg)
    assert stage.info.status == "FAILED"


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = RunConfig()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(cfg) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(cfg) == "http://env:5000"
    cfg.registry.tracking_uri = "http://config:5000"
    assert resolve_tracking_uri(cfg) == "http://config:5000"


def test_parent_status_follows_its_stages(mlflow_tracking) -> None:
    cfg = mlflow_tracking.config()
    with pytest.raises(RuntimeError), stage_run("gate", cfg, "kfp-run-1"):
        raise RuntimeError("boom")
    (parent,) = _runs(cfg, f"tags.`{ROLE_TAG}` = 'pipeline'")
    assert parent.info.status == "FAILED"
    with stage_run("gate", cfg, "kfp-run-1"):
        pass
    (parent,) = _runs(cfg, f"tags.`{ROLE_TAG}` = 'pipeline'")
    assert parent.info.status == "FINISHED"
    with pytest.raises(ValueError, match="pipeline run id"), stage_run("gate", cfg, "it's"):
        pass
