"""Roll a model version out on KServe: one InferenceService per service name, a canary revision beside the serving
one (`canaryTrafficPercent`), smoke-tested on its own URL, then promoted or rolled back."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from intentops.config import RunConfig
from intentops.serving import kserve_manifests as ksm
from intentops.serving import manifest_schema as schema
from intentops.serving import manifests as mf
from intentops.serving.client import openai_base_url
from intentops.serving.kube import Cluster, applied_form, inference_service_ready, version_label
from intentops.serving.outcome import DeployError, DeployResult
from intentops.serving.smoke import DEFAULT_SMOKE_REQUESTS, openai_client, smoke_failure, smoke_test

if TYPE_CHECKING:
    from intentops.prompting import PromptBuilder

log = logging.getLogger(__name__)


def cluster_local_url(url: str, namespace: str) -> str:
    """The in-cluster form of a Knative route URL: `http://<name>.<namespace>.<domain>` becomes
    `http://<name>.<namespace>.svc.cluster.local` (Knative serves every route, tags included, there too).

    URLs that already are in-cluster, or name an IP address, are returned unchanged.
    """
    import ipaddress
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return url
    except ValueError:
        pass
    if not host or "." not in host or host.endswith((".svc", ".svc.cluster.local")):
        return url
    name = host.split(".", 1)[0]
    return urlunsplit(("http", f"{name}.{namespace}.svc.cluster.local", parts.path, parts.query, ""))


def isvc_urls(obj: dict[str, Any], namespace: str) -> tuple[str, str | None]:
    """(in-cluster URL, in-cluster URL of the latest revision when tag routing exposes one).

    `status.address.url` is the cluster-internal address; `status.url` is the external host (an `example.com`
    name unless the cluster has a real domain), which a pod usually cannot resolve. The smoke test runs in the
    cluster (the pipeline's deploy step), so it uses the former.
    """
    status = obj.get("status") or {}
    main = (status.get("address") or {}).get("url") or cluster_local_url(status.get("url") or "", namespace)
    traffic = (((status.get("components") or {}).get("predictor") or {}).get("traffic")) or []
    latest = next((t.get("url") for t in traffic if t.get("tag") == "latest" and t.get("url")), None)
    return main, cluster_local_url(latest, namespace) if latest else None


def serving_mode(cfg: RunConfig, previous: dict[str, Any] | None) -> str | None:
    """KServe's deployment mode for this rollout: what the live InferenceService runs (KServe keeps the mode it
    was created with), else `serving.kserve_mode`; None (auto, nothing live) leaves it to the cluster's default."""
    wanted = None if cfg.serving.kserve_mode == "auto" else mf.normalized_mode(cfg.serving.kserve_mode)
    if previous is not None:
        live = mf.normalized_mode((previous.get("status") or {}).get("deploymentMode")) or mf.normalized_mode(
            (previous["metadata"].get("annotations") or {}).get(mf.KSERVE_DEPLOYMENT_MODE)
        )
        if live:
            if wanted and wanted != live:
                log.warning(
                    "kserve: serving.kserve_mode=%s but InferenceService/%s runs in %s mode; KServe cannot switch "
                    "a live InferenceService, keeping %s (delete it to change modes)",
                    wanted,
                    previous["metadata"]["name"],
                    live,
                    live,
                )
            return live
    return wanted


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
    api_key: str | None = None,
) -> DeployResult:
    """Apply runtime + InferenceService, wait, smoke-test the new revision, then promote or roll back.

    In Knative mode a new version first takes `canary_percent` of the traffic beside the serving one; in Standard
    mode (no traffic split) it replaces it, and a failed smoke test restores the previous spec.
    """
    name = cfg.serving.service_name
    previous = cluster.get(mf.ISVC_API_VERSION, "InferenceService", name)
    mode = serving_mode(cfg, previous)
    account, runtime, _ = schema.validate_all(ksm.render_kserve(cfg, model, mode=mode))
    cluster.apply(account)
    cluster.apply(runtime)
    previous_version = version_label(previous)
    same = previous_version == model.version
    canary = previous is not None and not same and 0 < canary_percent < 100 and mode == mf.KNATIVE
    if previous is not None and not same and 0 < canary_percent < 100 and not canary:
        log.info(
            "kserve: %s mode has no traffic split; version %s replaces version %s",
            mode,
            model.version,
            previous_version,
        )
    service = ksm.render_inference_service(cfg, model, canary_percent if canary else None, mode=mode)
    schema.validate_manifest(service)
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
    main_url, latest_url = isvc_urls(live, cluster.namespace)
    url = smoke_endpoint or (latest_url if canary and latest_url else main_url)
    if not url:
        raise undo(f"InferenceService/{name} is ready but reports no URL")
    with openai_client(cfg, url, builder, request_timeout_s, api_key) as client:
        report = smoke_test(client, builder.catalog, smoke_requests)
    if not report.passed(cfg.serving.smoke_min_valid):
        raise undo(smoke_failure(report, cfg, url))
    if canary:
        log.info("kserve: canary passed; promoting version %s to 100%%", model.version)
        promoted = ksm.render_inference_service(cfg, model, None, mode=mode)
        cluster.apply(promoted)
        live = cluster.wait(
            mf.ISVC_API_VERSION, "InferenceService", name, inference_service_ready, cfg.serving.ready_timeout_s
        )
        main_url, _ = isvc_urls(live, cluster.namespace)
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
        pinned = applied_form(previous)
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
    cluster.apply(applied_form(previous))
    log.info("kserve: InferenceService/%s restored to version %s", name, version_label(previous))
