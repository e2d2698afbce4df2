"""Put a registered model version in front of users, and never leave them on a broken one.

`deploy(cfg, version=None, alias="champion", target=...)`:

1. resolves the version in the MLflow registry, and where its Hugging Face folder lives (the S3 location KServe or
   the init container fetch); the prompt it was trained with is rebuilt from its catalog.yaml and intentops.json;
2. renders the manifests (`intentops.serving.manifests`), validates them offline and applies them with
   server-side apply (field manager `intentops`);
3. waits for Ready with a timeout;
4. smoke-tests the new version through the OpenAI API with the training prompt and vLLM's structured outputs
   (catalog examples as probes): the share of valid answers must reach `serving.smoke_min_valid`, so transport
   errors and 5xx replies (the error rate) fail it too;
5. canary: when another version is serving, the new one first takes `canary_percent` of the traffic
   (KServe `canaryTrafficPercent`; on plain Kubernetes a second Deployment behind the same Service, weighted by
   replicas), and is promoted to 100% only after the smoke test passes; otherwise it is rolled back (KServe: traffic
   pinned back to the previous revision with `canaryTrafficPercent: 0`, then the previous spec restored; k8s: the
   canary Deployment deleted) and `DeployError` is raised;
6. records the endpoint on the MLflow model version (`registry.set_deployment`).

The `local` target runs MLflow's model server (behind utterance limits, `local_app`) for the version as a managed
background process (pid file in the IntentOps cache), waits for /ping, smoke-tests it through /invocations and
records the endpoint; `stop_local()` (`intentops serve stop`) stops it.

Modules: `smoke` (probes and report), `kube` (API access, readiness), `kserve_rollout`, `k8s_rollout`, `local`,
`manifests`/`kserve_manifests`/`k8s_manifests`/`manifest_schema` (objects); this one resolves the version and
dispatches.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.artifacts import CATALOG_FILE, FEWSHOT_FILE, MODEL_CARD
from intentops.config import RunConfig
from intentops.io import read_json
from intentops.serving import k8s_manifests as k8m
from intentops.serving import kserve_manifests as ksm
from intentops.serving import manifest_schema as schema
from intentops.serving import manifests as mf
from intentops.serving.k8s_rollout import rollout_k8s
from intentops.serving.kserve_rollout import rollout_kserve
from intentops.serving.kube import DEFAULT_POLL_S, Cluster, kube_api_client
from intentops.serving.local import keep_prompt_files, process_alive, read_local_state, rollout_local, stop_local
from intentops.serving.outcome import DeployError, DeployResult
from intentops.serving.smoke import DEFAULT_SMOKE_REQUESTS

if TYPE_CHECKING:
    from intentops.prompting import PromptBuilder

# The serving package's entry points: callers import these from here, whichever module implements them.
__all__ = [
    "DeployError",
    "DeployResult",
    "deploy",
    "process_alive",
    "read_local_state",
    "render",
    "resolve_model",
    "resolve_version",
    "stop_local",
]

log = logging.getLogger(__name__)

TARGETS: tuple[str, ...] = ("kserve", "k8s", "local")
ARTIFACTS_DESTINATION_ENV = "MLFLOW_ARTIFACTS_DESTINATION"
MLFLOW_ARTIFACTS_SCHEME = "mlflow-artifacts:"
# What the smoke test needs from the model folder to rebuild the training prompt (never the weights).
PROMPT_FILES = (MODEL_CARD, CATALOG_FILE)
# Storage URI schemes KServe's storage initializer (and the k8s init container, for s3) can fetch.
KSERVE_SCHEMES = ("s3://", "gs://", "https://", "http://", "pvc://", "hf://", "oci://")


# ---- registry and prompt -------------------------------------------------------------------------------------------


def resolve_version(cfg: RunConfig, version: str | int | None = None, alias: str = "champion") -> Any:
    """The registered version to deploy: `version` when given, else the one `@alias` points to."""
    from intentops import registry

    if version is not None:
        return registry.get_version(cfg, version)
    if alias == registry.CHAMPION:
        found = registry.champion_info(cfg)
        if found is None:
            raise DeployError(f"registered model {cfg.registry.model_name!r} has no @{alias} version to deploy")
        return found
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from intentops.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg)
    try:
        found = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
            cfg.registry.model_name, alias
        )
    except MlflowException as exc:
        raise DeployError(f"registered model {cfg.registry.model_name!r} has no @{alias} version: {exc}") from None
    return registry.get_version(cfg, found.version)


def fetch_prompt_files(cfg: RunConfig, artifact_uri: str, dest: str | Path) -> Path:
    """Download what rebuilds a registered model's prompt (card, catalog, few-shot examples) into `dest`."""
    from mlflow.artifacts import download_artifacts

    from intentops.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(cfg)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROMPT_FILES:
        download_artifacts(artifact_uri=f"{artifact_uri}/{name}", dst_path=str(dest), tracking_uri=tracking_uri)
    card = read_json(dest / PROMPT_FILES[0])
    if (card.get("prompt") or {}).get("few_shot", "none") != "none":
        download_artifacts(artifact_uri=f"{artifact_uri}/{FEWSHOT_FILE}", dst_path=str(dest), tracking_uri=tracking_uri)
    return dest


