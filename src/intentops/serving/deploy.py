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

The `local` target runs `mlflow models serve` for the version as a managed background process (pid file in the
IntentOps cache), waits for /ping, smoke-tests it through /invocations and records the endpoint; `stop_local()`
(`intentops serve stop`) stops it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from intentops.artifacts import CATALOG_FILE, MODEL_CARD
from intentops.config import RunConfig
from intentops.io import read_json, write_json
from intentops.serving import manifests as mf
from intentops.serving.client import ClientError, IntentClient, openai_base_url

if TYPE_CHECKING:
    from intentops.catalog import Catalog
    from intentops.prompting import PromptBuilder

log = logging.getLogger(__name__)

Target = Literal["kserve", "k8s", "local"]
TARGETS: tuple[str, ...] = ("kserve", "k8s", "local")
FIELD_MANAGER = "intentops"
DEFAULT_SMOKE_REQUESTS = 24
DEFAULT_POLL_S = 2.0
STOP_TIMEOUT_S = 15.0
LOCAL_STATE_FILE = "local.json"
ARTIFACTS_DESTINATION_ENV = "MLFLOW_ARTIFACTS_DESTINATION"
# What the smoke test needs from the model folder to rebuild the training prompt (never the weights).
PROMPT_FILES = (MODEL_CARD, CATALOG_FILE)
FEWSHOT_FILE = "fewshot_examples.jsonl"
# Storage URI schemes KServe's storage initializer (and the k8s init container, for s3) can fetch.
KSERVE_SCHEMES = ("s3://", "gs://", "https://", "http://", "pvc://", "hf://", "oci://")


class DeployError(RuntimeError):
    """A deployment that did not end with the new version serving; says what was rolled back."""

    def __init__(self, message: str, rolled_back: bool = False) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


# ---- results ---------------------------------------------------------------------------------------------------------


@dataclass
class SmokeReport:
    """Outcome of the smoke probes: errors are failed requests, invalid are answers outside the catalog grammar."""

    requests: int = 0
    errors: int = 0
    invalid: int = 0
    correct: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)

    @property
    def valid(self) -> int:
        return self.requests - self.errors - self.invalid

    @property
    def valid_share(self) -> float:
        return self.valid / self.requests if self.requests else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0

    @property
    def accuracy(self) -> float:
        """Share of probes answered with the intent whose catalog example they are (informational)."""
        return self.correct / self.requests if self.requests else 0.0

    def passed(self, min_valid: float) -> bool:
        return self.requests > 0 and self.valid_share >= min_valid

    def summary(self) -> str:
        return (
            f"{self.valid}/{self.requests} valid ({self.valid_share:.0%}), {self.errors} errors "
            f"({self.error_rate:.0%}), intent accuracy on catalog examples {self.accuracy:.0%}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "valid": self.valid,
            "valid_share": self.valid_share,
            "error_rate": self.error_rate,
            "accuracy": self.accuracy,
        }


@dataclass
class DeployResult:
    """What a successful deploy left serving."""

    target: str
    model: mf.ModelRef
    endpoint: str
    smoke: SmokeReport
    previous_version: str | None = None
    canary_percent: int | None = None
    manifests: list[dict[str, Any]] = field(default_factory=list)
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "model": asdict(self.model),
            "endpoint": self.endpoint,
            "previous_version": self.previous_version,
            "canary_percent": self.canary_percent,
            "smoke": self.smoke.to_dict(),
            "pid": self.pid,
        }


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


