"""Kubernetes access for rollouts: an API client, a `Cluster` that applies, lists, deletes and waits on any kind
(CRDs included) through the DynamicClient, and the readiness checks of InferenceServices and Deployments."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from intentops.serving import manifests as mf
from intentops.serving.outcome import DeployError

log = logging.getLogger(__name__)

FIELD_MANAGER = "intentops"
DEFAULT_POLL_S = 2.0


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
            raise DeployError(f"applying {what} in {self.namespace} failed: {api_reason(exc)}") from None
        log.info("applied %s (namespace %s)", what, self.namespace)
        return applied.to_dict()

    def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            return self._resource(api_version, kind).get(name=name, namespace=self.namespace).to_dict()
        except NotFoundError:
            return None

    def secret_value(self, name: str, key: str) -> str:
        """One key of a Secret in this namespace (the deployer may read only the Secrets its Role names)."""
        import base64

        secret = self.get("v1", "Secret", name)
        if secret is None:
            raise DeployError(f"Secret/{name} not found in {self.namespace}")
        data = secret.get("data") or {}
        if key not in data:
            raise DeployError(f"Secret/{name} in {self.namespace} has no key {key!r} (keys: {', '.join(sorted(data))})")
        return base64.b64decode(data[key]).decode("utf-8")

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


def api_reason(exc: Exception) -> str:
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


def applied_form(obj: dict[str, Any]) -> dict[str, Any]:
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


def version_label(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    return (obj["metadata"].get("labels") or {}).get(mf.LABEL_MODEL_VERSION)
