"""The MLflow model registry: every candidate becomes a version, and only the gate (or a person) makes a champion.

A registered version is an MLflow pyfunc (`registry_pyfunc.IntentDetectorModel`) that carries the Hugging Face
folder itself as an artifact, so the champion can be loaded with `mlflow.pyfunc.load_model("models:/NAME@champion")`
and the same files can be served by vLLM/KServe straight from the artifact store (`model_storage_uri`).

Versions are tagged `catalog_hash`, `dataset_hash`, `pipeline_run_id`, `git_commit`, the gate decision and the
headline metrics. Aliases, never stages: `challenger` moves to every new candidate, `champion` only when gate.json
says passed (or on `promote`). Whenever the champion moves, the version it replaces is written into the new
champion's `intentops.previous_champion` tag (and onto the registered model), which is what `rollback` follows.
Registration is idempotent per pipeline run: the version tagged with that `pipeline_run_id` is reused, and a run
that crashed between creating the version and moving the aliases is completed rather than duplicated.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.catalog import load_catalog
from intentops.config import RunConfig
from intentops.io import atomic_path, read_json
from intentops.prompting import CATALOG_FILE, MODEL_CARD
from intentops.tracking import apply_request_budget, resolve_tracking_uri, stage_run

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)

CHAMPION = "champion"
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
MODEL_NAME_IN_RUN = "intent_detector"
METRICS_FILE = "metrics.json"
DATASET_MANIFEST = "manifest.json"
# Training leftovers that live next to a model folder but are not part of the model.
NOT_MODEL_FILES = ("checkpoints", "rollouts.parquet", ".staging-*", "runs", "*.tmp")
# What the pyfunc imports at load time; pinned to the versions installed where the model was registered.
PYFUNC_REQUIREMENTS = (
    "mlflow",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "pydantic",
    "pyyaml",
    "scikit-learn",
    "tqdm",
)
_MAX_TAG_CHARS = 5000
MODEL_DESCRIPTION = (
    "IntentOps intent detector (pyfunc: text -> intent, params, confidence; Hugging Face folder in artifacts/hf_model). "
    "@champion serves and moves only through the promotion gate, `intentops promote` or `intentops rollback`; "
    "@challenger is the newest candidate."
)


class RegistryError(ValueError):
    """A registry operation that cannot proceed; the message names the model, version or file."""


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


def _is_missing(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _quoted(value: str, what: str) -> str:
    """A value safe to embed in an MLflow search filter (which has no escaping for quotes)."""
    if "'" in value or "`" in value:
        raise RegistryError(f"{what} {value!r} contains a quote; it cannot be used in a registry search")
    return f"'{value}'"


def _model_version(client: MlflowClient, name: str, version: str | int) -> RegisteredVersion:
    try:
        mv = client.get_model_version(name, str(version))
    except Exception as exc:
        if _is_missing(exc):
            raise RegistryError(f"registered model {name!r} has no version {version}") from None
        raise
    return RegisteredVersion.from_mlflow(mv)


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the model or the alias does not exist."""
    try:
        registered = client.get_registered_model(name)
    except Exception as exc:
        if _is_missing(exc):
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
    return RegisteredVersion.from_mlflow(found[0])


# ---- champion moves --------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _make_champion(client: MlflowClient, name: str, version: str, reason: str) -> None:
    """Point `@champion` at `version`, recording the champion it replaces first."""
    current = _alias_version(client, name, CHAMPION)
    if current == version:
        log.info("registry: %s version %s is already the champion", name, version)
        return
    # The predecessor is written before the alias moves, so a champion never lacks its rollback target.
    if current is not None:
        client.set_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG, current)
        client.set_registered_model_tag(name, PREVIOUS_CHAMPION_TAG, current)
    else:
        # First champion (or the alias was removed by hand): a stale predecessor must not become a rollback target.
        if PREVIOUS_CHAMPION_TAG in client.get_model_version(name, version).tags:
            client.delete_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG)
        if PREVIOUS_CHAMPION_TAG in client.get_registered_model(name).tags:
            client.delete_registered_model_tag(name, PREVIOUS_CHAMPION_TAG)
    client.set_model_version_tag(name, version, PROMOTED_AT_TAG, _now())
    client.set_model_version_tag(name, version, PROMOTION_REASON_TAG, reason[:_MAX_TAG_CHARS])
    client.set_registered_model_alias(name, CHAMPION, version)
    log.info(
        "registry: %s@%s -> version %s (%s; previous champion: %s)", name, CHAMPION, version, reason, current or "none"
    )


