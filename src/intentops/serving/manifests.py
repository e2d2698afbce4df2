"""Kubernetes objects that put a registered model behind vLLM's OpenAI-compatible server.

Two shapes, one set of vLLM arguments:

* `kserve`: a namespaced `ServingRuntime` running `vllm serve` and one `InferenceService` whose `storageUri` is the
  model version's S3 folder (KServe's storage initializer copies it to /mnt/models). A new version is rolled out on
  the same InferenceService with `canaryTrafficPercent`, so KServe (serverless mode) splits traffic between the last
  rolled-out revision and the new one; tag routing gives the new revision its own URL for the smoke test.
* `k8s`: for clusters without KServe, one `Deployment` per model version (an init container syncs the model from S3
  with the AWS CLI), a `Service` over every version of the app (traffic splits by ready replicas, which is how the
  canary weight is expressed) and a per-version `Service` so the smoke test can reach one version alone.

Objects are built with the kserve SDK and kubernetes client models and serialised with
`ApiClient.sanitize_for_serialization`. `validate_manifest` checks them offline: core kinds against the Kubernetes
OpenAPI schemas shipped with kubernetes-validate (strict: unknown fields are errors), KServe kinds against the
trimmed CRD schemas in `schemas/` (which reuse the same core definitions for containers, resources and tolerations).
Every request shares the long catalog system prompt, so vLLM runs with prefix caching on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from intentops.config import IMAGES_ENV, RunConfig

VLLM_IMAGE_VAR = "VLLM_IMAGE"
AWS_CLI_IMAGE_VAR = "AWS_CLI_IMAGE"

RUNTIME_NAME = "intentops-vllm"
MODEL_FORMAT = "vllm"
SERVICE_ACCOUNT = "intentops-serving"
HTTP_PORT = 8080
SERVICE_PORT = 80
MODEL_MOUNT = "/mnt/models"
HEALTH_PATH = "/health"

LABEL_APP = "app.kubernetes.io/name"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MODEL_NAME = "intentops.io/model-name"
LABEL_MODEL_VERSION = "intentops.io/model-version"
ANNOTATION_MODEL_URI = "intentops.io/model-uri"
ANNOTATION_STORAGE_URI = "intentops.io/storage-uri"
ANNOTATION_MODEL_NAME = "intentops.io/registered-model-name"
MANAGER = "intentops"

KSERVE_GROUP = "serving.kserve.io"
ISVC_API_VERSION = f"{KSERVE_GROUP}/v1beta1"
RUNTIME_API_VERSION = f"{KSERVE_GROUP}/v1alpha1"
KSERVE_DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
KSERVE_TAG_ROUTING = "serving.kserve.io/enable-tag-routing"

# Kubernetes version whose OpenAPI schemas validate core objects (the kubernetes client 30.x targets 1.30).
KUBERNETES_VERSION = "1.30"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KSERVE_SCHEMAS = {
    (ISVC_API_VERSION, "InferenceService"): "inferenceservice-v1beta1.json",
    (RUNTIME_API_VERSION, "ServingRuntime"): "servingruntime-v1alpha1.json",
}
K8S_DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ManifestError(ValueError):
    """A manifest that cannot be rendered or does not validate; the message names the object and the field."""


@dataclass(frozen=True)
class ModelRef:
    """The registered model version being served: MLflow name and version, and where its HF folder lives."""

    name: str
    version: str
    storage_uri: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Resources:
    """Per-replica resources of the vLLM container; GPUs also set vLLM's tensor parallelism."""

    gpus: int = 1
    cpu: str = "4"
    memory: str = "32Gi"

    def requirements(self) -> Any:
        from kubernetes.client import V1ResourceRequirements

        requests = {"cpu": self.cpu, "memory": self.memory}
        limits = {"memory": self.memory}
        if self.gpus:
            requests["nvidia.com/gpu"] = str(self.gpus)
            limits["nvidia.com/gpu"] = str(self.gpus)
        return V1ResourceRequirements(requests=requests, limits=limits)


def pinned_images(path: str | Path | None = None) -> dict[str, str]:
    """The image pins of images/versions.env as the build resolves them, so manifests and CI pull the same tags."""
    from intentops.images import ImagePinError, image_pins

    try:
        return image_pins(path or IMAGES_ENV)
    except ImagePinError as exc:
        raise ManifestError(str(exc)) from None


