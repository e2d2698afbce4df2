"""Roll a model version out on plain Kubernetes: one Deployment per version behind one Service, a canary weighted
by replicas, smoke-tested through the version's own Service, then scaled up (old version retired) or removed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from intentops.config import RunConfig
from intentops.serving import k8s_manifests as k8m
from intentops.serving import manifest_schema as schema
from intentops.serving import manifests as mf
from intentops.serving.kube import Cluster, deployment_ready, version_label
from intentops.serving.outcome import DeployError, DeployResult
from intentops.serving.smoke import DEFAULT_SMOKE_REQUESTS, openai_client, smoke_failure, smoke_test

if TYPE_CHECKING:
    from intentops.prompting import PromptBuilder

log = logging.getLogger(__name__)


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
    api_key: str | None = None,
) -> DeployResult:
    """Deployment per version behind one Service; canary by replica weight, then scale up and retire the old one."""
    app = {mf.LABEL_APP: cfg.serving.service_name, mf.LABEL_MANAGED_BY: mf.MANAGER}
    new_name = k8m.deployment_name(cfg, model)
    existing = cluster.list("apps/v1", "Deployment", app)
    stable = [d for d in existing if d["metadata"]["name"] != new_name]
    same = next((d for d in existing if d["metadata"]["name"] == new_name), None)
    stable_replicas = sum(d["spec"].get("replicas", 1) for d in stable)
    target_replicas = replicas or stable_replicas or (same["spec"].get("replicas", 1) if same else 0) or 1
    canary = bool(stable) and 0 < canary_percent < 100
    first_replicas = canary_replicas(stable_replicas, canary_percent) if canary else target_replicas
    previous_version = version_label(stable[0]) if stable else None
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
    objects = schema.validate_all(k8m.render_k8s(cfg, model, first_replicas))
    for obj in objects:
        cluster.apply(obj)

    def undo(reason: str) -> DeployError:
        if same is not None and not stable:
            return DeployError(f"{reason}; {new_name} was already serving, nothing to roll back")
        cluster.delete("apps/v1", "Deployment", new_name)
        cluster.delete("v1", "Service", k8m.version_service_name(cfg, model))
        if not stable:
            return DeployError(f"{reason}; removed {new_name} (no previous version)", rolled_back=True)
        return DeployError(f"{reason}; removed {new_name}, version {previous_version} keeps serving", rolled_back=True)

    try:
        cluster.wait("apps/v1", "Deployment", new_name, deployment_ready, cfg.serving.ready_timeout_s)
    except DeployError as exc:
        raise undo(str(exc)) from None
    url = smoke_endpoint or k8m.service_url(cfg, k8m.version_service_name(cfg, model))
    with openai_client(cfg, url, builder, request_timeout_s, api_key) as client:
        report = smoke_test(client, builder.catalog, smoke_requests)
    if not report.passed(cfg.serving.smoke_min_valid):
        raise undo(smoke_failure(report, cfg, url))
    if first_replicas != target_replicas:
        log.info("k8s: promoting %s to %d replica(s)", new_name, target_replicas)
        cluster.apply(k8m.render_deployment(cfg, model, target_replicas))
        cluster.wait("apps/v1", "Deployment", new_name, deployment_ready, cfg.serving.ready_timeout_s)
    for old in stable:
        old_name = old["metadata"]["name"]
        cluster.delete("apps/v1", "Deployment", old_name)
        cluster.delete("v1", "Service", old_name)
    return DeployResult(
        target="k8s",
        model=model,
        endpoint=k8m.service_url(cfg),
        smoke=report,
        previous_version=previous_version,
        canary_percent=canary_percent if canary else None,
        manifests=objects,
    )