def promote(cfg: RunConfig, version: str | int, reason: str = "manual promotion") -> RegisteredVersion:
    """Make `version` the champion by hand (bypassing the gate), keeping the replaced champion for rollback."""
    client = _client(cfg)
    name = cfg.registry.model_name
    target = _model_version(client, name, version)
    if target.tags.get(REGISTRATION_TAG) != REGISTRATION_COMPLETE:
        log.warning("registry: %s version %s was not registered by IntentOps to completion", name, target.version)
    _make_champion(client, name, target.version, reason)
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
    client.set_registered_model_alias(name, CHAMPION, target.version)
    client.set_registered_model_tag(name, ROLLED_BACK_FROM_TAG, current.version)
    if target.previous_champion:
        client.set_registered_model_tag(name, PREVIOUS_CHAMPION_TAG, target.previous_champion)
    elif PREVIOUS_CHAMPION_TAG in client.get_registered_model(name).tags:
        client.delete_registered_model_tag(name, PREVIOUS_CHAMPION_TAG)
    client.set_model_version_tag(name, current.version, ROLLED_BACK_AT_TAG, _now())
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
    client.set_model_version_tag(name, deployed.version, DEPLOYMENT_ENDPOINT_TAG, endpoint)
    client.set_model_version_tag(name, deployed.version, DEPLOYMENT_TARGET_TAG, target)
    client.set_model_version_tag(name, deployed.version, DEPLOYED_AT_TAG, _now())
    client.set_registered_model_tag(name, DEPLOYED_VERSION_TAG, deployed.version)
    client.set_registered_model_tag(name, DEPLOYMENT_ENDPOINT_TAG, endpoint)
    log.info("registry: %s version %s deployed to %s at %s", name, deployed.version, target, endpoint)
    return _model_version(client, name, deployed.version)


# ---- registration --------------------------------------------------------------------------------------------


def git_commit() -> str:
    """$GIT_COMMIT (set by CI and the pipeline images), else this checkout's HEAD (`-dirty` if modified)."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=here, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty.returncode == 1 else head


@dataclass(frozen=True)
class _Candidate:
    """Everything registration reads from disk, checked before anything is written to the registry."""

    model_dir: Path
    card: dict[str, Any]
    catalog_hash: str
    dataset_hash: str
    metrics: dict[str, Any]
    metrics_path: Path | None
    eval_dir: Path | None
    gate: dict[str, Any] | None
    gate_path: Path | None
    examples: list[str]

    @property
    def gate_passed(self) -> bool:
        return bool(self.gate and self.gate.get("passed") is True)

    @property
    def gate_mode(self) -> str:
        return str(self.gate.get("mode", "")) if self.gate else ""


def _read_candidate(
    model_dir: Path, eval_dir: Path | None, gate_path: Path | None, dataset_manifest: Path | None
) -> _Candidate:
    from intentops.models import read_model_card

    card = read_model_card(model_dir)
    catalog_path = model_dir / CATALOG_FILE
    catalog = load_catalog(catalog_path)
    if card.get("catalog_hash") and card["catalog_hash"] != catalog.content_hash:
        log.warning(
            "registry: %s says catalog_hash %s but %s hashes to %s; tagging the catalog actually shipped",
            model_dir / MODEL_CARD,
            card["catalog_hash"],
            catalog_path,
            catalog.content_hash,
        )

    dataset_hash = ""
    if dataset_manifest is not None:
        manifest_path = dataset_manifest / DATASET_MANIFEST if dataset_manifest.is_dir() else dataset_manifest
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path}: dataset manifest not found")
        manifest = read_json(manifest_path)
        dataset_hash = str(manifest.get("dataset_hash") or "")
        if not dataset_hash:
            raise RegistryError(f"{manifest_path}: no 'dataset_hash' field")
        if manifest.get("catalog_hash") and manifest["catalog_hash"] != catalog.content_hash:
            log.warning(
                "registry: dataset %s was built for catalog %s, the model ships catalog %s",
                manifest_path,
                manifest["catalog_hash"],
                catalog.content_hash,
            )
    dataset_hash = dataset_hash or str(card.get("dataset_hash") or "")
    if not dataset_hash:
        raise RegistryError(
            f"{model_dir}: no dataset hash in the model card and no dataset manifest given; "
            "pass the dataset folder so the version records what it was trained on"
        )

    metrics: dict[str, Any] = {}
    metrics_path = None
    if eval_dir is not None:
        metrics_path = eval_dir / METRICS_FILE
        if not metrics_path.is_file():
            raise FileNotFoundError(f"{metrics_path}: evaluation metrics not found")
        metrics = read_json(metrics_path)

    gate = None
    if gate_path is not None:
        if not gate_path.is_file():
            raise FileNotFoundError(f"{gate_path}: gate decision not found")
        gate = read_json(gate_path)
        if not isinstance(gate, dict) or not isinstance(gate.get("passed"), bool):
            raise RegistryError(f"{gate_path}: expected a gate decision with a boolean 'passed' field")

    return _Candidate(
        model_dir=model_dir,
        card=card,
        catalog_hash=catalog.content_hash,
        dataset_hash=dataset_hash,
        metrics=metrics,
        metrics_path=metrics_path,
        eval_dir=eval_dir,
        gate=gate,
        gate_path=gate_path,
        examples=_input_examples(catalog),
    )


def _input_examples(catalog: Any) -> list[str]:
    """One Chinese and one English utterance from the catalog's examples (the model serves both languages)."""
    examples = [text for intent in catalog.intents for text in intent.examples]
    chinese = next((t for t in examples if any("\u4e00" <= ch <= "\u9fff" for ch in t)), "帮我查一下明天杭州的天气")
    english = next((t for t in examples if t.isascii()), "What's the weather in Hangzhou tomorrow?")
    return [chinese, english]


