"""Roll a model version out on KServe: one InferenceService per service name, a canary revision beside the serving
one (`canaryTrafficPercent`), smoke-tested on its own URL, then promoted or rolled back."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from intentops.config import RunConfig
from intentops.serving import manifests as mf
from intentops.serving.client import openai_base_url
from intentops.serving.kube import Cluster, applied_form, inference_service_ready, version_label
from intentops.serving.outcome import DeployError, DeployResult
from intentops.serving.smoke import DEFAULT_SMOKE_REQUESTS, openai_client, smoke_failure, smoke_test

if TYPE_CHECKING:
    from intentops.prompting import PromptBuilder

log = logging.getLogger(__name__)


def _isvc_urls(obj: dict[str, Any]) -> tuple[str, str | None]:
    """(main URL, URL of the latest revision when tag routing exposes one)."""
    status = obj.get("status") or {}
    main = status.get("url") or (status.get("address") or {}).get("url") or ""
    traffic = (((status.get("components") or {}).get("predictor") or {}).get("traffic")) or []
    latest = next((t.get("url") for t in traffic if t.get("tag") == "latest" and t.get("url")), None)
    return main, latest


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
    previous_version = version_label(previous)
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
    with openai_client(cfg, url, builder, request_timeout_s) as client:
        report = smoke_test(client, builder.catalog, smoke_requests)
    if not report.passed(cfg.serving.smoke_min_valid):
        raise undo(smoke_failure(report, cfg, url))
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
