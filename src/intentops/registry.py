"""The MLflow model registry: every candidate becomes a version, and only the gate (or a person) makes a champion.

A registered version is an MLflow pyfunc (`registry_pyfunc.IntentDetectorModel`) that carries the Hugging Face
folder itself as an artifact, so the champion can be loaded with `mlflow.pyfunc.load_model("models:/NAME@champion")`
and the same files can be served by vLLM/KServe straight from the artifact store (`model_storage_uri`).

Versions are tagged `catalog_hash`, `dataset_hash`, `pipeline_run_id`, `git_commit`, the gate decision and the
headline metrics (packaging: `intentops.registry_packaging`). Aliases, never stages: `challenger` moves to every new
candidate, `champion` only when the gate decision
says passed (or on `promote`). Whenever the champion moves, the version it replaces is written into the new
champion's `intentops.previous_champion` tag (and onto the registered model), which is what `rollback` follows.
Registration is idempotent per pipeline run: the version tagged with that `pipeline_run_id` is reused, and a run
that crashed between creating the version and moving the aliases is completed rather than duplicated. Concurrent
registrations of one run each create a version (tagged in the same request), then look: the lowest version with the
run's tag wins and every other caller deletes the version it created itself.

Every champion move is compare-and-set on the client side (MLflow has none on the server): the caller says which
champion it expects (default: the one it read first), claims the move in a registered-model tag, re-reads alias and
claim right before and right after moving the alias, and raises `ChampionMovedError` when someone else moved it.
See docs/safety.md for what this does and does not guarantee.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.config import RunConfig
from intentops.io import atomic_path
from intentops.registry_cas import (
    CHAMPION,
    ChampionMovedError,  # noqa: F401 (callers catch the registry's errors from here)
    compare_and_move,
    is_missing,
    moved_error,
    upsert,
)
from intentops.registry_packaging import (
    MAX_TAG_CHARS,
    RegistryError,
    create_version,
    read_candidate,
    version_tags,
)
from intentops.tracking import apply_request_budget, resolve_tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
PREVIOUS_CHAMPION_TAG = "intentops.previous_champion"
REGISTRATION_TAG = "intentops.registration"
REGISTRATION_COMPLETE = "complete"
PROMOTED_AT_TAG = "intentops.promoted_at"
PROMOTION_REASON_TAG = "intentops.promotion_reason"
ROLLED_BACK_FROM_TAG = "intentops.rolled_back_from"
ROLLED_BACK_AT_TAG = "intentops.rolled_back_at"
DEPLOYED_VERSION_TAG = "intentops.deployed_version"
DEPLOYMENT_ENDPOINT_TAG = "intentops.deployment.endpoint"
DEPLOYMENT_TARGET_TAG = "intentops.deployment.target"
DEPLOYED_AT_TAG = "intentops.deployment.deployed_at"


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version, as the pipeline, CLI and serving see it."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def previous_champion(self) -> str | None:
        return self.tags.get(PREVIOUS_CHAMPION_TAG) or None

    @property
    def is_champion(self) -> bool:
        return CHAMPION in self.aliases

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "model_uri": self.model_uri,
            "run_id": self.run_id,
            "source": self.source,
            "aliases": list(self.aliases),
            "previous_champion": self.previous_champion,
            "created_at": self.created_at,
            "tags": dict(self.tags),
        }

    @classmethod
    def from_mlflow(cls, mv: ModelVersion, aliases: list[str] | None = None) -> RegisteredVersion:
        created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
        return cls(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id or None,
            source=mv.source,
            aliases=tuple(sorted(aliases if aliases is not None else mv.aliases or [])),
            tags=dict(mv.tags or {}),
            created_at=created,
        )


# ---- clients and lookups ---------------------------------------------------------------------------------------


def _client(cfg: RunConfig) -> MlflowClient:
    """A client for the run's tracking server; the registry lives on the same server."""
    from mlflow import MlflowClient

    apply_request_budget(cfg)
    uri = resolve_tracking_uri(cfg)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _quoted(value: str, what: str) -> str:
    """A value safe to embed in an MLflow search filter (which has no escaping for quotes)."""
    if "'" in value or "`" in value:
        raise RegistryError(f"{what} {value!r} contains a quote; it cannot be used in a registry search")
    return f"'{value}'"