def _headline_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Top-level scalar metrics (intent_accuracy, param_accuracy, macro_f1, ...) as version tags."""
    return {
        key: f"{value:.6g}"
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _version_tags(candidate: _Candidate, pipeline_run_id: str) -> dict[str, str]:
    tags = {
        "catalog_hash": candidate.catalog_hash,
        "dataset_hash": candidate.dataset_hash,
        "pipeline_run_id": pipeline_run_id,
        "git_commit": git_commit(),
        "model_stage": str(candidate.card.get("stage", "")),
        "base_model": str(candidate.card.get("base_model", "")),
        "gate_passed": str(candidate.gate_passed).lower() if candidate.gate is not None else "not_evaluated",
    }
    if candidate.gate is not None:
        tags["gate_mode"] = candidate.gate_mode
        reasons = candidate.gate.get("reasons") or []
        tags["gate_reasons"] = "; ".join(str(r) for r in reasons)[:_MAX_TAG_CHARS]
    tags.update(_headline_tags(candidate.metrics))
    return tags


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in PYFUNC_REQUIREMENTS:
        try:
            installed = version(package)
        except PackageNotFoundError:
            log.warning("registry: %s is not installed here; the pyfunc's requirements leave it out", package)
            continue
        # A local label such as +cpu/+cu128 names a wheel index, not a release; serving picks its own build.
        pins.append(f"{package}=={installed.split('+', 1)[0]}")
    return pins


def _pyfunc_model_config(cfg: RunConfig) -> dict[str, Any]:
    decoding = "label_scoring" if cfg.evaluation.decoding == "label_scoring" else "generate"
    return {
        "decoding": decoding,
        "batch_size": cfg.evaluation.batch_size,
        "max_new_tokens": cfg.evaluation.max_new_tokens,
        "dtype": cfg.model.dtype,
        "constrained": cfg.evaluation.constrained,
        "label_score": cfg.evaluation.label_score,
        "label_normalization": cfg.evaluation.label_normalization,
    }


def _log_pyfunc(candidate: _Candidate, cfg: RunConfig, staging: Path) -> ModelInfo:
    """Log the model folder as the IntentDetectorModel pyfunc, with its catalog, card, metrics and gate."""
    import mlflow
    import pandas as pd

    from intentops import registry_pyfunc

    hf_dir = staging / registry_pyfunc.HF_MODEL_ARTIFACT
    shutil.copytree(candidate.model_dir, hf_dir, ignore=shutil.ignore_patterns(*NOT_MODEL_FILES))
    artifacts = {
        registry_pyfunc.HF_MODEL_ARTIFACT: str(hf_dir),
        "catalog": str(hf_dir / CATALOG_FILE),
        "model_card": str(hf_dir / MODEL_CARD),
    }
    if candidate.metrics_path is not None:
        artifacts["metrics"] = str(candidate.metrics_path)
    if candidate.gate_path is not None:
        artifacts["gate"] = str(candidate.gate_path)
    # The package travels with the model (code_paths) so the pyfunc loads where intentops is not installed.
    package_dir = Path(registry_pyfunc.__file__).resolve().parent
    code_dir = staging / "code" / package_dir.name
    shutil.copytree(package_dir, code_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN,
        python_model=registry_pyfunc.__file__,
        artifacts=artifacts,
        code_paths=[str(code_dir)],
        model_config=_pyfunc_model_config(cfg),
        signature=registry_pyfunc.signature(),
        input_example=pd.DataFrame({registry_pyfunc.TEXT_COLUMN: candidate.examples}),
        pip_requirements=_requirements(),
        metadata={
            "catalog_hash": candidate.catalog_hash,
            "dataset_hash": candidate.dataset_hash,
            "base_model": candidate.card.get("base_model", ""),
            "model_stage": candidate.card.get("stage", ""),
        },
    )


def _create_version(candidate: _Candidate, cfg: RunConfig, pipeline_run_id: str, tags: dict[str, str]) -> str:
    """Log the pyfunc inside the pipeline's `register` stage run and register it; returns the new version."""
    import mlflow

    name = cfg.registry.model_name
    params = {
        "model_dir": str(candidate.model_dir),
        "model_name": name,
        "gate_passed": tags["gate_passed"],
        "catalog_hash": candidate.catalog_hash,
        "dataset_hash": candidate.dataset_hash,
    }
    with stage_run("register", cfg, pipeline_run_id, params=params), tempfile.TemporaryDirectory() as staging:
        log.info("registry: logging %s as an MLflow pyfunc", candidate.model_dir)
        info = _log_pyfunc(candidate, cfg, Path(staging))
        from intentops.evaluation.report import scalar_metrics

        scalars = scalar_metrics(candidate.metrics)
        if scalars:
            mlflow.log_metrics(scalars, model_id=info.model_id)
        if candidate.eval_dir is not None:
            mlflow.log_artifacts(str(candidate.eval_dir), artifact_path="evaluation")
        if candidate.gate_path is not None:
            mlflow.log_artifact(str(candidate.gate_path), artifact_path="gate")
        mv = mlflow.register_model(info.model_uri, name, tags=tags)
    log.info("registry: registered %s version %s from %s", name, mv.version, info.model_uri)
    client = _client(cfg)
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=MODEL_DESCRIPTION)
    return str(mv.version)


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
    gate.json says passed. Re-running with the same `pipeline_run_id` returns (or finishes) the same version.

    `dataset_manifest` is the dataset folder or its manifest.json (source of `dataset_hash`; else the model card's).
    """
    if not pipeline_run_id:
        raise RegistryError("register_model needs a pipeline_run_id (it is what makes registration idempotent)")
    candidate = _read_candidate(
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
        version = str(existing[0].version)
        if existing[0].tags.get(REGISTRATION_TAG) == REGISTRATION_COMPLETE:
            log.info("registry: pipeline run %s already registered %s version %s", pipeline_run_id, name, version)
            return _model_version(client, name, version)
        log.info("registry: finishing the interrupted registration of %s version %s", name, version)
    else:
        version = _create_version(candidate, cfg, pipeline_run_id, _version_tags(candidate, pipeline_run_id))

    client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registry: %s@%s -> version %s", name, CHALLENGER, version)
    if candidate.gate_passed:
        _make_champion(client, name, version, reason=f"gate passed (mode {candidate.gate_mode})")
    else:
        log.info(
            "registry: %s version %s stays a challenger (%s)",
            name,
            version,
            "gate failed" if candidate.gate is not None else "no gate decision",
        )
    client.set_model_version_tag(name, version, REGISTRATION_TAG, REGISTRATION_COMPLETE)
    return _model_version(client, name, version)
