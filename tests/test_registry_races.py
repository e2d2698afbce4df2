"""Concurrent registry writers against a real MLflow server (issue 2/7, item 9).

Registering the pyfunc is slow and beside the point here, so the version itself is created with a bare
`create_model_version` (same tags, same registry); everything around it is the real registration and promotion code.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from intentops.artifacts import ModelFolder
from intentops.io import write_json
from intentops.registry import (
    CHALLENGER,
    CHAMPION,
    REGISTRATION_COMPLETE,
    REGISTRATION_TAG,
    ChampionMovedError,
    champion_info,
    promote,
    register_model,
    rollback,
)
from intentops.registry_cas import upsert


def _mlflow_client(target):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)


def _ensure_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _bare_version(client, name: str, tags: dict[str, str]) -> str:
    """A version without a model behind it: a fresh run's artifact folder as its source."""
    run = client.create_run("0")  # MLflow's Default experiment
    return str(client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id, tags).version)


def _bare_create(barrier: threading.Barrier | None = None):
    """A stand-in for `create_version` that (optionally) waits until every caller has got this far."""

    def create(candidate, cfg, pipeline_run_id: str, tags: dict[str, str], client) -> str:
        if barrier is not None:
            barrier.wait(timeout=60)
        _ensure_model(client, cfg.registry.model_name)
        return _bare_version(client, cfg.registry.model_name, tags)

    return create


def _versions(target, **tags: str) -> list[Any]:
    clauses = [f"name = '{target.model_name}'", *(f"tags.`{k}` = '{v}'" for k, v in tags.items())]
    return list(_mlflow_client(target).search_model_versions(" and ".join(clauses)))


def _complete_versions(target, count: int) -> None:
    client = _mlflow_client(target)
    _ensure_model(client, target.model_name)
    for _ in range(count):
        _bare_version(client, target.model_name, {REGISTRATION_TAG: REGISTRATION_COMPLETE})


def _champion(target) -> str | None:
    version = _mlflow_client(target).get_registered_model(target.model_name).aliases.get(CHAMPION)
    return str(version) if version is not None else None


# ---- (a) registration -----------------------------------------------------------------------------------------


def test_concurrent_registrations_of_one_run_leave_one_version(
    mlflow_tracking, tiny_model_dir: Path, small_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three `register` calls with one pipeline run id all passed the "already registered?" search, then each
    created a version: three versions for one run. Now the lowest version wins and the others delete their own."""
    cfg = mlflow_tracking.config()
    callers = 3
    monkeypatch.setattr("intentops.registry.create_version", _bare_create(threading.Barrier(callers)))

    def register(_: int):
        return register_model(tiny_model_dir, cfg, pipeline_run_id="run-race", dataset_manifest=small_dataset_dir)

    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(register, range(callers)))

    remaining = _versions(mlflow_tracking, pipeline_run_id="run-race")
    assert len(remaining) == 1
    winner = str(remaining[0].version)
    assert winner == "1"  # the lowest number wins; versions 2 and 3 were deleted by the calls that made them
    assert {result.version for result in results} == {winner}
    assert remaining[0].tags[REGISTRATION_TAG] == REGISTRATION_COMPLETE
    assert _mlflow_client(mlflow_tracking).get_registered_model(cfg.registry.model_name).aliases[CHALLENGER] == winner

    again = register_model(tiny_model_dir, cfg, pipeline_run_id="run-race", dataset_manifest=small_dataset_dir)
    assert again.version == winner and len(_versions(mlflow_tracking, pipeline_run_id="run-race")) == 1


def _gate_file(path: Path, model_dir: Path, expected_champion: str | None) -> Path:
    decision = {
        "passed": True,
        "mode": "enabled",
        "reasons": ["all 5 checks passed"],
        "candidate": {"intent_accuracy": 0.9, "model": {"content_hash": ModelFolder(model_dir).content_hash()}},
        "champion": None,
        "expected_champion": expected_champion,
    }
    write_json(path, decision)
    return path


def test_concurrent_registrations_of_a_passed_candidate_agree_on_the_champion(
    mlflow_tracking, tiny_model_dir: Path, small_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Winner and losers all move @champion to the same version: none of them may report the others as a conflict."""
    cfg = mlflow_tracking.config()
    callers = 3
    monkeypatch.setattr("intentops.registry.create_version", _bare_create(threading.Barrier(callers)))
    gate = _gate_file(tmp_path / "gate.json", tiny_model_dir, expected_champion="")

    def register(_: int):
        return register_model(
            tiny_model_dir, cfg, pipeline_run_id="run-pass", gate_path=gate, dataset_manifest=small_dataset_dir
        )

    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(register, range(callers)))
    assert {result.version for result in results} == {"1"}
    assert all(result.is_champion for result in results)
    assert len(_versions(mlflow_tracking, pipeline_run_id="run-pass")) == 1 and _champion(mlflow_tracking) == "1"