def _model_version(client: MlflowClient, name: str, version: str | int) -> RegisteredVersion:
    try:
        mv = client.get_model_version(name, str(version))
    except Exception as exc:
        if is_missing(exc):
            raise RegistryError(f"registered model {name!r} has no version {version}") from None
        raise
    return RegisteredVersion.from_mlflow(mv)


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the model or the alias does not exist."""
    try:
        registered = client.get_registered_model(name)
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    version = registered.aliases.get(alias)
    return str(version) if version is not None else None


def _search(client: MlflowClient, name: str, tags: Mapping[str, str]) -> list[ModelVersion]:
    """Versions of `name` carrying every tag in `tags`, newest first."""
    clauses = [f"name = {_quoted(name, 'model name')}"]
    for key, value in tags.items():
        if "`" in key or "'" in key:
            raise RegistryError(f"tag key {key!r} contains a quote; it cannot be used in a registry search")
        clauses.append(f"tags.`{key}` = {_quoted(str(value), f'tag {key}')}")
    return list(client.search_model_versions(" and ".join(clauses), order_by=["version_number DESC"]))


def champion_info(cfg: RunConfig) -> RegisteredVersion | None:
    """The version behind `@champion` of `cfg.registry.model_name`, or None when there is none yet."""
    client = _client(cfg)
    name = cfg.registry.model_name
    version = _alias_version(client, name, CHAMPION)
    if version is None:
        log.info("registry: %s has no champion yet", name)
        return None
    return _model_version(client, name, version)


def get_version(cfg: RunConfig, version: str | int) -> RegisteredVersion:
    """One version of `cfg.registry.model_name`; a clear error when it does not exist."""
    return _model_version(_client(cfg), cfg.registry.model_name, version)


def find_version_by_tags(cfg: RunConfig, **tags: str) -> RegisteredVersion | None:
    """The newest version carrying all these tags (e.g. catalog_hash=..., dataset_hash=...), or None."""
    if not tags:
        raise RegistryError("find_version_by_tags needs at least one tag to match")
    client = _client(cfg)
    name = cfg.registry.model_name
    found = _search(client, name, tags)
    if not found:
        log.info("registry: no version of %s has tags %s", name, tags)
        return None
    log.info("registry: %s version %s is the newest of %d with tags %s", name, found[0].version, len(found), tags)
    # Search results carry no aliases; read the version itself so `aliases` is true.
    return _model_version(client, name, found[0].version)


# ---- champion moves --------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _make_champion(client: MlflowClient, name: str, version: str, reason: str, expect: str | None = None) -> None:
    """Point `@champion` at `version` if it still is `expect` ("" = no champion; None = whatever it is now),
    recording the champion it replaces first."""
    current = _alias_version(client, name, CHAMPION)
    if current == version:
        log.info("registry: %s version %s is already the champion", name, version)
        return
    expected = current if expect is None else (expect or None)
    if current != expected:
        raise moved_error(name, current, expected, "another promotion moved it (nothing changed)")
    # The predecessor is written before the alias moves, so a champion never lacks its rollback target.
    if current is not None:
        upsert(client.set_model_version_tag, name, version, PREVIOUS_CHAMPION_TAG, current)
    elif PREVIOUS_CHAMPION_TAG in client.get_model_version(name, version).tags:
        # First champion (or the alias was removed by hand): a stale predecessor must not become a rollback target.
        client.delete_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG)
    if not compare_and_move(client, name, version, expected):
        log.info("registry: %s version %s was made champion by a concurrent call", name, version)
        return
    if current is not None:
        upsert(client.set_registered_model_tag, name, PREVIOUS_CHAMPION_TAG, current)
    elif PREVIOUS_CHAMPION_TAG in client.get_registered_model(name).tags:
        client.delete_registered_model_tag(name, PREVIOUS_CHAMPION_TAG)
    upsert(client.set_model_version_tag, name, version, PROMOTED_AT_TAG, _now())
    upsert(client.set_model_version_tag, name, version, PROMOTION_REASON_TAG, reason[:MAX_TAG_CHARS])
    log.info(
        "registry: %s@%s -> version %s (%s; previous champion: %s)", name, CHAMPION, version, reason, current or "none"
    )


def promote(
    cfg: RunConfig, version: str | int, reason: str = "manual promotion", expect_champion: str | int | None = None
) -> RegisteredVersion:
    """Make `version` the champion by hand (bypassing the gate), keeping the replaced champion for rollback.

    `expect_champion` is the champion the caller decided against ("" = none yet); when @champion is something
    else, or moves during the call, `ChampionMovedError` is raised. Without it, the champion read first is expected.
    """
    client = _client(cfg)
    name = cfg.registry.model_name
    target = _model_version(client, name, version)
    if target.tags.get(REGISTRATION_TAG) != REGISTRATION_COMPLETE:
        log.warning("registry: %s version %s was not registered by IntentOps to completion", name, target.version)
    expect = None if expect_champion is None else str(expect_champion)
    _make_champion(client, name, target.version, reason, expect)
    return _model_version(client, name, target.version)


def rollback(cfg: RunConfig) -> RegisteredVersion:
    """Move `@champion` back to the champion it replaced (the current champion's `intentops.previous_champion`)."""
    client = _client(cfg)
    name = cfg.registry.model_name
    current_version = _alias_version(client, name, CHAMPION)
    if current_version is None:
        raise RegistryError(f"registered model {name!r} has no champion; nothing to roll back")
    current = _model_version(client, name, current_version)
    previous = current.previous_champion
    if previous is None:
        raise RegistryError(
            f"champion {name!r} version {current.version} has no recorded previous champion "
            f"(tag {PREVIOUS_CHAMPION_TAG}); nothing to roll back to"
        )
    try:
        target = _model_version(client, name, previous)
    except RegistryError:
        raise RegistryError(
            f"champion {name!r} version {current.version} records previous champion {previous}, "
            "which no longer exists; promote a version by hand instead"
        ) from None
    compare_and_move(client, name, target.version, current.version)
    upsert(client.set_registered_model_tag, name, ROLLED_BACK_FROM_TAG, current.version)
    if target.previous_champion:
        upsert(client.set_registered_model_tag, name, PREVIOUS_CHAMPION_TAG, target.previous_champion)
    elif PREVIOUS_CHAMPION_TAG in client.get_registered_model(name).tags:
        client.delete_registered_model_tag(name, PREVIOUS_CHAMPION_TAG)
    upsert(client.set_model_version_tag, name, current.version, ROLLED_BACK_AT_TAG, _now())
    log.info("registry: rolled %s@%s back from version %s to %s", name, CHAMPION, current.version, target.version)
    return _model_version(client, name, target.version)


# ---- artifacts -----------------------------------------------------------------------------------------------


def model_storage_uri(cfg: RunConfig, version: str | int, *, artifacts_destination: str | None = None) -> str:
    """Where the Hugging Face folder of `version` lives in the artifact store (what vLLM/KServe load).

    With a proxied artifact store (`mlflow server --artifacts-destination s3://bucket`) MLflow reports
    `mlflow-artifacts:/...` URIs; pass the server's destination to get the underlying `s3://bucket/...` location.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    from intentops.registry_pyfunc import HF_MODEL_ARTIFACT

    client = _client(cfg)
    name = cfg.registry.model_name
    target = _model_version(client, name, version)
    root = client.get_model_version_download_uri(name, target.version).rstrip("/")
    # The folder's place inside the package is recorded in the MLmodel file; read it rather than assume it.
    with tempfile.TemporaryDirectory(prefix="intentops-mlmodel-") as scratch:
        mlmodel = download_artifacts(
            artifact_uri=f"{root}/MLmodel", dst_path=scratch, tracking_uri=resolve_tracking_uri(cfg)
        )
        flavor = Model.load(mlmodel).flavors.get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get(HF_MODEL_ARTIFACT)
    if not artifact:
        raise RegistryError(f"{target.model_uri} has no {HF_MODEL_ARTIFACT!r} artifact; not an IntentOps model")
    uri = f"{root}/{artifact['path']}"
    if artifacts_destination and uri.startswith("mlflow-artifacts:"):
        uri = f"{artifacts_destination.rstrip('/')}/{uri.removeprefix('mlflow-artifacts:').lstrip('/')}"
    return uri


def download_version(cfg: RunConfig, version: str | int, dest: str | Path) -> tuple[RegisteredVersion, Path]:
    """Download the Hugging Face folder of `version` to `dest` (atomically) and check it is a model folder."""
    from mlflow.artifacts import download_artifacts

    from intentops.models import read_model_card

    target = get_version(cfg, version)
    uri = model_storage_uri(cfg, target.version)
    dest = Path(dest)
    log.info("registry: downloading %s (%s) to %s", target.model_uri, uri, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest.parent) as scratch, atomic_path(dest) as tmp:
        local = Path(download_artifacts(artifact_uri=uri, dst_path=scratch, tracking_uri=resolve_tracking_uri(cfg)))
        read_model_card(local)
        os.replace(local, tmp)
    return target, dest


def download_champion(cfg: RunConfig, dest: str | Path) -> tuple[RegisteredVersion, Path] | None:
    """The champion's Hugging Face folder in `dest` (for the gate's same-test-set comparison); None if no champion."""
    champion = champion_info(cfg)
    if champion is None:
        return None
    return download_version(cfg, champion.version, dest)


def set_deployment(cfg: RunConfig, version: str | int, endpoint: str, target: str) -> RegisteredVersion:
    """Record that `version` now serves at `endpoint` on `target` (kserve, k8s, local)."""
    client = _client(cfg)
    name = cfg.registry.model_name
    deployed = _model_version(client, name, version)
    upsert(client.set_model_version_tag, name, deployed.version, DEPLOYMENT_ENDPOINT_TAG, endpoint)
    upsert(client.set_model_version_tag, name, deployed.version, DEPLOYMENT_TARGET_TAG, target)
    upsert(client.set_model_version_tag, name, deployed.version, DEPLOYED_AT_TAG, _now())
    upsert(client.set_registered_model_tag, name, DEPLOYED_VERSION_TAG, deployed.version)
    upsert(client.set_registered_model_tag, name, DEPLOYMENT_ENDPOINT_TAG, endpoint)
    log.info("registry: %s version %s deployed to %s at %s", name, deployed.version, target, endpoint)
    return _model_version(client, name, deployed.version)


# ---- registration --------------------------------------------------------------------------------------------


def register_model(
    model_dir: str | Path,
    cfg: RunConfig,
    *,
    pipeline_run_id: str,
    eval_dir: str | Path | None = None,
    gate_path: str | Path | None = None,
    dataset_manifest: str | Path | None = None,
) -> RegisteredVersion:
    """Register a candidate as a new version of `cfg.registry.model_name`; `@challenger` always, `@champion` iff
    the gate decision says passed. Re-running with the same `pipeline_run_id` returns (or finishes) the same version.

    `dataset_manifest` is the dataset folder or its manifest file (source of `dataset_hash`; else the model card's).
    """
    if not pipeline_run_id:
        raise RegistryError("register_model needs a pipeline_run_id (it is what makes registration idempotent)")
    candidate = read_candidate(
        Path(model_dir),
        Path(eval_dir) if eval_dir is not None else None,
        Path(gate_path) if gate_path is not None else None,
        Path(dataset_manifest) if dataset_manifest is not None else None,
    )
    if candidate.gate is None:
        log.warning("registry: no gate decision given; %s will be a challenger only", candidate.model_dir)

    client = _client(cfg)
    name = cfg.registry.model_name
    existing = _search(client, name, {"pipeline_run_id": pipeline_run_id})
    if existing:
        first = existing[-1]  # the lowest version: the one concurrent registrations agree on
        version = str(first.version)
        if first.tags.get(REGISTRATION_TAG) == REGISTRATION_COMPLETE:
            log.info("registry: pipeline run %s already registered %s version %s", pipeline_run_id, name, version)
            return _model_version(client, name, version)
        log.info("registry: finishing the interrupted registration of %s version %s", name, version)
    else:
        created = create_version(candidate, cfg, pipeline_run_id, version_tags(candidate, pipeline_run_id), client)
        version = _settle_registration(client, name, pipeline_run_id, created)

    upsert(client.set_registered_model_alias, name, CHALLENGER, version)
    log.info("registry: %s@%s -> version %s", name, CHALLENGER, version)
    if candidate.gate_passed:
        # The champion the gate compared with must still be the champion; else the version stays a challenger.
        _make_champion(client, name, version, f"gate passed (mode {candidate.gate_mode})", candidate.expected_champion)
    else:
        log.info(
            "registry: %s version %s stays a challenger (%s)",
            name,
            version,
            "gate failed" if candidate.gate is not None else "no gate decision",
        )
    upsert(client.set_model_version_tag, name, version, REGISTRATION_TAG, REGISTRATION_COMPLETE)
    return _model_version(client, name, version)


def _settle_registration(client: MlflowClient, name: str, pipeline_run_id: str, created: str) -> str:
    """Concurrent registrations of one pipeline run: the lowest version tagged with the run wins.

    The tag is written in the same request (and database transaction) that creates the version, and MLflow numbers a
    version one above the highest existing one, so every caller that looks after creating sees the winner. A loser
    deletes the version it created itself and carries on with the winner's.
    """
    tagged = sorted(int(mv.version) for mv in _search(client, name, {"pipeline_run_id": pipeline_run_id}))
    winner = str(tagged[0]) if tagged else created
    if winner != created:
        log.warning(
            "registry: pipeline run %s was registered concurrently as version %s; deleting this call's version %s",
            pipeline_run_id,
            winner,
            created,
        )
        client.delete_model_version(name, created)
    return winner