def load_prompt_builder(cfg: RunConfig, artifact_uri: str) -> PromptBuilder:
    """The PromptBuilder a registered model was trained with, from its card and catalog (weights stay remote)."""
    from intentops.prompting import PromptBuilder

    with tempfile.TemporaryDirectory(prefix="intentops-prompt-") as scratch:
        return PromptBuilder.from_model_dir(fetch_prompt_files(cfg, artifact_uri, scratch))


def resolve_model(
    cfg: RunConfig,
    version: str | int | None = None,
    alias: str = "champion",
    artifacts_destination: str | None = None,
) -> tuple[mf.ModelRef, PromptBuilder]:
    """The version to serve (name, version, storage URI the cluster can read) and its prompt builder."""
    from intentops import registry

    registered = resolve_version(cfg, version, alias)
    artifact_uri = registry.model_storage_uri(cfg, registered.version)
    destination = artifacts_destination or os.environ.get(ARTIFACTS_DESTINATION_ENV)
    storage_uri = proxied_to_store(artifact_uri, destination)
    builder = load_prompt_builder(cfg, artifact_uri)
    log.info("deploy: %s version %s, weights at %s", registered.name, registered.version, storage_uri)
    return mf.ModelRef(name=registered.name, version=registered.version, storage_uri=storage_uri), builder


def proxied_to_store(artifact_uri: str, destination: str | None) -> str:
    """Where an artifact behind MLflow's artifact proxy really is: `mlflow-artifacts:/<path>` (or
    `mlflow-artifacts://host:port/<path>`) lives at `<destination>/<path>`, the server's --artifacts-destination.

    Other URIs, or no destination, come back unchanged (`check_cluster_storage` then says what is missing).
    """
    from urllib.parse import urlsplit

    if not destination or not artifact_uri.startswith(MLFLOW_ARTIFACTS_SCHEME):
        return artifact_uri
    path = urlsplit(artifact_uri).path.lstrip("/")
    return f"{destination.rstrip('/')}/{path}"