def pinned_image(variable: str, path: str | Path | None = None) -> str:
    images = pinned_images(path)
    if variable not in images:
        found = ", ".join(sorted(images)) or "nothing"
        raise ManifestError(f"{path or IMAGES_ENV}: no {variable}=... pin (found: {found})")
    return images[variable]


def vllm_image(cfg: RunConfig) -> str:
    """`serving.vllm_image` when set, else the pinned `VLLM_IMAGE`."""
    return cfg.serving.vllm_image or pinned_image(VLLM_IMAGE_VAR)


def vllm_args(cfg: RunConfig, served_model_name: str, gpus: int = 1) -> list[str]:
    """`vllm serve` arguments shared by both targets (the model folder is always /mnt/models)."""
    args = [
        MODEL_MOUNT,
        f"--served-model-name={served_model_name}",
        "--host=0.0.0.0",
        f"--port={HTTP_PORT}",
        "--enable-prefix-caching",
        f"--max-model-len={cfg.serving.max_model_len}",
        f"--gpu-memory-utilization={cfg.serving.gpu_memory_utilization}",
    ]
    if gpus > 1:
        args.append(f"--tensor-parallel-size={gpus}")
    return args


def label_value(value: str) -> str:
    """A string made safe for a label value (63 chars of [A-Za-z0-9._-], alphanumeric at both ends)."""
    return _LABEL_VALUE_UNSAFE.sub("-", value)[:63].strip("-_.")


def check_name(name: str, what: str) -> str:
    if not _DNS_1035.match(name) or len(name) > 63:
        raise ManifestError(
            f"{what} {name!r} is not a DNS-1035 label (lower-case letters, digits and '-', starting with a letter)"
        )
    return name


def model_labels(cfg: RunConfig, model: ModelRef | None = None) -> dict[str, str]:
    labels = {
        LABEL_APP: cfg.serving.service_name,
        LABEL_PART_OF: "intentops",
        LABEL_MANAGED_BY: MANAGER,
    }
    if model is not None:
        labels[LABEL_MODEL_NAME] = label_value(model.name)
        labels[LABEL_MODEL_VERSION] = label_value(model.version)
    return labels


def model_annotations(model: ModelRef) -> dict[str, str]:
    return {
        ANNOTATION_MODEL_NAME: model.name,
        ANNOTATION_MODEL_URI: model.uri,
        ANNOTATION_STORAGE_URI: model.storage_uri,
    }


def gpu_scheduling(cfg: RunConfig) -> tuple[dict[str, str], list[Any]]:
    """Node selector and tolerations of the GPU pool, from the cluster section."""
    from kubernetes.client import V1Toleration

    selector = {cfg.cluster.gpu_node_selector_key: cfg.cluster.gpu_node_selector_value}
    tolerations = [V1Toleration(key=cfg.cluster.gpu_toleration_key, operator="Exists", effect="NoSchedule")]
    return selector, tolerations


def serialize(obj: Any) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


# ---- KServe ------------------------------------------------------------------------------------------------------


def render_service_account(cfg: RunConfig) -> dict[str, Any]:
    """The account KServe's storage initializer uses; it carries the S3 secret (annotated with the S3 endpoint)."""
    from kubernetes.client import V1ObjectMeta, V1ObjectReference, V1ServiceAccount

    account = V1ServiceAccount(
        api_version="v1",
        kind="ServiceAccount",
        metadata=V1ObjectMeta(name=SERVICE_ACCOUNT, namespace=cfg.serving.namespace, labels=model_labels(cfg)),
        secrets=[V1ObjectReference(name=cfg.cluster.s3_secret)],
    )
    return serialize(account)


def render_serving_runtime(cfg: RunConfig, resources: Resources | None = None) -> dict[str, Any]:
    """A ServingRuntime for format `vllm`: `vllm serve /mnt/models` on port 8080, metrics scraped from /metrics."""
    from kserve import V1alpha1ServingRuntime, V1alpha1ServingRuntimeSpec, V1alpha1SupportedModelFormat
    from kubernetes.client import V1Container, V1ContainerPort, V1EnvVar, V1ObjectMeta

    resources = resources or Resources()
    container = V1Container(
        name="kserve-container",
        image=vllm_image(cfg),
        command=["vllm", "serve"],
        # KServe substitutes {{.Name}} with the InferenceService name, which is what clients send as `model`.
        args=vllm_args(cfg, "{{.Name}}", resources.gpus),
        env=[V1EnvVar(name="HF_HOME", value="/tmp/hf_home")],
        ports=[V1ContainerPort(container_port=HTTP_PORT, name="http1", protocol="TCP")],
        resources=resources.requirements(),
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
            },
            containers=[container],
        ),
    )
    return serialize(runtime)