def load_prompt_builder(cfg: RunConfig, artifact_uri: str) -> PromptBuilder:
    """The PromptBuilder a registered model was trained with, from its card and catalog (weights stay remote)."""
    from mlflow.artifacts import download_artifacts

    from intentops.prompting import PromptBuilder
    from intentops.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(cfg)
    with tempfile.TemporaryDirectory(prefix="intentops-prompt-") as scratch:
        for name in PROMPT_FILES:
            download_artifacts(artifact_uri=f"{artifact_uri}/{name}", dst_path=scratch, tracking_uri=tracking_uri)
        card = read_json(Path(scratch) / PROMPT_FILES[0])
        if (card.get("prompt") or {}).get("few_shot", "none") != "none":
            download_artifacts(
                artifact_uri=f"{artifact_uri}/{FEWSHOT_FILE}", dst_path=scratch, tracking_uri=tracking_uri
            )
        return PromptBuilder.from_model_dir(scratch)


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
    storage_uri = (
        registry.model_storage_uri(cfg, registered.version, artifacts_destination=destination)
        if destination
        else artifact_uri
    )
    builder = load_prompt_builder(cfg, artifact_uri)
    log.info("deploy: %s version %s, weights at %s", registered.name, registered.version, storage_uri)
    return mf.ModelRef(name=registered.name, version=registered.version, storage_uri=storage_uri), builder


def check_cluster_storage(model: mf.ModelRef) -> None:
    """KServe and the init container fetch from object storage, not from MLflow's proxy or this disk."""
    if not model.storage_uri.startswith(KSERVE_SCHEMES):
        raise DeployError(
            f"{model.uri} is stored at {model.storage_uri!r}, which a cluster cannot fetch; serve the MLflow "
            f"artifact store from S3 and pass its location (--artifacts-destination or ${ARTIFACTS_DESTINATION_ENV})"
        )


# ---- smoke test ------------------------------------------------------------------------------------------------------


def smoke_probes(catalog: Catalog, limit: int = DEFAULT_SMOKE_REQUESTS) -> list[tuple[str, str]]:
    """(utterance, intent) pairs from the catalog's examples, round-robin over intents so many intents are hit."""
    queues = [
        [(text, intent.name) for text in intent.examples] or [(intent.description, intent.name)]
        for intent in catalog.intents
    ]
    probes: list[tuple[str, str]] = []
    depth = 0
    while len(probes) < limit and any(depth < len(queue) for queue in queues):
        probes.extend(queue[depth] for queue in queues if depth < len(queue))
        depth += 1
    return probes[:limit]


def run_smoke(client: IntentClient, probes: list[tuple[str, str]]) -> SmokeReport:
    """Ask every probe once; a failed request counts as an error, a malformed or off-catalog answer as invalid."""
    report = SmokeReport()
    for text, expected in probes:
        report.requests += 1
        try:
            answer = client.predict(text)
        except ClientError as exc:
            report.errors += 1
            report.failures.append({"text": text, "error": str(exc)[:300]})
            continue
        report.latency_ms.append(answer["latency_ms"])
        if not answer["valid"]:
            report.invalid += 1
            report.failures.append({"text": text, "raw": answer["raw"][:300]})
        elif answer["intent"] == expected:
            report.correct += 1
    return report


def smoke_test(
    cfg: RunConfig, client: IntentClient, catalog: Catalog, requests: int = DEFAULT_SMOKE_REQUESTS
) -> SmokeReport:
    probes = smoke_probes(catalog, requests)
    log.info("smoke test: %d probes against %s", len(probes), client.endpoint)
    report = run_smoke(client, probes)
    log.info("smoke test: %s", report.summary())
    return report


def _smoke_failure(report: SmokeReport, cfg: RunConfig, url: str) -> str:
    detail = "; ".join(json.dumps(f, ensure_ascii=False) for f in report.failures[:3])
    unreachable = report.errors == report.requests and any(
        marker in detail for marker in ("Connection", "resolve", "Name or service", "nodename")
    )
    hint = (
        " (the endpoint was unreachable from here: run deploy inside the cluster, as the pipeline's deploy step does, "
        "or port-forward the service and pass --smoke-endpoint)"
        if unreachable
        else ""
    )
    return (
        f"smoke test against {url} failed: {report.summary()}, below serving.smoke_min_valid="
        f"{cfg.serving.smoke_min_valid:.0%}{hint}; first failures: {detail}"
    )


# ---- Kubernetes access -----------------------------------------------------------------------------------------------


