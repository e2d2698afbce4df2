"""KServe objects for the kserve target: the storage ServiceAccount, a namespaced `ServingRuntime` running `vllm serve`,
and one `InferenceService` whose `storageUri` is the model version's S3 folder (KServe's storage initializer copies it
to /mnt/models). Knative mode rolls a new version out beside the serving one with `canaryTrafficPercent`; Standard
mode replaces it."""

from __future__ import annotations

from typing import Any

from intentops.config import RunConfig
from intentops.serving.manifests import (
    HTTP_PORT,
    ISVC_API_VERSION,
    KNATIVE,
    KNATIVE_PROGRESS_DEADLINE,
    KSERVE_DEPLOYMENT_MODE,
    KSERVE_TAG_ROUTING,
    MODEL_FORMAT,
    RUNTIME_API_VERSION,
    RUNTIME_NAME,
    SERVICE_ACCOUNT,
    STANDARD,
    ManifestError,
    ModelRef,
    Resources,
    check_name,
    container_security,
    gpu_scheduling,
    model_annotations,
    model_labels,
    normalized_mode,
    pod_security,
    s3_endpoint_annotations,
    serialize,
    server_env,
    server_mounts,
    server_volumes,
    vllm_args,
    vllm_image,
)


def render_service_account(cfg: RunConfig, s3_endpoint: str | None = None) -> dict[str, Any]:
    """The account KServe's storage initializer uses: it lists the S3 secret and carries KServe's S3 endpoint
    annotations (from `s3_endpoint`, else this process's AWS_ENDPOINT_URL), so MinIO/SeaweedFS/Ceph are reachable."""
    from kubernetes.client import V1ObjectMeta, V1ObjectReference, V1ServiceAccount

    account = V1ServiceAccount(
        api_version="v1",
        kind="ServiceAccount",
        metadata=V1ObjectMeta(
            name=SERVICE_ACCOUNT,
            namespace=cfg.serving.namespace,
            labels=model_labels(cfg),
            annotations=s3_endpoint_annotations(s3_endpoint) or None,
        ),
        secrets=[V1ObjectReference(name=cfg.cluster.s3_secret)],
    )
    return serialize(account)


def render_serving_runtime(cfg: RunConfig, resources: Resources | None = None) -> dict[str, Any]:
    """A ServingRuntime for format `vllm`: `vllm serve /mnt/models` on port 8080, metrics scraped from /metrics."""
    from kserve import V1alpha1ServingRuntime, V1alpha1ServingRuntimeSpec, V1alpha1SupportedModelFormat
    from kubernetes.client import V1Container, V1ContainerPort, V1ObjectMeta

    resources = resources or Resources()
    container = V1Container(
        name="kserve-container",
        image=vllm_image(cfg),
        command=["vllm", "serve"],
        # KServe substitutes {{.Name}} with the InferenceService name, which is what clients send as `model`.
        args=vllm_args(cfg, "{{.Name}}", resources.gpus),
        env=server_env(cfg),
        ports=[V1ContainerPort(container_port=HTTP_PORT, name="http1", protocol="TCP")],
        resources=resources.requirements(),
        security_context=container_security(),
        volume_mounts=server_mounts(),
    )
    runtime = V1alpha1ServingRuntime(
        api_version=RUNTIME_API_VERSION,
        kind="ServingRuntime",
        metadata=V1ObjectMeta(name=RUNTIME_NAME, namespace=cfg.serving.namespace, labels=model_labels(cfg)),
        spec=V1alpha1ServingRuntimeSpec(
            supported_model_formats=[V1alpha1SupportedModelFormat(name=MODEL_FORMAT, auto_select=True)],
            multi_model=False,
            annotations={
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(HTTP_PORT),
                "prometheus.io/path": "/metrics",
                # Knative only: a 7B model downloads and loads for longer than its default 600 s.
                KNATIVE_PROGRESS_DEADLINE: f"{cfg.serving.ready_timeout_s}s",
            },
            containers=[container],
            volumes=server_volumes(),
        ),
    )
    return serialize(runtime)


def render_inference_service(
    cfg: RunConfig,
    model: ModelRef,
    canary_percent: int | None = None,
    resources: Resources | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    """The InferenceService serving `model`; `canary_percent` sends that share of traffic to this revision.

    `mode` is KServe's deployment mode (Knative or Standard); None leaves it to the cluster's default. Canaries
    and tag routing need Knative.
    """
    from kserve import (
        V1beta1InferenceService,
        V1beta1InferenceServiceSpec,
        V1beta1ModelFormat,
        V1beta1ModelSpec,
        V1beta1PredictorSpec,
    )
    from kubernetes.client import V1ObjectMeta

    if canary_percent is not None and not 0 <= canary_percent <= 100:
        raise ManifestError(f"canary percent {canary_percent} is outside 0..100")
    resources = resources or Resources()
    name = check_name(cfg.serving.service_name, "serving.service_name")
    selector, tolerations = gpu_scheduling(cfg)
    mode = normalized_mode(mode)
    if mode not in (None, KNATIVE, STANDARD):
        raise ManifestError(f"KServe deployment mode {mode!r}: expected {KNATIVE} or {STANDARD}")
    if canary_percent is not None and mode != KNATIVE:
        raise ManifestError(f"a canary needs KServe's {KNATIVE} mode (traffic split by revision), not {mode}")
    annotations = dict(model_annotations(model))
    if mode is not None:
        annotations[KSERVE_DEPLOYMENT_MODE] = mode
    if mode == KNATIVE:
        # Tag routing gives the latest revision its own URL, which the canary's smoke test calls.
        annotations[KSERVE_TAG_ROUTING] = "true"
    service = V1beta1InferenceService(
        api_version=ISVC_API_VERSION,
        kind="InferenceService",
        metadata=V1ObjectMeta(
            name=name,
            namespace=cfg.serving.namespace,
            labels=model_labels(cfg, model),
            annotations=annotations,
        ),
        spec=V1beta1InferenceServiceSpec(
            predictor=V1beta1PredictorSpec(
                min_replicas=1,  # an LLM cold start takes minutes: never scale to zero
                canary_traffic_percent=canary_percent,
                service_account_name=SERVICE_ACCOUNT,
                node_selector=selector,
                tolerations=tolerations,
                security_context=pod_security(),
                labels=model_labels(cfg, model),
                model=V1beta1ModelSpec(
                    name=None,
                    model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
                    runtime=RUNTIME_NAME,
                    storage_uri=model.storage_uri,
                    resources=resources.requirements(),
                ),
            )
        ),
    )
    return serialize(service)


def render_kserve(
    cfg: RunConfig,
    model: ModelRef,
    canary_percent: int | None = None,
    resources: Resources | None = None,
    mode: str | None = None,
) -> list[dict[str, Any]]:
    """Everything the kserve target applies, in apply order."""
    return [
        render_service_account(cfg),
        render_serving_runtime(cfg, resources),
        render_inference_service(cfg, model, canary_percent, resources, mode),
    ]
