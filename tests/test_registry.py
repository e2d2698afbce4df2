"""intentops.registry against a real MLflow server: gate-driven aliases, idempotency, promote/rollback, the pyfunc.

One registered model is shared by the module (registering is the slow part): a candidate that passes the gate, one
that fails its thresholds, and one that passes the thresholds but regresses against the champion. Tests that move
aliases come last and leave the champion where they found it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from intentops.artifacts import (
    CATALOG_FILE,
    DATASET_MANIFEST,
    GATE_JSON,
    METRICS_FILE,
    MODEL_CARD,
    PREDICTIONS_FILE,
    REPORT_MD,
    ModelFolder,
)
from intentops.catalog import load_catalog
from intentops.config import GateConfig
from intentops.evaluation.gate import decide, write_gate
from intentops.io import read_json, write_json, write_jsonl
from intentops.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION_TAG,
    REGISTRATION_COMPLETE,
    REGISTRATION_TAG,
    ROLLED_BACK_FROM_TAG,
    RegisteredVersion,
    RegistryError,
    champion_info,
    download_champion,
    find_version_by_tags,
    model_storage_uri,
    promote,
    register_model,
    rollback,
    set_deployment,
)
from intentops.registry_packaging import git_commit
from intentops.registry_pyfunc import OUTPUT_COLUMNS, texts_from_input

GIT_SHA = "0123456789abcdef0123456789abcdef01234567"
UTTERANCES = ["帮我查一下明天杭州的天气", "turn on the light in the kitchen"]
MAX_NEW_TOKENS = 12


def _metrics(
    intent_accuracy: float, param_accuracy: float, dataset_hash: str, intents: list[str], model_hash: str = ""
) -> dict[str, Any]:
    """An evaluation's metrics in the shape intentops.evaluation writes (the fields the registry reads)."""
    block = {"n": 100, "intent_accuracy": intent_accuracy, "param_accuracy": param_accuracy}
    return {
        **block,
        "format_valid_rate": 1.0,
        "format_error_rate": 0.0,
        "macro_f1": intent_accuracy,
        "per_intent": {name: {"recall": intent_accuracy, "seen": True, "support": 6} for name in intents},
        "by_seen": {"seen": block},
        "confusion": {"labels": intents, "matrix": [[0] * len(intents) for _ in intents]},
        "dataset": {"hash": dataset_hash, "split": "test"},
        **({"model": {"content_hash": model_hash}} if model_hash else {}),
    }


def _predictions(wrong_intent: int, wrong_param: int, intents: list[str]) -> list[dict[str, Any]]:
    """100 per-record rows: the first `wrong_intent` answer another intent, the next `wrong_param` a wrong argument."""
    rows = []
    for i in range(100):
        name = intents[i % len(intents)]
        call = f"{name}(x)"
        if i < wrong_intent:
            call = f"{intents[(i + 1) % len(intents)]}(x)"
        elif i < wrong_intent + wrong_param:
            call = f"{name}(y)"
        rows.append({"id": f"r{i:03d}", "gold": f"{name}(x)", "call": call, "raw": call, "lang": "zh", "seen": True})
    return rows


def _evaluation(
    root: Path, metrics: dict[str, Any], rows: list[dict[str, Any]], champion: Path | None
) -> tuple[Path, Path, Any]:
    """Write an evaluation folder and the gate's decision on it; returns (eval_dir, gate file, decision)."""
    eval_dir = root / "evaluation"
    write_json(eval_dir / METRICS_FILE, metrics)
    write_jsonl(eval_dir / PREDICTIONS_FILE, rows)
    (eval_dir / REPORT_MD).write_text("# Evaluation\n", encoding="utf-8")
    decision = decide(eval_dir, champion, GateConfig())
    return eval_dir, write_gate(decision, root / "gate"), decision


@dataclass
class Registered:
    target: Any
    cfg: Any
    model_dir: Path
    dataset_dir: Path
    passed: RegisteredVersion
    failed: RegisteredVersion
    regressed: RegisteredVersion
    regression_reasons: list[str]