def check_cluster_storage(model: mf.ModelRef) -> None:
    """KServe and the init container fetch from object storage, not from MLflow's proxy or this disk."""
    if model.storage_uri.startswith(MLFLOW_ARTIFACTS_SCHEME):
        raise DeployError(
            f"{model.uri} is stored at {model.storage_uri!r}, behind MLflow's artifact proxy, which a cluster cannot "
            f"fetch from: set ${ARTIFACTS_DESTINATION_ENV} (or pass --artifacts-destination) to the MLflow server's "
            "--artifacts-destination, e.g. s3://mlflow/artifacts; the pipeline's deploy step reads it from the "
            "MLflow secret's MLFLOW_ARTIFACTS_DESTINATION key"
        )
    if not model.storage_uri.startswith(KSERVE_SCHEMES):
        raise DeployError(
            f"{model.uri} is stored at {model.storage_uri!r}, which a cluster cannot fetch; serve the MLflow "
            f"artifact store from S3 and pass its location (--artifacts-destination or ${ARTIFACTS_DESTINATION_ENV})"
        )


# ---- entry point -------------------------------------------------------------------------------------------------------


def render(cfg: RunConfig, model: mf.ModelRef, target: str, canary_percent: int | None = None) -> list[dict[str, Any]]:
    """The validated manifests a cluster deploy would apply first (for --dry-run and GitOps)."""
    if target == "kserve":
        mode = None if cfg.serving.kserve_mode == "auto" else mf.normalized_mode(cfg.serving.kserve_mode)
        canary = canary_percent if mode == mf.KNATIVE else None
        return schema.validate_all(ksm.render_kserve(cfg, model, canary, mode=mode))
    if target == "k8s":
        return schema.validate_all(k8m.render_k8s(cfg, model))
    raise DeployError(f"target {target!r} has no manifests (kserve or k8s)")


def deploy(
    cfg: RunConfig,
    version: str | int | None = None,
    alias: str = "champion",
    target: str | None = None,
    canary_percent: int | None = None,
    *,
    api_client: Any = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    smoke_endpoint: str | None = None,
    smoke_requests: int = DEFAULT_SMOKE_REQUESTS,
    artifacts_destination: str | None = None,
    poll_s: float = DEFAULT_POLL_S,
    port: int | None = None,
    record: bool = True,
) -> DeployResult:
    """Deploy a registered version (default: `@champion`) to `target` (default `serving.target`); see the module doc.

    `canary_percent` defaults to `serving.canary_percent`; 0 or 100 replace the serving version without a canary.
    `api_client` overrides the kubeconfig (tests point it at a fake API server).
    """
    target = target or cfg.serving.target
    if target not in TARGETS:
        raise DeployError(f"unknown target {target!r} (expected one of {', '.join(TARGETS)})")
    percent = cfg.serving.canary_percent if canary_percent is None else canary_percent
    if not 0 <= percent <= 100:
        raise DeployError(f"canary percent {percent} is outside 0..100")
    model, builder = resolve_model(cfg, version, alias, artifacts_destination)
    if target == "local":
        from intentops import registry

        # Kept beside the server's record, so `intentops predict` checks its answers against this catalog.
        artifact_uri = registry.model_storage_uri(cfg, model.version)
        prompt_dir = keep_prompt_files(model, lambda folder: fetch_prompt_files(cfg, artifact_uri, folder))
        result = rollout_local(cfg, model, builder, port=port, smoke_requests=smoke_requests, prompt_dir=prompt_dir)
    else:
        check_cluster_storage(model)
        cluster = Cluster(api_client or kube_api_client(kubeconfig, context), cfg.serving.namespace, poll_s)
        # The smoke test authenticates like any client of a vLLM server started with an API key.
        api_key = (
            cluster.secret_value(cfg.serving.api_key_secret, mf.API_KEY_KEY) if cfg.serving.api_key_secret else None
        )
        rollout = rollout_kserve if target == "kserve" else rollout_k8s
        result = rollout(
            cfg,
            model,
            builder,
            cluster,
            percent,
            smoke_endpoint=smoke_endpoint,
            smoke_requests=smoke_requests,
            api_key=api_key,
        )
    if record:
        from intentops import registry

        registry.set_deployment(cfg, model.version, result.endpoint, target)
    log.info("deployed %s to %s at %s (%s)", model.uri, target, result.endpoint, result.smoke.summary())
    return result
