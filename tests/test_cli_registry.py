"""`intentops register | promote | rollback | champion` end to end against the test MLflow server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentops.artifacts import DATASET_MANIFEST, METRICS_FILE, ModelFolder
from intentops.cli import main
from intentops.io import read_json, write_json


def _gate(path: Path, passed: bool, model_hash: str) -> Path:
    write_json(
        path,
        {
            "passed": passed,
            "mode": "enabled",
            "reasons": [] if passed else ["intent_accuracy: 0.4000 >= 0.8000 -> FAILED"],
            "candidate": {"intent_accuracy": 0.9 if passed else 0.4, "model": {"content_hash": model_hash}},
            "champion": None,
        },
    )
    return path


def _eval_dir(root: Path, accuracy: float, model_hash: str) -> Path:
    metrics = {"intent_accuracy": accuracy, "param_accuracy": accuracy, "n": 46, "model": {"content_hash": model_hash}}
    write_json(root / METRICS_FILE, metrics)
    return root


def test_register_promote_rollback_champion(
    mlflow_tracking, tiny_model_dir: Path, small_dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    common = [
        "--tracking-uri",
        mlflow_tracking.tracking_uri,
        "--model-name",
        mlflow_tracking.model_name,
        "--set",
        f"registry__experiment={mlflow_tracking.experiment}",
    ]

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, *common])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("champion")
    assert code == 1 and "no champion yet" in out
    model_hash = ModelFolder(tiny_model_dir).content_hash()

    register = [
        "register",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(small_dataset_dir),
        # The untrained tiny model's answers are checked at logging time; keep them short.
        "--set",
        "evaluation__max_new_tokens=8",
    ]
    code, out, _ = run(
        *register,
        "--eval",
        str(_eval_dir(tmp_path / "eval-1", 0.9, model_hash)),
        "--gate",
        str(_gate(tmp_path / "gate-1.json", True, model_hash)),
        "--pipeline-run-id",
        "cli-1",
    )
    assert code == 0, out
    assert "registered:" in out and "version 1" in out and "challenger, champion" in out

    code, out, _ = run(
        *register,
        "--eval",
        str(_eval_dir(tmp_path / "eval-2", 0.4, model_hash)),
        "--gate",
        str(_gate(tmp_path / "gate-2.json", False, model_hash)),
        "--pipeline-run-id",
        "cli-2",
    )
    assert code == 0 and "version 2" in out and "aliases: challenger\n" in out

    code, out, _ = run("champion", "--json")
    champion = json.loads(out)
    assert code == 0 and champion["version"] == "1"
    assert champion["tags"]["dataset_hash"] == read_json(small_dataset_dir / DATASET_MANIFEST)["dataset_hash"]
    assert champion["tags"]["pipeline_run_id"] == "cli-1"

    code, out, _ = run("promote", "2", "--reason", "approved in review")
    assert code == 0 and "version 2" in out and "previous champion: 1" in out

    code, out, _ = run("champion")
    assert code == 0 and "champion: " in out and "version 2" in out and "intentops.previous_champion = 1" in out

    code, out, _ = run("rollback")
    assert code == 0 and "version 1" in out

    code, _, err = run("rollback")
    assert code == 2 and "no recorded previous champion" in err

    code, _, err = run("promote", "7")
    assert code == 2 and "has no version 7" in err


def test_register_requires_the_pipeline_run_id(tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["register", "--model", str(tiny_model_dir), "--dataset", str(tiny_model_dir)])
    assert exit_info.value.code == 2
    assert "--pipeline-run-id" in capsys.readouterr().err