@pytest.fixture(scope="module")
def registered(mlflow_module_tracking, tiny_model_dir: Path, small_dataset_dir: Path, tmp_path_factory) -> Registered:
    root = tmp_path_factory.mktemp("registry")
    model_dir = root / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    # Training leftovers next to the weights must not be shipped with the model.
    (model_dir / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    (model_dir / "checkpoints" / "checkpoint-10" / "optimizer.pt").write_bytes(b"x" * 64)
    cfg = mlflow_module_tracking.config()
    # Logging validates the input example by running the model: keep the untrained tiny model's answers short.
    cfg.evaluation.max_new_tokens = MAX_NEW_TOKENS
    dataset_hash = read_json(small_dataset_dir / DATASET_MANIFEST)["dataset_hash"]
    intents = load_catalog(model_dir / CATALOG_FILE).names

    model_hash = ModelFolder(model_dir).content_hash()
    good = _metrics(0.92, 0.85, dataset_hash, intents, model_hash)
    bad = _metrics(0.50, 0.40, dataset_hash, intents, model_hash)
    regressing = _metrics(0.85, 0.80, dataset_hash, intents, model_hash)
    runs = {
        "pass": _evaluation(root / "pass", good, _predictions(8, 7, intents), None),
        "fail": _evaluation(root / "fail", bad, _predictions(50, 10, intents), None),
    }
    champion_eval = runs["pass"][0]
    runs["regress"] = _evaluation(root / "regress", regressing, _predictions(15, 5, intents), champion_eval)
    assert runs["pass"][2].passed and not runs["fail"][2].passed
    regression = runs["regress"][2]
    assert not regression.passed and all("vs_champion" in reason for reason in regression.failed)

    versions = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIT_COMMIT", GIT_SHA)
        for name, (eval_dir, gate_path, _) in runs.items():
            versions[name] = register_model(
                model_dir,
                cfg,
                pipeline_run_id=f"run-{name}",
                eval_dir=eval_dir,
                gate_path=gate_path,
                dataset_manifest=small_dataset_dir,
            )
    return Registered(
        target=mlflow_module_tracking,
        cfg=cfg,
        model_dir=model_dir,
        dataset_dir=small_dataset_dir,
        passed=versions["pass"],
        failed=versions["fail"],
        regressed=versions["regress"],
        regression_reasons=regression.failed,
    )


def _client(reg: Registered):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=reg.target.tracking_uri, registry_uri=reg.target.tracking_uri)


def _aliases(reg: Registered) -> dict[str, str]:
    return dict(_client(reg).get_registered_model(reg.cfg.registry.model_name).aliases)


# ---- registration --------------------------------------------------------------------------------------------


def test_gate_pass_makes_champion_and_challenger(registered: Registered) -> None:
    version = registered.passed
    assert version.aliases == (CHALLENGER, CHAMPION)
    assert version.previous_champion is None
    manifest = read_json(registered.dataset_dir / DATASET_MANIFEST)
    assert version.tags["catalog_hash"] == load_catalog(registered.model_dir / CATALOG_FILE).content_hash
    assert version.tags["dataset_hash"] == manifest["dataset_hash"]
    assert version.tags["pipeline_run_id"] == "run-pass"
    assert version.tags["git_commit"] == GIT_SHA
    assert version.tags["gate_passed"] == "true"
    assert version.tags["gate_mode"] == "enabled"
    assert float(version.tags["intent_accuracy"]) == pytest.approx(0.92)
    assert float(version.tags["param_accuracy"]) == pytest.approx(0.85)
    assert version.tags[REGISTRATION_TAG] == REGISTRATION_COMPLETE
    assert champion_info(registered.cfg).version == version.version


def test_gate_fail_adds_a_challenger_and_keeps_the_champion(registered: Registered) -> None:
    version = registered.failed
    assert version.aliases == (CHALLENGER,)
    assert version.tags["gate_passed"] == "false"
    assert "intent_accuracy" in version.tags["gate_reasons"]
    assert int(version.version) == int(registered.passed.version) + 1


def test_regression_against_the_champion_blocks_promotion(registered: Registered) -> None:
    version = registered.regressed
    assert version.aliases == (CHALLENGER,)
    assert "intent_accuracy[overall]_vs_champion" in version.tags["gate_reasons"]
    assert _aliases(registered) == {CHAMPION: registered.passed.version, CHALLENGER: version.version}


