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

from intentops.config import PROJECT_ROOT, RunConfig

IMAGES_ENV = PROJECT_ROOT / "images" / "versions.env"
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
# KServe deployment modes (pkg/constants/constants.go): Knative (legacy name Serverless) splits traffic between
# revisions, so canaries work; Standard (legacy RawDeployment, KServe's default) runs a plain Deployment.
KNATIVE = "Knative"
STANDARD = "Standard"
LEGACY_MODES = {"Serverless": KNATIVE, "RawDeployment": STANDARD}
# Knative's per-revision progress deadline (default 600 s, too short for a 7B model to download and load).
KNATIVE_PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"
# Read by KServe's credential builder from the storage ServiceAccount or its S3 Secret
# (pkg/credentials/s3/s3_secret.go, utils.go): host[:port] of the S3 endpoint and whether to use https ("0"/"1").
KSERVE_S3_ENDPOINT = "serving.kserve.io/s3-endpoint"
KSERVE_S3_USE_HTTPS = "serving.kserve.io/s3-usehttps"
S3_ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")

# The vLLM server runs as this non-root user with a read-only root filesystem; what it writes (caches, compiled
# kernels, HOME) goes to an emptyDir at SCRATCH_MOUNT, and /dev/shm is a memory-backed emptyDir (NCCL, torch).
SERVER_UID = 1000
SCRATCH_MOUNT = "/tmp"
SHM_MOUNT = "/dev/shm"
API_KEY_KEY = "VLLM_API_KEY"
MODEL_CACHE_MOUNT = "/model-cache"
MODEL_COMPLETE_MARKER = ".intentops-complete"

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
    """The image pins of images/versions.env (dotenv format), so manifests and CI pull the same tags."""
    from dotenv import dotenv_values

    source = Path(path or IMAGES_ENV)
    if not source.exists():
        raise ManifestError(f"{source}: image pin file not found")
    return {key: value for key, value in dotenv_values(source).items() if value}


def pinned_image(variable: str, path: str | Path | None = None) -> str:
    images = pinned_images(path)
    if variable not in images:
        found = ", ".join(sorted(images)) or "nothing"
        raise ManifestError(f"{path or IMAGES_ENV}: no {variable}=... pin (found: {found})")
    return images[variable]


def vllm_image(cfg: RunConfig) -> str:
    """`serving.vllm_image` when set, else the pinned `VLLM_IMAGE`."""
    return cfg.serving.vllm_image or pinned_image(VLLM_IMAGE_VAR)


def normalized_mode(mode: str | None) -> str | None:
    """A KServe deployment mode under its current name (Serverless -> Knative, RawDeployment -> Standard)."""
    return LEGACY_MODES.get(mode, mode) if mode else None


def s3_endpoint_annotations(endpoint_url: str | None = None) -> dict[str, str]:
    """KServe's S3 endpoint annotations for `endpoint_url` (default: the S3 endpoint this process uses), or {}.

    KServe does not read AWS_ENDPOINT_URL from the secret; without these its storage initializer goes to AWS.
    """
    import os
    from urllib.parse import urlsplit

    url = endpoint_url or next((os.environ[name] for name in S3_ENDPOINT_ENVS if os.environ.get(name)), "")
    if not url:
        return {}
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if not parts.hostname:
        raise ManifestError(f"S3 endpoint {url!r} has no host")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return {KSERVE_S3_ENDPOINT: host, KSERVE_S3_USE_HTTPS: "0" if parts.scheme == "http" else "1"}