def render_inference_service(
    cfg: RunConfig,
    model: ModelRef,
    canary_percent: int | None = None,
    resources: Resources | None = None,
) -> dict[str, Any]:
    """The InferenceService serving `model`; `canary_percent` sends that share of traffic to this revision."""
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
    annotations = {
        **model_annotations(model),
        # Canary rollouts are a serverless (Knative) feature; tag routing gives the latest revision its own URL.
        KSERVE_DEPLOYMENT_MODE: "Serverless",
        KSERVE_TAG_ROUTING: "true",
    }
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
    cfg: RunConfig, model: ModelRef, canary_percent: int | None = None, resources: Resources | None = None
) -> list[dict[str, Any]]:
    """Everything the kserve target applies, in apply order."""
    return [
        render_service_account(cfg),
        render_serving_runtime(cfg, resources),
        render_inference_service(cfg, model, canary_percent, resources),
    ]


# ---- plain Kubernetes ------------------------------------------------------------------------------------------------


def deployment_name(cfg: RunConfig, model: ModelRef) -> str:
    return check_name(f"{cfg.serving.service_name}-v{label_value(model.version).lower()}", "deployment name")


def version_service_name(cfg: RunConfig, model: ModelRef) -> str:
    return deployment_name(cfg, model)


def model_sync_script() -> str:
    """Shell run by the init container: copy the model folder from S3, honouring a custom endpoint (MinIO)."""
    return (
        'endpoint="${AWS_ENDPOINT_URL_S3:-${AWS_ENDPOINT_URL:-${MLFLOW_S3_ENDPOINT_URL:-}}}"\n'
        'aws s3 sync "$MODEL_URI" "$MODEL_DIR" --only-show-errors ${endpoint:+--endpoint-url "$endpoint"}\n'
        'test -f "$MODEL_DIR/config.json" || { echo "no config.json under $MODEL_URI" >&2; exit 1; }\n'
    )


def render_deployment(
    cfg: RunConfig, model: ModelRef, replicas: int = 1, resources: Resources | None = None
) -> dict[str, Any]:
    """One Deployment per model version: S3 sync init container, then `vllm serve` with a /health readiness probe."""
    from kubernetes.client import (
        V1Container,
        V1ContainerPort,
        V1Deployment,
        V1DeploymentSpec,
        V1EmptyDirVolumeSource,
        V1EnvFromSource,
        V1EnvVar,
        V1HTTPGetAction,
        V1LabelSelector,
        V1ObjectMeta,
        V1PodSpec,
        V1PodTemplateSpec,
        V1Probe,
        V1SecretEnvSource,
        V1Volume,
        V1VolumeMount,
    )

    if replicas < 0:
        raise ManifestError(f"replicas {replicas} is negative")
    resources = resources or Resources()
    selector, tolerations = gpu_scheduling(cfg)
    labels = model_labels(cfg, model)
    match = {LABEL_APP: cfg.serving.service_name, LABEL_MODEL_VERSION: labels[LABEL_MODEL_VERSION]}
    model_volume = V1VolumeMount(name="model", mount_path=MODEL_MOUNT)
    sync = V1Container(
        name="model-sync",
        image=pinned_image(AWS_CLI_IMAGE_VAR),
        command=["/bin/sh", "-ec", model_sync_script()],
        env=[V1EnvVar(name="MODEL_URI", value=model.storage_uri), V1EnvVar(name="MODEL_DIR", value=MODEL_MOUNT)],
        env_from=[V1EnvFromSource(secret_ref=V1SecretEnvSource(name=cfg.cluster.s3_secret))],
        volume_mounts=[model_volume],
    )
    health = V1HTTPGetAction(path=HEALTH_PATH, port="http")
    server = V1Container(
        name="vllm",
        image=vllm_image(cfg),
        command=["vllm", "serve"],
        args=vllm_args(cfg, cfg.serving.service_name, resources.gpus),
        env=[V1EnvVar(name="HF_HOME", value="/tmp/hf_home")],
        ports=[V1ContainerPort(container_port=HTTP_PORT, name="http", protocol="TCP")],
        # Loading weights and capturing CUDA graphs takes minutes: the startup probe allows 20, readiness then
        # takes the pod out of the Service as soon as /health fails.
        startup_probe=V1Probe(http_get=health, period_seconds=10, failure_threshold=120),
        readiness_probe=V1Probe(http_get=health, period_seconds=10, failure_threshold=3),
        liveness_probe=V1Probe(http_get=health, period_seconds=30, failure_threshold=5),
        resources=resources.requirements(),
        volume_mounts=[model_volume],
    )
    deployment = V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=V1ObjectMeta(
            name=deployment_name(cfg, model),
            namespace=cfg.serving.namespace,
            labels=labels,
            annotations=model_annotations(model),
        ),
        spec=V1DeploymentSpec(
            replicas=replicas,
            selector=V1LabelSelector(match_labels=match),
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(labels=labels, annotations=model_annotations(model)),
                spec=V1PodSpec(
                    init_containers=[sync],
                    containers=[server],
                    node_selector=selector,
                    tolerations=tolerations,
                    volumes=[V1Volume(name="model", empty_dir=V1EmptyDirVolumeSource())],
                ),
            ),
        ),
    )
    return serialize(deployment)