def test_rerunning_a_pipeline_run_returns_its_version(registered: Registered) -> None:
    client = _client(registered)
    name = registered.cfg.registry.model_name
    again = register_model(
        registered.model_dir,
        registered.cfg,
        pipeline_run_id="run-fail",
        dataset_manifest=registered.dataset_dir,
    )
    assert again.version == registered.failed.version
    assert len(client.search_model_versions(f"name = '{name}'")) == 3
    # A finished registration is returned as it is: the aliases do not move back to it.
    assert _aliases(registered)[CHALLENGER] == registered.regressed.version


def test_interrupted_registration_is_completed_not_duplicated(registered: Registered) -> None:
    client = _client(registered)
    name = registered.cfg.registry.model_name
    version = registered.regressed.version
    # As if the process died after creating the version, before moving the aliases.
    client.delete_model_version_tag(name, version, REGISTRATION_TAG)
    client.delete_registered_model_alias(name, CHALLENGER)
    gate = Path(registered.model_dir).parent / "regress" / "gate" / GATE_JSON
    again = register_model(
        registered.model_dir,
        registered.cfg,
        pipeline_run_id="run-regress",
        gate_path=gate,
        dataset_manifest=registered.dataset_dir,
    )
    assert again.version == version
    assert again.tags[REGISTRATION_TAG] == REGISTRATION_COMPLETE
    assert len(client.search_model_versions(f"name = '{name}'")) == 3
    assert _aliases(registered) == {CHAMPION: registered.passed.version, CHALLENGER: version}


def test_version_package_holds_the_model_metrics_and_gate(registered: Registered, tmp_path: Path) -> None:
    from mlflow.artifacts import download_artifacts

    local = Path(
        download_artifacts(
            artifact_uri=registered.passed.model_uri,
            dst_path=str(tmp_path),
            tracking_uri=registered.target.tracking_uri,
        )
    )
    mlmodel = (local / "MLmodel").read_text(encoding="utf-8")
    assert "python_function" in mlmodel and '"name": "text"' in mlmodel
    hf = local / "artifacts" / "hf_model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", CATALOG_FILE, MODEL_CARD):
        assert (hf / name).is_file(), name
    assert not (hf / "checkpoints").exists()
    assert read_json(local / "artifacts" / GATE_JSON)["passed"] is True
    assert read_json(local / "artifacts" / METRICS_FILE)["intent_accuracy"] == pytest.approx(0.92)
    assert (local / "code" / "intentops" / "registry_pyfunc.py").is_file()
    requirements = (local / "requirements.txt").read_text(encoding="utf-8").split()
    assert any(r.startswith("mlflow==") for r in requirements)
    assert any(r.startswith("transformers==") for r in requirements)
    example = json.loads((local / "serving_input_example.json").read_text(encoding="utf-8"))
    split = example["dataframe_split"]
    texts = [row[split["columns"].index("text")] for row in split["data"]]
    assert len(texts) == 2 and sum(any("\u4e00" <= ch <= "\u9fff" for ch in text) for text in texts) == 1

    run_artifacts = {a.path for a in _client(registered).list_artifacts(registered.passed.run_id, "evaluation")}
    assert run_artifacts == {f"evaluation/{METRICS_FILE}", f"evaluation/{PREDICTIONS_FILE}", "evaluation/report.md"}


def test_model_storage_uri_is_the_hf_folder_in_the_artifact_store(registered: Registered) -> None:
    uri = model_storage_uri(registered.cfg, registered.passed.version)
    assert uri.startswith("mlflow-artifacts:/") and uri.endswith("/hf_model")
    relative = uri.removeprefix("mlflow-artifacts:/")
    on_disk = registered.target.artifacts_destination / relative
    assert (on_disk / "config.json").is_file() and (on_disk / MODEL_CARD).is_file()
    mapped = model_storage_uri(registered.cfg, registered.passed.version, artifacts_destination="s3://mlflow/")
    assert mapped == f"s3://mlflow/{relative}"


def test_download_champion_gives_the_champion_model_folder(registered: Registered, tmp_path: Path) -> None:
    found = download_champion(registered.cfg, tmp_path / "champion")
    assert found is not None
    version, folder = found
    assert version.version == registered.passed.version
    assert folder == tmp_path / "champion"
    assert read_json(folder / MODEL_CARD) == read_json(registered.model_dir / MODEL_CARD)
    assert (folder / "model.safetensors").read_bytes() == (registered.model_dir / "model.safetensors").read_bytes()


