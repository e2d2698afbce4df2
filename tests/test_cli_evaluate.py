"""`intentops evaluate` and `intentops gate` end to end on the SFT tiny model, against a real MLflow server."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from intentops.artifacts import (
    CATALOG_FILE,
    CONFUSION_PNG,
    GATE_JSON,
    METRICS_FILE,
    PREDICTIONS_FILE,
    REPORT_HTML,
    REPORT_MD,
)
from intentops.cli import main
from intentops.io import read_jsonl

N_SAMPLES = 10
ARTIFACTS = {METRICS_FILE, PREDICTIONS_FILE, REPORT_MD, REPORT_HTML, CONFUSION_PNG}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread, and extra threads spin badly on a shared CI runner."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tracking_args(uri: str, experiment: str) -> list[str]:
    return [
        "--set",
        f"registry__tracking_uri={uri}",
        "--set",
        f"registry__experiment={experiment}",
        "--set",
        f"evaluation__max_samples={N_SAMPLES}",
        "--set",
        "evaluation__max_new_tokens=24",
        "--set",
        "evaluation__batch_size=8",
    ]


@pytest.fixture(scope="module")
def experiment() -> str:
    return f"cli-evaluate-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def candidate_eval(
    tmp_path_factory: pytest.TempPathFactory,
    sft_model_dir: Path,
    small_dataset_dir: Path,
    mlflow_server: str,
    experiment: str,
) -> Path:
    out = tmp_path_factory.mktemp("cli-eval") / "evaluation"
    code = main(
        [
            "evaluate",
            "--model",
            str(sft_model_dir),
            "--dataset",
            str(small_dataset_dir),
            "--out",
            str(out),
            "--pipeline-run-id",
            "cli-test-run",
            "--decoding",
            "label_scoring",
            *_tracking_args(mlflow_server, experiment),
        ]
    )
    assert code == 0
    return out


def test_evaluate_writes_the_artifact_and_logs_it(candidate_eval: Path, mlflow_server: str) -> None:
    from mlflow import MlflowClient

    assert {p.name for p in candidate_eval.iterdir()} == {*ARTIFACTS, ".intentops-output"}  # + the --out marker
    metrics = json.loads((candidate_eval / METRICS_FILE).read_text(encoding="utf-8"))
    assert metrics["n"] == N_SAMPLES and metrics["decoding"] == "label_scoring"
    assert 0 < metrics["confidence"]["mean"] <= 1
    assert 0.0 <= metrics["param_accuracy"] <= metrics["intent_accuracy"] <= 1.0
    assert metrics["baselines"]["tfidf_logreg"]["intent_accuracy"] > 0
    rows = list(read_jsonl(candidate_eval / PREDICTIONS_FILE))
    assert len(rows) == N_SAMPLES
    assert sum(r["intent_ok"] for r in rows) / N_SAMPLES == pytest.approx(metrics["intent_accuracy"])
    assert "<table id='per-intent'>" in (candidate_eval / REPORT_HTML).read_text(encoding="utf-8")

    client = MlflowClient(mlflow_server)
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.data.tags["intentops.stage"] == "evaluate"
    assert run.data.tags["intentops.pipeline_run_id"] == "cli-test-run"
    assert run.data.tags["intentops.decoding"] == "label_scoring"
    assert run.data.metrics["intent_accuracy"] == pytest.approx(metrics["intent_accuracy"])
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "evaluate")}
    assert logged == ARTIFACTS


def test_gate_exit_code_3_when_blocked(
    candidate_eval: Path,
    small_dataset_dir: Path,
    tmp_path: Path,
    mlflow_server: str,
    experiment: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    weak = tmp_path / "weak"
    shutil.copytree(candidate_eval, weak)
    # the gate re-scores the per-record predictions: a candidate that never answers a call
    rows = [json.loads(line) for line in (weak / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()]
    (weak / PREDICTIONS_FILE).write_text("".join(json.dumps({**r, "call": None}) + "\n" for r in rows), "utf-8")
    args = [
        "gate",
        "--candidate",
        str(weak),
        "--dataset",
        str(small_dataset_dir),
        "--no-champion-lookup",
        *_tracking_args(mlflow_server, experiment),
        "--set",
        "gate__min_intent_accuracy=0.5",
    ]
    assert main([*args, "--out", str(tmp_path / "gate")]) == 3
    gate = json.loads((tmp_path / "gate" / GATE_JSON).read_text(encoding="utf-8"))
    assert gate["passed"] is False and gate["champion"] is None
    assert any(reason.startswith("intent_accuracy: 0.0000 >= 0.5000") for reason in gate["reasons"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["passed"] is False
    # the same candidate in dry_run: recorded, not blocked; the gate's own folder may be replaced
    assert main([*args, "--out", str(tmp_path / "gate"), "--set", "gate__mode=dry_run"]) == 0
    assert json.loads((tmp_path / "gate" / GATE_JSON).read_text(encoding="utf-8"))["mode"] == "dry_run"
    # --out never deletes what the gate did not write, nor its inputs
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep", encoding="utf-8")
    capsys.readouterr()
    assert main([*args, "--out", str(foreign)]) == 2
    assert "--force" in capsys.readouterr().err and (foreign / "mine.txt").read_text(encoding="utf-8") == "keep"
    assert main([*args, "--out", str(weak)]) == 2
    assert (weak / PREDICTIONS_FILE).is_file()


def test_gate_compares_with_the_registry_champion_on_the_same_test_set(
    candidate_eval: Path,
    small_dataset_dir: Path,
    sft_model_dir: Path,
    tmp_path: Path,
    mlflow_server: str,
    experiment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from intentops.registry import RegisteredVersion

    fetched: list[Path] = []

    def download_champion(cfg, dest):  # the registry's contract: (version, local model folder) or None
        target = Path(dest) / "champion"
        shutil.copytree(sft_model_dir, target)
        fetched.append(target)
        return RegisteredVersion(
            name=cfg.registry.model_name, version="7", run_id=None, source="s3://m/7", aliases=("champion",)
        ), target

    monkeypatch.setattr("intentops.registry.download_champion", download_champion)
    out = tmp_path / "gate"
    code = main(
        [
            "gate",
            "--candidate",
            str(candidate_eval),
            "--dataset",
            str(small_dataset_dir),
            "--out",
            str(out),
            *_tracking_args(mlflow_server, experiment),
            "--set",
            "gate__min_intent_accuracy=0",
            "--set",
            "gate__min_param_accuracy=0",
            "--set",
            "gate__min_per_intent_recall=0",
            "--set",
            "gate__max_format_error_rate=1",
            "--set",
            "gate__min_unseen_accuracy=0",
        ]
    )
    assert code == 0 and len(fetched) == 1
    assert not fetched[0].exists()  # the downloaded champion was a temporary copy
    gate = json.loads((out / GATE_JSON).read_text(encoding="utf-8"))
    candidate = json.loads((candidate_eval / METRICS_FILE).read_text(encoding="utf-8"))
    champion = json.loads((out / "champion" / METRICS_FILE).read_text(encoding="utf-8"))
    # same weights, same records, same decoding (the candidate's, not the config's): the same numbers
    assert champion["n"] == candidate["n"] and champion["decoding"] == candidate["decoding"] == "label_scoring"
    assert champion["intent_accuracy"] == candidate["intent_accuracy"]
    assert gate["champion"]["registry"]["version"] == "7"
    comparisons = {c["name"]: c for c in gate["comparisons"]}
    for metric in ("intent_accuracy", "param_accuracy", "exact_match", "macro_f1"):
        same = comparisons[f"{metric}[overall]_vs_champion"]
        assert same["diff"] == 0 and not same["blocked"]


def test_changed_catalog_is_shown_to_the_model(
    sft_model_dir: Path,
    small_dataset_dir: Path,
    tmp_path: Path,
    mlflow_server: str,
    experiment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tools live in the prompt: after a catalog edit the model is evaluated with the dataset's current catalog."""
    import yaml

    from intentops.config import load_config
    from intentops.evaluation import evaluate_model, predictors

    system_prompts: list[str] = []
    original = predictors.make_predictor

    def recording_make_predictor(kind, model_dir, cfg, builder=None, **kwargs):
        system_prompts.append(builder.system_prompt())
        return original(kind, model_dir, cfg, builder, **kwargs)

    monkeypatch.setattr(predictors, "make_predictor", recording_make_predictor)

    dataset = tmp_path / "dataset"
    shutil.copytree(small_dataset_dir, dataset)
    catalog = yaml.safe_load((dataset / CATALOG_FILE).read_text(encoding="utf-8"))
    catalog["intents"].append({"name": "open_garage", "description": "Open the garage door.", "domain": "home"})
    (dataset / CATALOG_FILE).write_text(yaml.safe_dump(catalog, allow_unicode=True), encoding="utf-8")
    cfg = load_config(
        overrides={
            "registry__tracking_uri": mlflow_server,
            "registry__experiment": experiment,
            "evaluation__max_samples": 4,
            "evaluation__max_new_tokens": 16,
            "evaluation__baselines": False,
        }
    )
    metrics = evaluate_model(sft_model_dir, dataset, cfg, tmp_path / "eval")
    assert metrics["model"]["prompt_catalog_changed"] is True
    assert len(system_prompts) == 1 and "open_garage(" in system_prompts[0]
    assert metrics["n"] == 4 and "baselines" not in metrics
    assert json.loads((tmp_path / "eval" / METRICS_FILE).read_text(encoding="utf-8")) == metrics
