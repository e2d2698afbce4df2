"""What the serving manifests share: the model reference, image pins, labels, vLLM's arguments and its hardened pod
(non-root, read-only root with a scratch volume, /dev/shm, API key from a Secret), KServe's mode and S3 endpoint
annotations.

Two shapes use them: `kserve_manifests` (ServingRuntime + InferenceService) and `k8s_manifests` (Deployment per
version + Services); `manifest_schema` validates both offline. Objects are built with the kserve SDK and kubernetes
client models and serialised with `ApiClient.sanitize_for_serialization`. Every request shares the long catalog
system prompt, so vLLM runs with prefix caching on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


def to_yaml(objs: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream (what `kubectl apply -f -` takes)."""
    return yaml.safe_dump_all(objs, sort_keys=False, allow_unicode=True)