def test_find_version_by_tags(registered: Registered) -> None:
    tags = registered.passed.tags
    newest = find_version_by_tags(registered.cfg, catalog_hash=tags["catalog_hash"], dataset_hash=tags["dataset_hash"])
    assert newest is not None and newest.version == registered.regressed.version
    by_run = find_version_by_tags(registered.cfg, pipeline_run_id="run-pass")
    assert by_run is not None and by_run.version == registered.passed.version
    assert find_version_by_tags(registered.cfg, dataset_hash="not-a-hash") is None
    with pytest.raises(RegistryError, match="quote"):
        find_version_by_tags(registered.cfg, dataset_hash="x' or '1'='1")


def test_set_deployment_records_endpoint_and_version(registered: Registered) -> None:
    version = set_deployment(registered.cfg, registered.passed.version, "http://intent-detector.svc", "kserve")
    assert version.tags["intentops.deployment.endpoint"] == "http://intent-detector.svc"
    assert version.tags["intentops.deployment.target"] == "kserve"
    model_tags = _client(registered).get_registered_model(registered.cfg.registry.model_name).tags
    assert model_tags["intentops.deployed_version"] == registered.passed.version


def test_champion_pyfunc_predicts_chinese_and_english(registered: Registered) -> None:
    import mlflow
    import pandas as pd

    uri = f"models:/{registered.cfg.registry.model_name}@{CHAMPION}"
    labels = set(load_catalog(registered.model_dir / CATALOG_FILE).names)

    generated = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": UTTERANCES}))
    assert list(generated.columns) == list(OUTPUT_COLUMNS) and len(generated) == 2
    for row in generated.to_dict("records"):
        assert isinstance(row["raw"], str) and isinstance(row["params"], list)
        assert row["intent"] is None or row["call"].startswith(row["intent"])

    scored = mlflow.pyfunc.load_model(uri, model_config={"decoding": "label_scoring"}).predict(
        pd.DataFrame({"text": UTTERANCES})
    )
    for row in scored.to_dict("records"):
        # Label scoring always commits to a catalog intent; the untrained model may then garble the arguments,
        # in which case the call is unreadable (intent None) but the chosen label still opens the answer.
        chosen = row["raw"].split("(", 1)[0]
        assert chosen in labels
        assert 0.0 < row["confidence"] <= 1.0
        assert row["intent"] in (chosen, None)
        assert isinstance(row["params"], list)


# ---- moving the champion (last: they leave the champion where they found it) ---------------------------------


def test_promote_then_rollback(registered: Registered) -> None:
    cfg = registered.cfg
    name = cfg.registry.model_name
    promoted = promote(cfg, registered.failed.version, reason="hotfix approved by on-call")
    assert promoted.is_champion and promoted.previous_champion == registered.passed.version
    assert promoted.tags["intentops.promotion_reason"] == "hotfix approved by on-call"
    model = _client(registered).get_registered_model(name)
    assert model.tags[PREVIOUS_CHAMPION_TAG] == registered.passed.version

    restored = rollback(cfg)
    assert restored.version == registered.passed.version and restored.is_champion
    model = _client(registered).get_registered_model(name)
    assert model.aliases[CHAMPION] == registered.passed.version
    assert model.tags[ROLLED_BACK_FROM_TAG] == registered.failed.version
    assert PREVIOUS_CHAMPION_TAG not in model.tags

    with pytest.raises(RegistryError, match="no recorded previous champion"):
        rollback(cfg)
    with pytest.raises(RegistryError, match="has no version 99"):
        promote(cfg, 99)
    assert champion_info(cfg).version == registered.passed.version


def test_empty_registry_has_nothing_to_roll_back(mlflow_tracking, tmp_path: Path) -> None:
    cfg = mlflow_tracking.config()
    assert champion_info(cfg) is None
    assert download_champion(cfg, tmp_path / "champion") is None
    assert not (tmp_path / "champion").exists()
    with pytest.raises(RegistryError, match="has no champion; nothing to roll back"):
        rollback(cfg)


# ---- checks before anything reaches the registry ---------------------------------------------------------------


