"""check-changes (the retrain-if-changed decision) against a real MLflow server.

The registry holds what earlier runs trained: versions tagged the way registration tags them (`catalog_hash`,
`dataset_hash`, `pipeline_run_id`, `gate_passed`, `gate_reasons`, the registration marker). They are created
directly with MlflowClient, because the decision reads only tags and aliases; packaging a model is
tests/test_registry.py's job.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from intentops.artifacts import DATASET_MANIFEST
from intentops.io import write_json
from intentops.registry import CHALLENGER, CHAMPION, REGISTRATION_COMPLETE, REGISTRATION_TAG
from intentops.stages import check_changes

CATALOG = "c" * 64
DATA_A = "a" * 64
DATA_B = "b" * 64
DATA_C = "0123456789ab" + "d" * 52
GATE_REASONS = "intent_accuracy 0.5 < min 0.8; param_accuracy 0.4 < min 0.7"


def _dataset(root: Path, dataset_hash: str, catalog_hash: str = CATALOG) -> Path:
    """A dataset folder as far as check-changes reads it: the manifest's two hashes."""
    folder = root / f"dataset-{dataset_hash[:4]}-{catalog_hash[:4]}"
    write_json(folder / DATASET_MANIFEST, {"dataset_hash": dataset_hash, "catalog_hash": catalog_hash})
    return folder


def _version(client, name: str, dataset_hash: str, run: str, gate_passed: bool, *, complete: bool = True) -> str:
    tags = {
        "catalog_hash": CATALOG,
        "dataset_hash": dataset_hash,
        "pipeline_run_id": run,
        "gate_passed": str(gate_passed).lower(),
        "gate_reasons": "" if gate_passed else GATE_REASONS,
    }
    if complete:
        tags[REGISTRATION_TAG] = REGISTRATION_COMPLETE
    version = str(client.create_model_version(name, f"s3://intentops-test/models/{run}", tags=tags).version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    if gate_passed:
        client.set_registered_model_alias(name, CHAMPION, version)
    return version


@pytest.fixture
def history(mlflow_tracking):
    """Champion v1 trained on data A; v2 trained on data B failed the gate and stays @challenger."""
    from mlflow import MlflowClient

    cfg = mlflow_tracking.config()
    client = MlflowClient(cfg.registry.tracking_uri, cfg.registry.tracking_uri)
    client.create_registered_model(cfg.registry.model_name)
    assert _version(client, cfg.registry.model_name, DATA_A, "run-1", gate_passed=True) == "1"
    assert _version(client, cfg.registry.model_name, DATA_B, "run-2", gate_passed=False) == "2"
    return cfg, client


def test_data_already_trained_by_a_failed_challenger_is_skipped_naming_that_version(history, tmp_path):
    cfg, _ = history
    result = check_changes(cfg, _dataset(tmp_path, DATA_B))
    assert result.changed is False
    assert result.summary["reason"] == (
        "data bbbbbbbbbbbb and catalog cccccccccccc were already trained by version 2 "
        f"(pipeline run run-2, gate failed: {GATE_REASONS}); nothing changed"
    )
    assert result.summary["last_trained"] == {
        "version": "2",
        "pipeline_run_id": "run-2",
        "gate_passed": "false",
        "aliases": [CHALLENGER],
    }
    assert result.summary["champion"]["version"] == "1"
    assert result.metadata["last_trained_version"] == "2" and result.metadata["changed"] is False


def test_new_data_retrains(history, tmp_path):
    cfg, _ = history
    result = check_changes(cfg, _dataset(tmp_path, DATA_C))
    assert result.changed is True
    assert result.summary["reason"] == (
        "data changed since champion version 1 (no version was trained on data 0123456789ab and catalog cccccccccccc)"
    )
    assert result.summary["last_trained"] is None
    assert result.metadata["last_trained_version"] == ""


def test_a_new_catalog_retrains_even_on_trained_data(history, tmp_path):
    cfg, _ = history
    result = check_changes(cfg, _dataset(tmp_path, DATA_B, catalog_hash="e" * 64))
    assert result.changed is True
    assert result.summary["reason"].startswith("catalog and data changed since champion version 1")


def test_the_champions_own_data_is_skipped_naming_the_champion(history, tmp_path):
    cfg, _ = history
    result = check_changes(cfg, _dataset(tmp_path, DATA_A))
    assert result.changed is False
    assert result.summary["reason"] == (
        "data aaaaaaaaaaaa and catalog cccccccccccc were already trained by version 1 "
        "(pipeline run run-1, gate passed, the champion); nothing changed"
    )


def test_force_retrain_trains_already_trained_data_and_says_why(history, tmp_path):
    cfg, _ = history
    cfg.registry.force_retrain = True
    result = check_changes(cfg, _dataset(tmp_path, DATA_B))
    assert result.changed is True
    assert result.summary["reason"] == (
        "data bbbbbbbbbbbb and catalog cccccccccccc were already trained by version 2 "
        f"(pipeline run run-2, gate failed: {GATE_REASONS}); retraining because registry.force_retrain is set"
    )


def test_an_interrupted_registration_does_not_count_as_trained(history, tmp_path):
    """A run that crashed before registration completed never reached the gate's aliases: train again."""
    cfg, client = history
    assert _version(client, cfg.registry.model_name, DATA_C, "run-3", gate_passed=False, complete=False) == "3"
    result = check_changes(cfg, _dataset(tmp_path, DATA_C))
    assert result.changed is True
    assert result.summary["last_trained"] is None


def test_no_model_yet_retrains(mlflow_tracking, tmp_path):
    cfg = mlflow_tracking.config()
    result = check_changes(cfg, _dataset(tmp_path, DATA_A))
    assert result.changed is True
    assert result.summary["reason"] == f"no champion of {cfg.registry.model_name} yet"
    assert result.summary["champion"]["version"] is None