def server_env(cfg: RunConfig) -> list[Any]:
    """Environment of the vLLM container: every cache under the scratch volume, the API key from its Secret."""
    from kubernetes.client import V1EnvVar, V1EnvVarSource, V1SecretKeySelector

    env = [
        V1EnvVar(name="HOME", value=SCRATCH_MOUNT),
        V1EnvVar(name="HF_HOME", value=f"{SCRATCH_MOUNT}/hf_home"),
        V1EnvVar(name="XDG_CACHE_HOME", value=f"{SCRATCH_MOUNT}/.cache"),
        V1EnvVar(name="VLLM_CACHE_ROOT", value=f"{SCRATCH_MOUNT}/.cache/vllm"),
        V1EnvVar(name="TRITON_CACHE_DIR", value=f"{SCRATCH_MOUNT}/.triton"),
    ]
    if cfg.serving.api_key_secret:
        # vLLM reads --api-key from $VLLM_API_KEY: the key never appears on the command line.
        selector = V1SecretKeySelector(name=cfg.serving.api_key_secret, key=API_KEY_KEY)
        env.append(V1EnvVar(name=API_KEY_KEY, value_from=V1EnvVarSource(secret_key_ref=selector)))
    return env


def server_volumes() -> list[Any]:
    """The scratch emptyDir and the memory-backed /dev/shm of the vLLM container."""
    from kubernetes.client import V1EmptyDirVolumeSource, V1Volume

    return [
        V1Volume(name="scratch", empty_dir=V1EmptyDirVolumeSource()),
        V1Volume(name="dshm", empty_dir=V1EmptyDirVolumeSource(medium="Memory")),
    ]


def server_mounts() -> list[Any]:
    from kubernetes.client import V1VolumeMount

    return [V1VolumeMount(name="scratch", mount_path=SCRATCH_MOUNT), V1VolumeMount(name="dshm", mount_path=SHM_MOUNT)]


def container_security() -> Any:
    """Non-root, no privilege escalation, no capabilities, read-only root filesystem."""
    from kubernetes.client import V1Capabilities, V1SeccompProfile, V1SecurityContext

    return V1SecurityContext(
        run_as_non_root=True,
        run_as_user=SERVER_UID,
        run_as_group=SERVER_UID,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=V1Capabilities(drop=["ALL"]),
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
    )


def pod_security() -> Any:
    """Pod-level: non-root, and volumes (model, scratch) writable by the server's group."""
    from kubernetes.client import V1PodSecurityContext, V1SeccompProfile

    return V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=SERVER_UID,
        run_as_group=SERVER_UID,
        fs_group=SERVER_UID,
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
    )


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


# ---- plain Kubernetes ------------------------------------------------------------------------------------------------


def deployment_name(cfg: RunConfig, model: ModelRef) -> str:
    return check_name(f"{cfg.serving.service_name}-v{label_value(model.version).lower()}", "deployment name")


def version_service_name(cfg: RunConfig, model: ModelRef) -> str:
    return deployment_name(cfg, model)


def model_sync_script() -> str:
    """Shell run by the init container: copy the model folder from S3, honouring a custom endpoint (MinIO).

    With $MODEL_CACHE set, MODEL_DIR lives on a shared volume: a version already there (completion marker) is not
    downloaded again; otherwise it is synced to a pod-private sibling and renamed into place, so concurrent pods
    never see a half-copied model and the first complete copy wins.
    """
    return (
        'endpoint="${AWS_ENDPOINT_URL_S3:-${AWS_ENDPOINT_URL:-${MLFLOW_S3_ENDPOINT_URL:-}}}"\n'
        'target="$MODEL_DIR"\n'
        'if [ -n "${MODEL_CACHE:-}" ]; then\n'
        f'  if [ -f "$MODEL_DIR/{MODEL_COMPLETE_MARKER}" ]; then echo "$MODEL_URI: already cached"; exit 0; fi\n'
        '  target="$MODEL_DIR.partial-${HOSTNAME:-$$}"\n'
        '  mkdir -p "$target"\n'
        "fi\n"
        'aws s3 sync "$MODEL_URI" "$target" --only-show-errors ${endpoint:+--endpoint-url "$endpoint"}\n'
        'test -f "$target/config.json" || { echo "no config.json under $MODEL_URI" >&2; exit 1; }\n'
        'if [ -n "${MODEL_CACHE:-}" ]; then\n'
        f'  touch "$target/{MODEL_COMPLETE_MARKER}"\n'
        f'  mv -T "$target" "$MODEL_DIR" 2>/dev/null || {{ rm -rf "$target"; test -f "$MODEL_DIR/{MODEL_COMPLETE_MARKER}"; }}\n'
        "fi\n"
    )