def test_candidate_files_are_checked_first(tiny_model_dir: Path, small_dataset_dir: Path, tmp_path: Path) -> None:
    from intentops.config import RunConfig

    cfg = RunConfig()
    cfg.registry.tracking_uri = "http://127.0.0.1:9"  # nothing listens: every check must fail before contacting it
    bad_gate = tmp_path / GATE_JSON
    write_json(bad_gate, {"mode": "enabled", "reasons": []})
    with pytest.raises(RegistryError, match="boolean 'passed'"):
        register_model(tiny_model_dir, cfg, pipeline_run_id="r", gate_path=bad_gate)
    with pytest.raises(FileNotFoundError, match=r"metrics\.json"):
        register_model(tiny_model_dir, cfg, pipeline_run_id="r", eval_dir=tmp_path / "no-eval")
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        register_model(tiny_model_dir, cfg, pipeline_run_id="r", dataset_manifest=tmp_path)
    with pytest.raises(RegistryError, match="pipeline_run_id"):
        register_model(tiny_model_dir, cfg, pipeline_run_id="")

    no_hash = tmp_path / "model"
    shutil.copytree(tiny_model_dir, no_hash)
    card = read_json(no_hash / MODEL_CARD)
    write_json(no_hash / MODEL_CARD, {**card, "dataset_hash": ""})
    with pytest.raises(RegistryError, match="no dataset hash"):
        register_model(no_hash, cfg, pipeline_run_id="r")


def test_pyfunc_input_forms() -> None:
    import pandas as pd

    assert texts_from_input(pd.DataFrame({"text": UTTERANCES})) == UTTERANCES
    assert texts_from_input({"text": UTTERANCES}) == UTTERANCES
    assert texts_from_input([{"text": "hi"}, "there"]) == ["hi", "there"]
    assert texts_from_input("hello") == ["hello"]
    with pytest.raises(ValueError, match="'text' column"):
        texts_from_input(pd.DataFrame({"utterance": ["x"]}))
    with pytest.raises(ValueError, match="row 1"):
        texts_from_input(["ok", "  "])


def test_git_commit_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_COMMIT", GIT_SHA)
    assert git_commit() == GIT_SHA
    monkeypatch.delenv("GIT_COMMIT")
    commit = git_commit()
    assert commit == "unknown" or len(commit.removesuffix("-dirty")) == 40


def test_evaluation_and_gate_must_have_judged_this_model(
    tiny_model_dir: Path, small_dataset_dir: Path, tmp_path: Path
) -> None:
    """A gate decision and metrics made on another model cannot make this model a champion (issue 2/7, item 5)."""
    from intentops.config import RunConfig

    cfg = RunConfig()
    cfg.registry.tracking_uri = "http://127.0.0.1:9"  # nothing listens: the refusal must come before any contact
    judged = tmp_path / "judged"
    shutil.copytree(tiny_model_dir, judged)
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    weights = next(other.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # different weights, same file names
    judged_hash = ModelFolder(judged).content_hash()
    assert judged_hash != ModelFolder(other).content_hash()
    # Leftovers the registry never ships do not change the model's hash.
    (judged / "checkpoints").mkdir()
    (judged / "checkpoints" / "optimizer.pt").write_bytes(b"x")
    assert ModelFolder(judged).content_hash() == judged_hash

    dataset_hash = read_json(small_dataset_dir / DATASET_MANIFEST)["dataset_hash"]
    intents = load_catalog(judged / CATALOG_FILE).names
    metrics = _metrics(0.92, 0.85, dataset_hash, intents, judged_hash)
    eval_dir, gate_path, decision = _evaluation(tmp_path / "run", metrics, _predictions(8, 7, intents), None)
    assert decision.passed
    with pytest.raises(RegistryError, match=r"evaluation .* judged model .*" + judged_hash[:12]):
        register_model(other, cfg, pipeline_run_id="r", eval_dir=eval_dir, gate_path=gate_path)
    with pytest.raises(RegistryError, match=r"gate decision .* judged model .*" + judged_hash[:12]):
        register_model(other, cfg, pipeline_run_id="r", gate_path=gate_path)

    unbound = {key: value for key, value in metrics.items() if key != "model"}
    eval_dir, gate_path, _ = _evaluation(tmp_path / "unbound", unbound, _predictions(8, 7, intents), None)
    with pytest.raises(RegistryError, match="does not say which model it judged"):
        register_model(judged, cfg, pipeline_run_id="r", eval_dir=eval_dir, gate_path=gate_path)