def test_concurrent_writers_of_one_new_tag_or_alias_all_succeed(mlflow_tracking) -> None:
    """MLflow's SQL store upserts a tag or alias as select-then-insert, so two writers of the same new row can collide
    (`UNIQUE constraint failed`); both writes must still succeed (seen in CI as a failed concurrent registration)."""
    client = _mlflow_client(mlflow_tracking)
    _complete_versions(mlflow_tracking, 1)
    name, writers, rounds = mlflow_tracking.model_name, 6, 8
    barrier = threading.Barrier(writers)

    def write(writer: int) -> None:
        for round_ in range(rounds):
            barrier.wait(timeout=60)
            upsert(client.set_model_version_tag, name, "1", f"race.{round_}", "same")
            upsert(client.set_registered_model_tag, name, f"race.{round_}", str(writer))
            upsert(client.set_registered_model_alias, name, f"race-{round_}", "1")

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, range(writers)))
    version = client.get_model_version(name, "1")
    assert all(version.tags[f"race.{round_}"] == "same" for round_ in range(rounds))
    assert len(version.aliases) == rounds


def test_upsert_repeats_only_a_lost_insert_race() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST, INVALID_PARAMETER_VALUE

    calls: list[tuple[str, ...]] = []

    def lost_once(*args: str) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise MlflowException(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: model_version_tags.key", error_code=BAD_REQUEST
            )

    upsert(lost_once, "model", "1", "key", "value")
    assert calls == [("model", "1", "key", "value")] * 2

    def invalid(*args: str) -> None:
        raise MlflowException("Invalid value for tag key", error_code=INVALID_PARAMETER_VALUE)

    with pytest.raises(MlflowException, match="Invalid value"):
        upsert(invalid, "model", "1", "key", "value")


def test_registration_does_not_promote_over_a_champion_the_gate_never_saw(
    mlflow_tracking, tiny_model_dir: Path, small_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate compared the candidate with champion 1; if another run made version 2 champion meanwhile, the
    candidate stays a challenger and registration fails loudly instead of replacing a champion nobody compared."""
    cfg = mlflow_tracking.config()
    monkeypatch.setattr("intentops.registry.create_version", _bare_create())
    _complete_versions(mlflow_tracking, 2)
    promote(cfg, 1)
    promote(cfg, 2)  # another pipeline's champion, promoted after our gate ran

    gate = _gate_file(tmp_path / "gate.json", tiny_model_dir, expected_champion="1")
    with pytest.raises(ChampionMovedError, match=r"@champion is version 2, not the expected version 1"):
        register_model(
            tiny_model_dir, cfg, pipeline_run_id="run-stale", gate_path=gate, dataset_manifest=small_dataset_dir
        )
    assert _champion(mlflow_tracking) == "2"
    stale = _versions(mlflow_tracking, pipeline_run_id="run-stale")
    assert len(stale) == 1 and CHAMPION not in (stale[0].aliases or [])

    fresh = _gate_file(tmp_path / "gate-2.json", tiny_model_dir, expected_champion="2")
    version = register_model(
        tiny_model_dir, cfg, pipeline_run_id="run-fresh", gate_path=fresh, dataset_manifest=small_dataset_dir
    )
    assert version.is_champion and version.previous_champion == "2"


# ---- (b) promotion --------------------------------------------------------------------------------------------


def test_promote_with_an_expected_champion_is_compare_and_set(mlflow_tracking) -> None:
    cfg = mlflow_tracking.config()
    _complete_versions(mlflow_tracking, 3)
    with pytest.raises(ChampionMovedError, match="is no champion, not the expected version 1"):
        promote(cfg, 2, expect_champion="1")
    assert promote(cfg, 1, expect_champion="").is_champion  # "" expects no champion yet
    with pytest.raises(ChampionMovedError, match="is version 1, not the expected no champion"):
        promote(cfg, 2, expect_champion="")
    with pytest.raises(ChampionMovedError, match="is version 1, not the expected version 3"):
        promote(cfg, 2, expect_champion=3)
    assert _champion(mlflow_tracking) == "1"
    assert promote(cfg, 2, expect_champion=1).previous_champion == "1"


class _Interfering:
    """A client that lets another promotion run at one chosen moment of ours (once)."""

    def __init__(self, real, when: str, interfere) -> None:
        self._real, self._when, self._interfere = real, when, interfere

    def __getattr__(self, attr: str):
        method = getattr(self._real, attr)
        if attr != self._when:
            return method

        def call(*args, **kwargs):
            if self._interfere is None:
                return method(*args, **kwargs)
            interfere, self._interfere = self._interfere, None
            if attr == "set_registered_model_alias":
                result = method(*args, **kwargs)
                interfere()
                return result
            interfere()
            return method(*args, **kwargs)

        return call


def _interfering_client(real_client, when: str, interfere):
    """`registry._client` whose first client lets `interfere` run at `when`; later clients (its own) are plain."""
    pending = [interfere]

    def make(cfg):
        client = real_client(cfg)
        return _Interfering(client, when, pending.pop()) if pending else client

    return make


@pytest.mark.parametrize("when", ["set_model_version_tag", "set_registered_model_alias"])
def test_promote_fails_when_the_champion_moves_under_it(
    mlflow_tracking, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Another promotion lands right before our alias move, or right after it: ours must not report success."""
    import intentops.registry as registry

    cfg = mlflow_tracking.config()
    _complete_versions(mlflow_tracking, 3)
    promote(cfg, 1)
    monkeypatch.setattr(registry, "_client", _interfering_client(registry._client, when, lambda: promote(cfg, 3)))
    with pytest.raises(ChampionMovedError, match=r"@champion is (now )?version 3"):
        promote(cfg, 2)
    assert _champion(mlflow_tracking) == "3"


def test_concurrent_promotions_at_most_one_succeeds(mlflow_tracking) -> None:
    """Before: all of them succeeded and the last one won silently."""
    cfg = mlflow_tracking.config()
    _complete_versions(mlflow_tracking, 5)
    promote(cfg, 1)
    barrier = threading.Barrier(4)

    def attempt(version: int) -> str | None:
        barrier.wait(timeout=60)
        try:
            return promote(cfg, version, expect_champion="1").version
        except ChampionMovedError:
            return None

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(attempt, [2, 3, 4, 5]))
    winners = [version for version in outcomes if version is not None]
    assert len(winners) <= 1
    final = _champion(mlflow_tracking)
    assert final in {"1", "2", "3", "4", "5"}
    if winners:
        assert final == winners[0]