def model_cache_key(model: ModelRef) -> str:
    """The folder of a version on the shared model cache volume."""
    return f"{label_value(model.name)}/{label_value(model.version)}"


def render_deployment(
    cfg: RunConfig, model: ModelRef, replicas: int = 1, resources: Resources | None = None
) -> dict[str, Any]:
    """One Deployment per model version: S3 sync init container, then `vllm serve` with a /health readiness probe.

    With `serving.model_cache_pvc` the model is synced once per version onto that shared (ReadWriteMany) volume and
    every pod mounts its folder read-only; otherwise each pod downloads it into its own emptyDir.
    """
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
        V1PersistentVolumeClaimVolumeSource,
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
    sync_env = [V1EnvVar(name="MODEL_URI", value=model.storage_uri), V1EnvVar(name="HOME", value=SCRATCH_MOUNT)]
    if cfg.serving.model_cache_pvc:
        volume = V1Volume(
            name="model",
            persistent_volume_claim=V1PersistentVolumeClaimVolumeSource(claim_name=cfg.serving.model_cache_pvc),
        )
        sync_mount = V1VolumeMount(name="model", mount_path=MODEL_CACHE_MOUNT)
        server_mount = V1VolumeMount(
            name="model", mount_path=MODEL_MOUNT, sub_path=model_cache_key(model), read_only=True
        )
        sync_env += [
            V1EnvVar(name="MODEL_DIR", value=f"{MODEL_CACHE_MOUNT}/{model_cache_key(model)}"),
            V1EnvVar(name="MODEL_CACHE", value="1"),
        ]
    else:
        volume = V1Volume(name="model", empty_dir=V1EmptyDirVolumeSource())
        sync_mount = V1VolumeMount(name="model", mount_path=MODEL_MOUNT)
        server_mount = V1VolumeMount(name="model", mount_path=MODEL_MOUNT, read_only=True)
        sync_env.append(V1EnvVar(name="MODEL_DIR", value=MODEL_MOUNT))
    sync = V1Container(
        name="model-sync",
        image=pinned_image(AWS_CLI_IMAGE_VAR),
        command=["/bin/sh", "-ec", model_sync_script()],
        env=sync_env,
        env_from=[V1EnvFromSource(secret_ref=V1SecretEnvSource(name=cfg.cluster.s3_secret))],
        security_context=container_security(),
        volume_mounts=[sync_mount, V1VolumeMount(name="scratch", mount_path=SCRATCH_MOUNT)],
    )
    health = V1HTTPGetAction(path=HEALTH_PATH, port="http")
    server = V1Container(
        name="vllm",
        image=vllm_image(cfg),
        command=["vllm", "serve"],
        args=vllm_args(cfg, cfg.serving.service_name, resources.gpus),
        env=server_env(cfg),
        ports=[V1ContainerPort(container_port=HTTP_PORT, name="http", protocol="TCP")],
        # Loading weights and capturing CUDA graphs takes minutes: the startup probe allows ready_timeout_s,
        # readiness then takes the pod out of the Service as soon as /health fails.
        startup_probe=V1Probe(
            http_get=health, period_seconds=10, failure_threshold=max(1, cfg.serving.ready_timeout_s // 10)
        ),
        readiness_probe=V1Probe(http_get=health, period_seconds=10, failure_threshold=3),
        liveness_probe=V1Probe(http_get=health, period_seconds=30, failure_threshold=5),
        resources=resources.requirements(),
        security_context=container_security(),
        volume_mounts=[server_mount, *server_mounts()],
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
            # The default 600 s marks a 7B start (download, load, CUDA graphs) as failed before it is.
            progress_deadline_seconds=max(600, cfg.serving.ready_timeout_s),
            selector=V1LabelSelector(match_labels=match),
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(labels=labels, annotations=model_annotations(model)),
                spec=V1PodSpec(
                    init_containers=[sync],
                    containers=[server],
                    node_selector=selector,
                    tolerations=tolerations,
                    security_context=pod_security(),
                    volumes=[volume, *server_volumes()],
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
