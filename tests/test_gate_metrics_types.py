"""A metrics file with a number stored as text is refused, naming the file and the field (issue 2/7, item 12)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from intentops.artifacts import METRICS_FILE, PREDICTIONS_FILE, Evaluation, ModelFolder
from intentops.io import write_json, write_jsonl

GOOD = {"n": 46, "intent_accuracy": 0.9, "param_accuracy": 0.8, "format_error_rate": 0, "macro_f1": 1}


def _evaluation(root: Path, **changes) -> Path:
    write_json(root / METRICS_FILE, {**GOOD, **changes})
    write_jsonl(root / PREDICTIONS_FILE, [{"id": "r1", "gold": "a()", "call": "a()"}])
    return root


def test_whole_numbers_are_numbers(tmp_path: Path) -> None:
    metrics = Evaluation(_evaluation(tmp_path)).metrics()
    assert metrics.format_error_rate == 0.0 and metrics.macro_f1 == 1.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("intent_accuracy", "0.9"), ("param_accuracy", "high"), ("n", "46"), ("format_error_rate", True)],
)
def test_a_metric_stored_as_text_names_file_and_field(tmp_path: Path, field: str, value) -> None:
    """Before: "0.9" was silently read as 0.9 (pydantic's lax mode), so an edited file passed unnoticed."""
    folder = _evaluation(tmp_path, **{field: value})
    with pytest.raises(ValueError) as caught:
        Evaluation(folder).metrics()
    message = str(caught.value)
    assert str(folder / METRICS_FILE) in message and f"field {field}:" in message and repr(value) in message
    assert len(message.splitlines()) == 1


def test_register_refuses_a_text_metric_before_contacting_mlflow(
    tiny_model_dir: Path, small_dataset_dir: Path, tmp_path: Path
) -> None:
    from intentops.config import RunConfig
    from intentops.registry import RegistryError, register_model

    cfg = RunConfig()
    cfg.registry.tracking_uri = "http://127.0.0.1:9"  # nothing listens: the refusal must come first
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    folder = _evaluation(
        tmp_path / "eval", intent_accuracy="0.9", model={"content_hash": ModelFolder(model).content_hash()}
    )
    with pytest.raises(RegistryError, match=r"metrics\.json: .*field intent_accuracy: .*'0\.9'"):
        register_model(model, cfg, pipeline_run_id="r", eval_dir=folder, dataset_manifest=small_dataset_dir)


def test_the_gate_fails_closed_on_a_text_metric(tmp_path: Path) -> None:
    """The gate re-scores predictions.jsonl, so it used to pass over a corrupted metrics.json without a word."""
    from intentops.config import GateConfig
    from intentops.stages.evaluation import decide_gate

    cfg = GateConfig(min_intent_accuracy=0.5, min_param_accuracy=0.5, min_per_intent_recall=0.5)
    assert decide_gate(_evaluation(tmp_path / "good"), None, cfg).passed
    folder = _evaluation(tmp_path / "bad", intent_accuracy="0.9")
    with pytest.raises(ValueError, match=r"bad/metrics\.json: .*field intent_accuracy"):
        decide_gate(folder, None, cfg)
