"""Stage functions and artifact contracts: missing files name their stage, the gate decides over two evaluations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentops.artifacts import (
    DATASET_MANIFEST,
    GATE_JSON,
    METRICS_FILE,
    NO_MODEL_FILE,
    PREDICTIONS_FILE,
    TRAIN_FILE,
    ArtifactMissingError,
    Dataset,
    Evaluation,
    GateResult,
    HardSet,
    ModelFolder,
)
from intentops.config import GateConfig, RunConfig
from intentops.io import read_jsonl, write_json, write_jsonl
from intentops.stages import decide_gate, evaluate_champion


def _metrics(intent: float, dataset_hash: str = "abc123", **extra: object) -> dict:
    return {
        "n": 50,
        "intent_accuracy": intent,
        "param_accuracy": intent,
        "format_error_rate": 0.0,
        "per_intent": {"play_music": {"recall": intent, "seen": True, "support": 10}},
        "dataset": {"hash": dataset_hash, "split": "test", "n": 50},
        "decoding": "generate",
        **extra,
    }


def _evaluation(folder: Path, metrics: dict, wrong: int = 0) -> Path:
    """An evaluation folder: metrics plus 100 per-record rows, the first `wrong` answering another intent."""
    intents = ["play_music", "set_alarm"]
    rows = []
    for i in range(100):
        gold = f"{intents[i % 2]}(x)"
        call = f"{intents[(i + 1) % 2]}(x)" if i < wrong else gold
        rows.append({"id": f"r{i:03d}", "gold": gold, "call": call, "raw": call, "lang": "zh", "seen": True})
    write_json(folder / METRICS_FILE, metrics)
    write_jsonl(folder / PREDICTIONS_FILE, rows)
    return folder


@pytest.mark.parametrize(
    ("artifact", "name", "stage"),
    [
        (Dataset, DATASET_MANIFEST, "validate-dataset"),
        (Evaluation, METRICS_FILE, "evaluate"),
        (GateResult, GATE_JSON, "gate"),
        (HardSet, TRAIN_FILE, "mine-hard-samples"),
    ],
)
def test_a_missing_file_names_itself_and_the_stage_that_writes_it(tmp_path, artifact, name, stage):
    folder = artifact(tmp_path)
    with pytest.raises(ArtifactMissingError, match=rf"no {name}.*the {stage} stage writes it"):
        folder.check() if name != DATASET_MANIFEST else folder.manifest()


def test_model_card_without_stage_is_refused(tmp_path):
    write_json(tmp_path / ModelFolder.REQUIRED[0], {"base_model": "x"})
    with pytest.raises(ValueError, match="no 'stage'"):
        ModelFolder(tmp_path).card()


def test_metrics_are_typed_and_keep_every_block(tmp_path):
    metrics = Evaluation(_evaluation(tmp_path, _metrics(0.9, by_lang={"zh": {"n": 3}}))).metrics()
    assert metrics.intent_accuracy == 0.9 and metrics.dataset.hash == "abc123"
    assert metrics.to_dict()["by_lang"] == {"zh": {"n": 3}}
    write_json(tmp_path / METRICS_FILE, {"intent_accuracy": 0.9})
    with pytest.raises(ValueError, match=r"metrics\.json: not evaluation metrics"):
        Evaluation(tmp_path).metrics()


def test_gate_decides_over_two_evaluations(tmp_path):
    candidate = _evaluation(tmp_path / "candidate", _metrics(0.70), wrong=30)
    champion = _evaluation(tmp_path / "champion", _metrics(0.98, model={"registry": {"version": "3"}}), wrong=2)
    cfg = GateConfig(min_intent_accuracy=0.5, min_param_accuracy=0.5, min_per_intent_recall=0.5)
    decision = decide_gate(candidate, champion, cfg)
    assert decision.passed is False and decision.failed
    assert decision.champion["registry"]["version"] == "3"

    Evaluation.write_no_model(tmp_path / "none", "no champion of intentops-intent-detector registered yet")
    assert (tmp_path / "none" / NO_MODEL_FILE).is_file() and not Evaluation(tmp_path / "none").evaluated
    first = decide_gate(candidate, tmp_path / "none", cfg)
    assert first.passed is True and first.champion is None


def test_evaluate_champion_refuses_a_candidate_from_another_dataset(small_dataset_dir: Path, tmp_path: Path) -> None:
    candidate = _evaluation(tmp_path / "candidate", _metrics(0.9, dataset_hash="not-this-one"))
    with pytest.raises(ValueError, match=r"'not-this-one'.*one test set"):
        evaluate_champion(RunConfig(), candidate, small_dataset_dir, tmp_path / "champion")
    assert not (tmp_path / "champion").exists()


def test_evaluate_champion_without_a_champion_says_so(small_dataset_dir: Path, tmp_path: Path) -> None:
    dataset_hash = json.loads((small_dataset_dir / DATASET_MANIFEST).read_text(encoding="utf-8"))["dataset_hash"]
    candidate = _evaluation(tmp_path / "candidate", _metrics(0.9, dataset_hash=dataset_hash))
    cfg = RunConfig()
    cfg.gate.mode = "disabled"
    out = evaluate_champion(cfg, candidate, small_dataset_dir, tmp_path / "champion")
    assert out.metadata["evaluated"] is False and "disabled" in out.metadata["reason"]
    assert "stage_seconds" in out.metadata and out.scalars == {} and out.confusion is None


@pytest.mark.slow
def test_train_chain_hands_each_stage_the_previous_artifact(
    small_dataset_dir: Path, tiny_model_dir: Path, training_config: RunConfig, tmp_path: Path
) -> None:
    """The one training chain (bench, CLI): SFT -> GRPO 1 -> mine -> GRPO 2, each output a complete artifact."""
    from intentops.artifacts import Rollouts
    from intentops.stages import train_chain

    cfg = RunConfig.from_flat(
        {
            "model__base_model": str(tiny_model_dir),
            "sft__epochs": 1.0,
            "grpo__stage1_max_steps": 2,
            "grpo__stage2_max_steps": 1,
            "grpo__batch_size": 4,
            "grpo__num_generations": 2,
            "registry__tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            # the uncertain label taught: stage 1 relabels the least-confident quarter and trains on that copy
            "prompt__uncertain_label": True,
            "sft__uncertain_share": 0.25,
        },
        base=training_config,
    )
    timed: list[str] = []

    def on_stage(name, run):
        timed.append(name)
        return run()

    chain = train_chain(cfg, small_dataset_dir, tmp_path / "chain", on_stage=on_stage)
    assert timed == ["sft", "grpo1", "mine", "grpo2"]
    for folder in (chain.sft, chain.grpo1, chain.candidate):
        ModelFolder(folder).check()
    assert ModelFolder(chain.candidate).card()["stage"] == "grpo2"
    assert Rollouts(chain.rollouts1).metadata()["rows"] == chain.stages["rollouts1"]["rows"] > 0
    # mining read the stage-1 scoring pass (every training record), not GRPO's training rollouts
    assert Rollouts(chain.rollouts1).metadata()["scoring_rows"] > 0
    assert chain.stages["mine"]["coverage"] == 1.0
    relabelled = [
        r for r in read_jsonl(Rollouts(chain.rollouts1).trained_on(Path("-"))) if r["output"] == "uncertain()"
    ]
    train_records = len(list(read_jsonl(Dataset(small_dataset_dir).train)))
    assert len(relabelled) == round(0.25 * train_records) == chain.stages["rollouts1"]["uncertain_relabelled"]
    assert Rollouts(chain.rollouts1).metadata()["uncertain_relabelled"] == len(relabelled)
    HardSet(chain.hard_set).check()
    assert all("stage_seconds" in chain.stages[name] for name in ("sft", "grpo1", "mine", "grpo2"))


def test_mine_stage_reads_only_the_scoring_pass(tmp_path: Path, small_dataset_dir: Path) -> None:
    """A rollouts folder with GRPO's training rollouts but no scoring pass is refused, naming the missing file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from intentops.artifacts import ROLLOUTS_FILE, SCORES_FILE, Rollouts
    from intentops.io import read_jsonl
    from intentops.stages import mine_hard_samples
    from intentops.training.rollouts import (
        GENERATIONS_METADATA,
        SKIPPED_METADATA,
        TRAIN_SET_HASH_METADATA,
        rollout_schema,
        train_set_hash,
    )

    records = list(read_jsonl(Dataset(small_dataset_dir).train))
    rows = [
        {
            "sample_id": record["id"],
            "step": 0,
            "generation": 0,
            "completion": "x",
            "reward_format": 1.0,
            "reward_intent": float(index % 2),
            "reward_params": 1.0,
            "reward_total": 2.0 + index % 2,
        }
        for index, record in enumerate(records)
    ]
    rollouts = tmp_path / "rollouts"
    rollouts.mkdir()
    training = rollout_schema([1.0, 1.0, 1.0], "training", **{TRAIN_SET_HASH_METADATA: train_set_hash(records)})
    pq.write_table(pa.Table.from_pylist(rows, schema=training), rollouts / ROLLOUTS_FILE)
    cfg = RunConfig.from_flat({"registry__tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    with pytest.raises(ArtifactMissingError, match=SCORES_FILE.replace(".", r"\.")):
        mine_hard_samples(cfg, rollouts, small_dataset_dir, tmp_path / "hard")

    meta = {TRAIN_SET_HASH_METADATA: train_set_hash(records), SKIPPED_METADATA: [], GENERATIONS_METADATA: 1}
    scoring = rollout_schema([1.0, 1.0, 1.0], "scoring", **meta)
    pq.write_table(pa.Table.from_pylist(rows, schema=scoring), rollouts / SCORES_FILE)
    out = mine_hard_samples(cfg, rollouts, small_dataset_dir, tmp_path / "hard")
    assert out["hard"] == sum(1 for index in range(len(records)) if index % 2 == 0)
    assert out["coverage"] == 1.0 and "stage_seconds" in out
    assert Rollouts(rollouts).metadata() == {"rows": len(rows), "scoring_rows": len(rows)}
    HardSet(tmp_path / "hard").check()


@pytest.mark.parametrize("fast_exit", [True, False])
def test_a_local_task_skips_the_shutdown_collections_and_still_flushes_its_output(
    tmp_path: Path, fast_exit: bool
) -> None:
    """A local run's task process freezes its objects at exit (interpreter shutdown would walk them all in cyclic
    garbage collections), after the stage's own exit handlers and before logging's, so buffered output still lands;
    without the local run's switch (a pod on a cluster) it exits as usual."""
    import os
    import subprocess
    import sys

    from intentops.stages import FAST_EXIT_ENV

    log = tmp_path / "stage.log"
    script = (
        "import atexit, gc, logging\n"
        f"logging.basicConfig(filename={str(log)!r}, level=logging.INFO)\n"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
        "import intentops.stages\n"
        "logging.getLogger('stage').info('last line of the stage')\n"
    )
    env = {key: value for key, value in os.environ.items() if key != FAST_EXIT_ENV}
    if fast_exit:
        env[FAST_EXIT_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120, env=env
    )
    assert f"frozen at exit: {fast_exit}" in done.stdout
    assert "last line of the stage" in log.read_text(encoding="utf-8")
