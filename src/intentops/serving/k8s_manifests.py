"""Plain Kubernetes objects for the k8s target (clusters without KServe): one `Deployment` per model version (an init
container syncs the model from S3, once per version with a shared cache volume), a `Service` over every version of
the app (traffic splits by ready replicas, which is how the canary weight is expressed) and a per-version `Service`
so the smoke test can reach one version alone."""

from __future__ import annotations

from typing import Any

from intentops.config import RunConfig
from intentops.serving.manifests import (
    AWS_CLI_IMAGE_VAR,
    HEALTH_PATH,
    HTTP_PORT,
    LABEL_APP,
    LABEL_MODEL_VERSION,
    MODEL_CACHE_MOUNT,
    MODEL_COMPLETE_MARKER,
    MODEL_MOUNT,
    SCRATCH_MOUNT,
    SERVICE_PORT,
    ManifestError,
    ModelRef,
    Resources,
    check_name,
    container_security,
    gpu_scheduling,
    label_value,
    model_annotations,
    model_labels,
    pinned_image,
    pod_security,
    serialize,
    server_env,
    server_mounts,
    server_volumes,
    vllm_args,
    vllm_image,
)


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