def test_rollback_is_compare_and_set_too(mlflow_tracking, monkeypatch: pytest.MonkeyPatch) -> None:
    import intentops.registry as registry

    cfg = mlflow_tracking.config()
    _complete_versions(mlflow_tracking, 3)
    promote(cfg, 1)
    promote(cfg, 2)
    moving = _interfering_client(registry._client, "set_registered_model_alias", lambda: promote(cfg, 3))
    monkeypatch.setattr(registry, "_client", moving)
    with pytest.raises(
        ChampionMovedError, match=r"@champion is now version 3 although this call moved it to version 1"
    ):
        rollback(cfg)
    assert _champion(mlflow_tracking) == "3"
    assert champion_info(cfg).version == "3"


def test_cli_promote_expect_champion(mlflow_tracking, capsys: pytest.CaptureFixture[str]) -> None:
    from intentops.cli import main
    from intentops.cli.registry import CHAMPION_MOVED_EXIT

    _complete_versions(mlflow_tracking, 2)
    common = ["--tracking-uri", mlflow_tracking.tracking_uri, "--model-name", mlflow_tracking.model_name]
    assert main(["promote", "1", "--expect-champion", "none", *common]) == 0
    capsys.readouterr()
    assert main(["promote", "2", "--expect-champion", "2", *common]) == CHAMPION_MOVED_EXIT
    err = capsys.readouterr().err
    assert CHAMPION_MOVED_EXIT not in (0, 1, 2, 3, 4)
    assert "@champion is version 1, not the expected version 2" in err and len(err.strip().splitlines()) == 1
    assert main(["promote", "2", "--expect-champion", "1", *common]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["promote", "2", "--expect-champion", "latest", *common])
    assert exit_info.value.code == 2 and "--expect-champion" in capsys.readouterr().err


def test_the_gate_records_the_champion_it_was_made_against(tmp_path: Path) -> None:
    """What registration's compare-and-set expects: the registry champion the gate compared with, or none."""
    from intentops.artifacts import Evaluation, GateResult
    from intentops.config import GateConfig
    from intentops.evaluation.gate import write_gate
    from intentops.stages.evaluation import decide_gate
    from tests.test_stages import _evaluation, _metrics

    cfg = GateConfig(min_intent_accuracy=0.5, min_param_accuracy=0.5, min_per_intent_recall=0.5)
    candidate = _evaluation(tmp_path / "candidate", _metrics(0.9), wrong=2)
    champion = _evaluation(tmp_path / "champion", _metrics(0.9, model={"registry": {"version": "3"}}), wrong=2)
    decision = decide_gate(candidate, champion, cfg)
    assert decision.expected_champion == "3"
    assert GateResult.read_decision(write_gate(decision, tmp_path / "gate"))["expected_champion"] == "3"

    Evaluation.write_no_model(tmp_path / "none", "no champion registered yet", registry={"version": ""})
    assert decide_gate(candidate, tmp_path / "none", cfg).expected_champion == ""
    # A champion folder given by hand, or no champion evaluation at all: the registry was not read.
    assert (
        decide_gate(candidate, _evaluation(tmp_path / "by-hand", _metrics(0.9), wrong=2), cfg).expected_champion is None
    )
    assert decide_gate(candidate, None, cfg).expected_champion is None