def kube_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient from the kubeconfig (explicit, $KUBECONFIG or ~/.kube/config), else the pod's service account."""
    from kubernetes import client, config

    default = Path(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]).expanduser()
    try:
        if kubeconfig or context or default.exists():
            return config.new_client_from_config(config_file=kubeconfig, context=context)
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException as exc:
        raise DeployError(f"no Kubernetes access: {exc} (pass --kubeconfig, or run inside the cluster)") from None


class Cluster:
    """Server-side apply, get, list, delete and wait through the DynamicClient (any kind, CRDs included)."""

    def __init__(
        self, api_client: Any, namespace: str, poll_s: float = DEFAULT_POLL_S, discovery_cache: str | None = None
    ) -> None:
        from kubernetes.dynamic import DynamicClient

        self.namespace = namespace
        self.poll_s = poll_s
        self._dynamic = DynamicClient(api_client, cache_file=discovery_cache)

    def _resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self._dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise DeployError(
                f"the cluster does not serve {api_version} {kind}"
                + (" (is KServe installed? use --target k8s otherwise)" if "kserve" in api_version else "")
            ) from None

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        what = f"{obj['kind']}/{obj['metadata']['name']}"
        resource = self._resource(obj["apiVersion"], obj["kind"])
        try:
            applied = self._dynamic.server_side_apply(
                resource,
                body=obj,
                namespace=self.namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
        except (ApiException, HTTPError) as exc:
            raise DeployError(f"applying {what} in {self.namespace} failed: {_api_reason(exc)}") from None
        log.info("applied %s (namespace %s)", what, self.namespace)
        return applied.to_dict()

    def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            return self._resource(api_version, kind).get(name=name, namespace=self.namespace).to_dict()
        except NotFoundError:
            return None

    def list(self, api_version: str, kind: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        found = self._resource(api_version, kind).get(namespace=self.namespace, label_selector=selector)
        return [item.to_dict() for item in found.items]

    def delete(self, api_version: str, kind: str, name: str) -> bool:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            self._resource(api_version, kind).delete(name=name, namespace=self.namespace)
        except NotFoundError:
            return False
        log.info("deleted %s/%s (namespace %s)", kind, name, self.namespace)
        return True

    def wait(
        self,
        api_version: str,
        kind: str,
        name: str,
        ready: Callable[[dict[str, Any]], tuple[bool, str]],
        timeout_s: float,
    ) -> dict[str, Any]:
        """Poll until `ready(obj)` says so; DeployError naming the object and its last state on timeout."""
        deadline = time.monotonic() + timeout_s
        last_report = 0.0
        state = "not found"
        while True:
            obj = self.get(api_version, kind, name)
            if obj is not None:
                done, state = ready(obj)
                if done:
                    return obj
            now = time.monotonic()
            if now >= deadline:
                raise DeployError(f"{kind}/{name} in {self.namespace} not ready after {timeout_s:.0f}s: {state}")
            if now - last_report >= 30:
                log.info("waiting for %s/%s: %s", kind, name, state)
                last_report = now
            time.sleep(min(self.poll_s, max(0.0, deadline - now)))


def _api_reason(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message", body))
        except (ValueError, AttributeError):
            return str(body)[:500]
    return str(exc)


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def _observed(obj: dict[str, Any]) -> tuple[bool, str]:
    generation = obj["metadata"].get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return False, f"controller has not observed generation {generation} yet (observed {observed})"
    return True, ""


def inference_service_ready(obj: dict[str, Any]) -> tuple[bool, str]:
    """Ready=True for the current generation, and the newest predictor revision is the newest ready one."""
    seen, state = _observed(obj)
    if not seen:
        return False, state
    ready = _conditions(obj).get("Ready")
    if ready is None or ready.get("status") != "True":
        detail = f"{ready.get('reason', '')}: {ready.get('message', '')}" if ready else "no Ready condition"
        return False, f"Ready={ready.get('status') if ready else None} ({detail})"
    predictor = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
    created, latest_ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
    if created and created != latest_ready:
        return False, f"revision {created} is not ready yet (latest ready: {latest_ready})"
    return True, "ready"


def deployment_ready(obj: dict[str, Any]) -> tuple[bool, str]:
    """`kubectl rollout status`: every replica updated and available; a missed progress deadline fails at once."""
    seen, state = _observed(obj)
    if not seen:
        return False, state
    progressing = _conditions(obj).get("Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        raise DeployError(f"Deployment/{obj['metadata']['name']}: {progressing.get('message', 'progress deadline')}")
    wanted = obj["spec"].get("replicas", 1)
    status = obj.get("status") or {}
    updated, available = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
    if updated < wanted or available < wanted:
        return False, f"{available}/{wanted} replicas available, {updated} updated"
    return True, "ready"


# ---- KServe ------------------------------------------------------------------------------------------------------------


def _applied_form(obj: dict[str, Any]) -> dict[str, Any]:
    """The part of a live object IntentOps applies (no status, no server-set metadata)."""
    meta = obj["metadata"]
    keep = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)}
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": keep, "spec": obj["spec"]}


def _isvc_urls(obj: dict[str, Any]) -> tuple[str, str | None]:
    """(main URL, URL of the latest revision when tag routing exposes one)."""
    status = obj.get("status") or {}
    main = status.get("url") or (status.get("address") or {}).get("url") or ""
    traffic = (((status.get("components") or {}).get("predictor") or {}).get("traffic")) or []
    latest = next((t.get("url") for t in traffic if t.get("tag") == "latest" and t.get("url")), None)
    return main, latest


def _version_label(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    return (obj["metadata"].get("labels") or {}).get(mf.LABEL_MODEL_VERSION)


def _make_client(cfg: RunConfig, url: str, builder: PromptBuilder, timeout_s: float) -> IntentClient:
    return IntentClient(url, "openai", model=cfg.serving.service_name, builder=builder, timeout_s=timeout_s)


def rollout_kserve(
    cfg: RunConfig,
    model: mf.ModelRef,
    builder: PromptBuilder,
    cluster: Cluster,
    canary_percent: int,
    *,
    smoke_endpoint: str | None = None,
    smoke_requests: int = DEFAULT_SMOKE_REQUESTS,
    request_timeout_s: float = 60.0,
) -> DeployResult:
    """Apply runtime + InferenceService, wait, smoke-test the new revision, then promote or roll back."""
    name = cfg.serving.service_name
    account, runtime, _ = mf.validate_all(mf.render_kserve(cfg, model))
    cluster.apply(account)
    cluster.apply(runtime)
    previous = cluster.get(mf.ISVC_API_VERSION, "InferenceService", name)
    previous_version = _version_label(previous)
    same = previous_version == model.version
    canary = previous is not None and not same and 0 < canary_percent < 100
    service = mf.render_inference_service(cfg, model, canary_percent if canary else None)
    mf.validate_manifest(service)
    log.info(
        "kserve: %s version %s%s",
        name,
        model.version,
        f" as a {canary_percent}% canary beside version {previous_version}" if canary else " at 100%",
    )
    cluster.apply(service)

    def undo(reason: str) -> DeployError:
        if same:
            return DeployError(f"{reason}; version {model.version} was already serving, nothing to roll back")
        if previous is None:
            cluster.delete(mf.ISVC_API_VERSION, "InferenceService", name)
            return DeployError(f"{reason}; deleted InferenceService/{name} (no previous version)", rolled_back=True)
        _restore_inference_service(cfg, cluster, previous, canary)
        return DeployError(f"{reason}; rolled back to version {previous_version}", rolled_back=True)

    try:
        live = cluster.wait(
            mf.ISVC_API_VERSION, "InferenceService", name, inference_service_ready, cfg.serving.ready_timeout_s
        )
    except DeployError as exc:
        raise undo(str(exc)) from None
    main_url, latest_url = _isvc_urls(live)
    url = smoke_endpoint or (latest_url if canary and latest_url else main_url)
    if not url:
        raise undo(f"InferenceService/{name} is ready but reports no URL")
    with _make_client(cfg, url, builder, request_timeout_s) as client:
        report = smoke_test(cfg, client, builder.catalog, smoke_requests)
    if not report.passed(cfg.serving.smoke_min_valid):
        raise undo(_smoke_failure(report, cfg, url))
    if canary:
        log.info("kserve: canary passed; promoting version %s to 100%%", model.version)
        promoted = mf.render_inference_service(cfg, model, None)
        cluster.apply(promoted)
        live = cluster.wait(
            mf.ISVC_API_VERSION, "InferenceService", name, inference_service_ready, cfg.serving.ready_timeout_s
        )
        main_url, _ = _isvc_urls(live)
    return DeployResult(
        target="kserve",
        model=model,
        endpoint=openai_base_url(main_url),
        smoke=report,
        previous_version=previous_version if not same else None,
        canary_percent=canary_percent if canary else None,
        manifests=[account, runtime, service],
    )


def _restore_inference_service(cfg: RunConfig, cluster: Cluster, previous: dict[str, Any], canary: bool) -> None:
    """Put the previous version back.

    After a canary, `canaryTrafficPercent: 0` first pins all traffic to the last rolled-out revision (the previous
    version, still running); the previous spec is then re-applied so the object says what it serves. If that does
    not get ready in time, traffic stays pinned to the old revision and the error says so. Without a canary the new
    revision had already taken the traffic, so the previous spec is re-applied straight away.
    """
    name = previous["metadata"]["name"]
    if canary:
        pinned = _applied_form(previous)
        pinned["spec"] = json.loads(json.dumps(pinned["spec"]))
        pinned["spec"]["predictor"]["canaryTrafficPercent"] = 0
        cluster.apply(pinned)
        try:
            cluster.wait(
                mf.ISVC_API_VERSION, "InferenceService", name, inference_service_ready, cfg.serving.ready_timeout_s
            )
        except DeployError as exc:
            raise DeployError(
                f"rollback of InferenceService/{name}: traffic is pinned to the previous revision "
                f"(canaryTrafficPercent=0) but restoring its spec did not get ready: {exc}",
                rolled_back=True,
            ) from None
    cluster.apply(_applied_form(previous))
    log.info("kserve: InferenceService/%s restored to version %s", name, _version_label(previous))


# ---- plain Kubernetes ------------------------------------------------------------------------------------------------


def canary_replicas(stable_replicas: int, percent: int) -> int:
    """Replicas for the canary so its share of ready pods (the Service's traffic share) is closest to `percent`.

    At least one: with one stable replica a 10% canary really gets 50% of requests; the result is logged.
    """
    if not 0 < percent < 100:
        raise ValueError(f"canary percent must be within 1..99, got {percent}")
    return max(1, round(stable_replicas * percent / (100 - percent)))


def rollout_k8s(
    cfg: RunConfig,
    model: mf.ModelRef,
    builder: PromptBuilder,
    cluster: Cluster,
    canary_percent: int,
    *,
    replicas: int | None = None,
    smoke_endpoint: str | None = None,
    smoke_requests: int = DEFAULT_SMOKE_REQUESTS,
    request_timeout_s: float = 60.0,
) -> DeployResult:
    """Deployment per version behind one Service; canary by replica weight, then scale up and retire the old one."""
    app = {mf.LABEL_APP: cfg.serving.service_name, mf.LABEL_MANAGED_BY: mf.MANAGER}
    new_name = mf.deployment_name(cfg, model)
    existing = cluster.list("apps/v1", "Deployment", app)
    stable = [d for d in existing if d["metadata"]["name"] != new_name]
    same = next((d for d in existing if d["metadata"]["name"] == new_name), None)
    stable_replicas = sum(d["spec"].get("replicas", 1) for d in stable)
    target_replicas = replicas or stable_replicas or (same["spec"].get("replicas", 1) if same else 0) or 1
    canary = bool(stable) and 0 < canary_percent < 100
    first_replicas = canary_replicas(stable_replicas, canary_percent) if canary else target_replicas
    previous_version = _version_label(stable[0]) if stable else None
    if canary:
        share = first_replicas / (first_replicas + stable_replicas)
        log.info(
            "k8s: canary %s with %d replica(s) beside %d stable: %.0f%% of traffic (asked %d%%)",
            new_name,
            first_replicas,
            stable_replicas,
            share * 100,
            canary_percent,
        )
    objects = mf.validate_all(mf.render_k8s(cfg, model, first_replicas))
    for obj in objects:
        cluster.apply(obj)

    def undo(reason: str) -> DeployError:
        if same is not None and not stable:
            return DeployError(f"{reason}; {new_name} was already serving, nothing to roll back")
        cluster.delete("apps/v1", "Deployment", new_name)
        cluster.delete("v1", "Service", mf.version_service_name(cfg, model))
        if not stable:
            return DeployError(f"{reason}; removed {new_name} (no previous version)", rolled_back=True)
        return DeployError(f"{reason}; removed {new_name}, version {previous_version} keeps serving", rolled_back=True)

    try:
        cluster.wait("apps/v1", "Deployment", new_name, deployment_ready, cfg.serving.ready_timeout_s)
    except DeployError as exc:
        raise undo(str(exc)) from None
    url = smoke_endpoint or mf.service_url(cfg, mf.version_service_name(cfg, model))
    with _make_client(cfg, url, builder, request_timeout_s) as client:
        report = smoke_test(cfg, client, builder.catalog, smoke_requests)
    if not report.passed(cfg.serving.smoke_min_valid):
        raise undo(_smoke_failure(report, cfg, url))
    if first_replicas != target_replicas:
        log.info("k8s: promoting %s to %d replica(s)", new_name, target_replicas)
        cluster.apply(mf.render_deployment(cfg, model, target_replicas))
        cluster.wait("apps/v1", "Deployment", new_name, deployment_ready, cfg.serving.ready_timeout_s)
    for old in stable:
        old_name = old["metadata"]["name"]
        cluster.delete("apps/v1", "Deployment", old_name)
        cluster.delete("v1", "Service", old_name)
    return DeployResult(
        target="k8s",
        model=model,
        endpoint=mf.service_url(cfg),
        smoke=report,
        previous_version=previous_version,
        canary_percent=canary_percent if canary else None,
        manifests=objects,
    )


# ---- local (MLflow model server) ---------------------------------------------------------------------------------------


def local_state_path() -> Path:
    from intentops.storage import default_cache_dir

    return default_cache_dir() / "serve" / LOCAL_STATE_FILE


def read_local_state() -> dict[str, Any] | None:
    """The running local server's record (pid, endpoint, model), or None when none is recorded."""
    path = local_state_path()
    if not path.exists():
        return None
    return read_json(path)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(endpoint: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{endpoint}/ping", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _terminate(pid: int) -> None:
    """Stop a server started by `start_local_server` (its own process group), escalating to SIGKILL."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by another command): poll instead
            finished = 0 if process_alive(pid) else pid
        if finished:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _is_model_server(pid: int) -> bool:
    """Whether `pid` still runs `mlflow models serve` (a recycled pid must never be signalled)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return process_alive(pid)  # no procfs (macOS): trust the pid file
    argv = [arg.decode(errors="replace") for arg in cmdline.read_bytes().split(b"\0") if arg]
    return any("mlflow" in arg for arg in argv) and "serve" in argv


def stop_local() -> dict[str, Any] | None:
    """Stop the recorded local server and forget it; returns its record, or None when nothing was running."""
    state = read_local_state()
    if state is None:
        return None
    pid = int(state["pid"])
    if process_alive(pid) and _is_model_server(pid):
        log.info("stopping local server pid %s (%s)", pid, state.get("endpoint"))
        _terminate(pid)
    local_state_path().unlink(missing_ok=True)
    return state


def start_local_server(cfg: RunConfig, model: mf.ModelRef, port: int | None = None) -> dict[str, Any]:
    """Start `mlflow models serve` for the version in the background and wait for /ping; returns its record."""
    from intentops.tracking import resolve_tracking_uri

    port = port or cfg.serving.local_port
    endpoint = f"http://127.0.0.1:{port}"
    if _healthy(endpoint):
        raise DeployError(f"something already serves on {endpoint}; stop it (intentops serve stop) or pick a port")
    state_dir = local_state_path().parent
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / f"local-{port}.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model.uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    # MLflow's server execs `uvicorn` by name: put this interpreter's scripts first, so an environment used
    # without activation (make, CI, a KFP step) serves with its own uvicorn.
    scripts = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": resolve_tracking_uri(cfg),
        "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
    }
    log.info("local: %s", " ".join(command))
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    state = {
        "pid": process.pid,
        "endpoint": endpoint,
        "port": port,
        "kind": "mlflow",
        "model_name": model.name,
        "version": model.version,
        "model_uri": model.uri,
        "log": str(log_path),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    deadline = time.monotonic() + cfg.serving.ready_timeout_s
    while not _healthy(endpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            reason = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
            if process.poll() is None:
                _terminate(process.pid)
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise DeployError(f"local model server for {model.uri} {reason} before /ping answered; log tail:\n{tail}")
        time.sleep(0.5)
    write_json(local_state_path(), state)
    log.info("local: %s serving at %s (pid %s)", model.uri, endpoint, process.pid)
    return state


def rollout_local(
    cfg: RunConfig,
    model: mf.ModelRef,
    builder: PromptBuilder,
    *,
    port: int | None = None,
    smoke_requests: int = DEFAULT_SMOKE_REQUESTS,
    request_timeout_s: float = 120.0,
) -> DeployResult:
    """Replace the local server with one for `model`; if its smoke test fails, bring the previous version back."""
    previous = stop_local()
    state = start_local_server(cfg, model, port)
    with IntentClient(state["endpoint"], "mlflow", builder=builder, timeout_s=request_timeout_s) as client:
        report = smoke_test(cfg, client, builder.catalog, smoke_requests)
    if not report.passed(cfg.serving.smoke_min_valid):
        reason = _smoke_failure(report, cfg, state["endpoint"])
        stop_local()
        if previous is not None and previous.get("model_uri"):
            old = mf.ModelRef(previous["model_name"], str(previous["version"]), previous["model_uri"])
            start_local_server(cfg, old, int(previous["port"]))
            raise DeployError(f"{reason}; restarted version {old.version} locally", rolled_back=True)
        raise DeployError(f"{reason}; stopped the local server", rolled_back=True)
    return DeployResult(
        target="local",
        model=model,
        endpoint=state["endpoint"],
        smoke=report,
        previous_version=str(previous["version"]) if previous else None,
        pid=int(state["pid"]),
    )


# ---- entry point -------------------------------------------------------------------------------------------------------


def render(cfg: RunConfig, model: mf.ModelRef, target: str, canary_percent: int | None = None) -> list[dict[str, Any]]:
    """The validated manifests a cluster deploy would apply first (for --dry-run and GitOps)."""
    if target == "kserve":
        return mf.validate_all(mf.render_kserve(cfg, model, canary_percent))
    if target == "k8s":
        return mf.validate_all(mf.render_k8s(cfg, model))
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
        result = rollout_local(cfg, model, builder, port=port, smoke_requests=smoke_requests)
    else:
        check_cluster_storage(model)
        cluster = Cluster(api_client or kube_api_client(kubeconfig, context), cfg.serving.namespace, poll_s)
        rollout = rollout_kserve if target == "kserve" else rollout_k8s
        result = rollout(
            cfg, model, builder, cluster, percent, smoke_endpoint=smoke_endpoint, smoke_requests=smoke_requests
        )
    if record:
        from intentops import registry

        registry.set_deployment(cfg, model.version, result.endpoint, target)
    log.info("deployed %s to %s at %s (%s)", model.uri, target, result.endpoint, result.smoke.summary())
    return result