def render_service(cfg: RunConfig, model: ModelRef | None = None) -> dict[str, Any]:
    """The app's Service (every version: traffic splits by ready pods) or, with `model`, one version's Service."""
    from kubernetes.client import V1ObjectMeta, V1Service, V1ServicePort, V1ServiceSpec

    selector = {LABEL_APP: cfg.serving.service_name}
    name = check_name(cfg.serving.service_name, "serving.service_name")
    if model is not None:
        selector[LABEL_MODEL_VERSION] = label_value(model.version)
        name = version_service_name(cfg, model)
    service = V1Service(
        api_version="v1",
        kind="Service",
        metadata=V1ObjectMeta(name=name, namespace=cfg.serving.namespace, labels=model_labels(cfg, model)),
        spec=V1ServiceSpec(
            selector=selector,
            ports=[V1ServicePort(name="http", port=SERVICE_PORT, target_port="http", protocol="TCP")],
        ),
    )
    return serialize(service)


def render_k8s(
    cfg: RunConfig, model: ModelRef, replicas: int = 1, resources: Resources | None = None
) -> list[dict[str, Any]]:
    """Everything the k8s target applies for one version, in apply order."""
    return [render_service(cfg), render_service(cfg, model), render_deployment(cfg, model, replicas, resources)]


def service_url(cfg: RunConfig, name: str | None = None) -> str:
    """In-cluster base URL of the OpenAI API behind a Service."""
    return f"http://{name or cfg.serving.service_name}.{cfg.serving.namespace}.svc.cluster.local:{SERVICE_PORT}/v1"


# ---- validation ------------------------------------------------------------------------------------------------------


@cache
def _kserve_validator(filename: str) -> Any:
    import jsonschema
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    schema = json.loads((SCHEMA_DIR / filename).read_text(encoding="utf-8"))
    definitions = schema_contents(
        f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict/_definitions.json", KUBERNETES_VERSION
    )
    registry = Registry().with_resource(K8S_DEFINITIONS_ID, Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_manifest(obj: dict[str, Any]) -> None:
    """Raise ManifestError unless `obj` matches its schema (KServe: trimmed CRD; core: Kubernetes OpenAPI, strict)."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    what = f"{kind}/{obj.get('metadata', {}).get('name', '?')}"
    filename = KSERVE_SCHEMAS.get((api_version, kind))
    if filename is not None:
        errors = sorted(_kserve_validator(filename).iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            problems = "; ".join(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)
            raise ManifestError(f"{what} ({api_version}) does not match {filename}: {problems}")
        return
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        raise ManifestError(f"{what} ({api_version}): {path}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError:
        raise ManifestError(f"{what}: no schema for {api_version} {kind}") from None


def validate_all(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for obj in objs:
        validate_manifest(obj)
    return objs


def to_yaml(objs: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream (what `kubectl apply -f -` takes)."""
    return yaml.safe_dump_all(objs, sort_keys=False, allow_unicode=True)
