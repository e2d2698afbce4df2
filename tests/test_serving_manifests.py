"""Serving manifests: what is rendered from the config, and that offline schema validation catches real mistakes."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from intentops.config import RunConfig
from intentops.serving import k8s_manifests as k8m
from intentops.serving import kserve_manifests as ksm
from intentops.serving import manifest_schema as schema
from intentops.serving import manifests as mf

MODEL = mf.ModelRef(name="intent-detector", version="7", storage_uri="s3://models/mlflow/3/abc/artifacts/hf_model")


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pins = tmp_path / "versions.env"
    pins.write_text(
        "# pinned images\nVLLM_IMAGE=vllm/vllm-openai:v0.11.0\nAWS_CLI_IMAGE=amazon/aws-cli:2.17.50\n", encoding="utf-8"
    )
    monkeypatch.setattr(mf, "IMAGES_ENV", pins)
    return pins


@pytest.fixture
def cfg() -> RunConfig:
    cfg = RunConfig()
    cfg.serving.max_model_len = 2048
    cfg.serving.gpu_memory_utilization = 0.85
    cfg.serving.namespace = "serving"
    cfg.cluster.gpu_node_selector_key = "cloud.example.com/accelerator"
    cfg.cluster.gpu_node_selector_value = "h100"
    cfg.cluster.gpu_toleration_key = "gpu-only"
    return cfg


def _container(pod_spec: dict, name: str) -> dict:
    return next(c for c in pod_spec["containers"] + pod_spec.get("initContainers", []) if c["name"] == name)


def test_serving_runtime_runs_vllm_openai_server_with_config_knobs(cfg: RunConfig, images: Path) -> None:
    account, runtime, _ = schema.validate_all(ksm.render_kserve(cfg, MODEL))
    container = runtime["spec"]["containers"][0]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and runtime["metadata"]["namespace"] == "serving"
    assert container["image"] == "vllm/vllm-openai:v0.11.0"
    assert container["command"] == ["vllm", "serve"]
    assert container["args"][0] == "/mnt/models"
    assert {
        "--enable-prefix-caching",
        "--max-model-len=2048",
        "--gpu-memory-utilization=0.85",
        "--served-model-name={{.Name}}",
        "--port=8080",
    } <= set(container["args"])
    assert container["ports"][0]["containerPort"] == 8080
    assert runtime["spec"]["supportedModelFormats"] == [{"autoSelect": True, "name": "vllm"}]
    assert account["kind"] == "ServiceAccount" and account["secrets"] == [{"name": cfg.cluster.s3_secret}]


def test_inference_service_points_at_the_version_with_gpu_scheduling(cfg: RunConfig, images: Path) -> None:
    service = ksm.render_inference_service(cfg, MODEL)
    schema.validate_manifest(service)
    predictor = service["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == MODEL.storage_uri
    assert predictor["model"]["runtime"] == mf.RUNTIME_NAME
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert predictor["nodeSelector"] == {"cloud.example.com/accelerator": "h100"}
    assert predictor["tolerations"] == [{"effect": "NoSchedule", "key": "gpu-only", "operator": "Exists"}]
    assert "canaryTrafficPercent" not in predictor
    labels, annotations = service["metadata"]["labels"], service["metadata"]["annotations"]
    assert labels[mf.LABEL_MODEL_NAME] == "intent-detector" and labels[mf.LABEL_MODEL_VERSION] == "7"
    assert annotations[mf.ANNOTATION_MODEL_URI] == "models:/intent-detector/7"
    assert mf.KSERVE_DEPLOYMENT_MODE not in annotations  # no mode asked: the cluster's KServe default applies

    canary = ksm.render_inference_service(cfg, MODEL, canary_percent=15, mode="Serverless")  # legacy name
    schema.validate_manifest(canary)
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 15
    assert canary["metadata"]["annotations"][mf.KSERVE_DEPLOYMENT_MODE] == "Knative"
    assert canary["metadata"]["annotations"][mf.KSERVE_TAG_ROUTING] == "true"
    with pytest.raises(mf.ManifestError, match=r"outside 0\.\.100"):
        ksm.render_inference_service(cfg, MODEL, canary_percent=120, mode="Knative")

    standard = schema.validate_all([ksm.render_inference_service(cfg, MODEL, mode="RawDeployment")])[0]
    assert standard["metadata"]["annotations"][mf.KSERVE_DEPLOYMENT_MODE] == "Standard"
    assert mf.KSERVE_TAG_ROUTING not in standard["metadata"]["annotations"]
    with pytest.raises(mf.ManifestError, match="canary needs KServe's Knative mode"):
        ksm.render_inference_service(cfg, MODEL, canary_percent=10, mode="Standard")


def test_tensor_parallel_follows_gpu_count(cfg: RunConfig, images: Path) -> None:
    runtime = ksm.render_serving_runtime(cfg, mf.Resources(gpus=4))
    container = runtime["spec"]["containers"][0]
    assert "--tensor-parallel-size=4" in container["args"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "4"


def test_plain_kubernetes_bundle_syncs_from_s3_and_probes_health(cfg: RunConfig, images: Path) -> None:
    service, version_service, deployment = schema.validate_all(k8m.render_k8s(cfg, MODEL, replicas=2))
    pod = deployment["spec"]["template"]["spec"]
    server, sync = _container(pod, "vllm"), _container(pod, "model-sync")
    assert deployment["metadata"]["name"] == "intent-detector-v7" and deployment["spec"]["replicas"] == 2
    assert server["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert "--served-model-name=intent-detector" in server["args"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert sync["image"] == "amazon/aws-cli:2.17.50"
    assert {"name": "MODEL_URI", "value": MODEL.storage_uri} in sync["env"]
    assert sync["envFrom"] == [{"secretRef": {"name": cfg.cluster.s3_secret}}]
    assert pod["nodeSelector"] == {"cloud.example.com/accelerator": "h100"}
    # The app Service spans every version (canary weighting); the version Service reaches this version only.
    assert service["spec"]["selector"] == {mf.LABEL_APP: "intent-detector"}
    assert version_service["spec"]["selector"] == {mf.LABEL_APP: "intent-detector", mf.LABEL_MODEL_VERSION: "7"}
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels(deployment).items()
    assert k8m.service_url(cfg) == "http://intent-detector.serving.svc.cluster.local:80/v1"


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_schema_validation_rejects_typos_and_bad_values(cfg: RunConfig, images: Path) -> None:
    service = ksm.render_inference_service(cfg, MODEL, canary_percent=10, mode="Knative")
    service["spec"]["predictor"]["canaryTraficPercent"] = service["spec"]["predictor"].pop("canaryTrafficPercent")
    with pytest.raises(mf.ManifestError, match="canaryTraficPercent"):
        schema.validate_manifest(service)

    service = ksm.render_inference_service(cfg, MODEL)
    service["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] = ["1"]
    with pytest.raises(mf.ManifestError, match=r"spec\.predictor\.model\.resources\.limits"):
        schema.validate_manifest(service)

    service = ksm.render_inference_service(cfg, MODEL)
    del service["spec"]["predictor"]["model"]["modelFormat"]
    with pytest.raises(mf.ManifestError, match="modelFormat"):
        schema.validate_manifest(service)

    runtime = ksm.render_serving_runtime(cfg)
    runtime["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/health", "port": 8080}}
    with pytest.raises(mf.ManifestError, match="readinesProbe"):
        schema.validate_manifest(runtime)

    deployment = k8m.render_deployment(cfg, MODEL)
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(mf.ManifestError, match=r"Deployment/intent-detector-v7 .*spec\.replicas"):
        schema.validate_manifest(deployment)


def test_names_must_be_dns_labels(cfg: RunConfig, images: Path) -> None:
    cfg.serving.service_name = "Intent_Detector"
    with pytest.raises(mf.ManifestError, match="DNS-1035"):
        ksm.render_inference_service(cfg, MODEL)


def test_image_pins_come_from_versions_env_unless_overridden(cfg: RunConfig, images: Path) -> None:
    assert mf.vllm_image(cfg) == "vllm/vllm-openai:v0.11.0"
    cfg.serving.vllm_image = "registry.local/vllm:custom"
    assert mf.vllm_image(cfg) == "registry.local/vllm:custom"
    images.write_text("VLLM_IMAGE=vllm/vllm-openai:v0.11.0\n", encoding="utf-8")
    with pytest.raises(mf.ManifestError, match=f"{images}: no AWS_CLI_IMAGE"):
        k8m.render_deployment(cfg, MODEL)


def test_repository_pins_the_serving_images() -> None:
    """images/versions.env (interpolated like dotenv does) pins both images the manifests use, never `latest`."""
    for variable in (mf.VLLM_IMAGE_VAR, mf.AWS_CLI_IMAGE_VAR):
        image = mf.pinned_image(variable)
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image


def test_yaml_stream_round_trips(cfg: RunConfig, images: Path) -> None:
    objs = ksm.render_kserve(cfg, MODEL, canary_percent=5, mode="Knative") + k8m.render_k8s(cfg, MODEL)
    assert list(yaml.safe_load_all(mf.to_yaml(objs))) == objs


def test_model_sync_script_uses_the_configured_s3_endpoint(tmp_path: Path) -> None:
    """Run the init container's shell with a stub `aws` that records its arguments and writes a config.json."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "aws-args"
    stub = bin_dir / "aws"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\ntouch "$4/config.json"\n', encoding="utf-8")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    base_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL_URI": MODEL.storage_uri, "MODEL_DIR": str(model_dir)}

    subprocess.run(
        ["/bin/sh", "-ec", k8m.model_sync_script()],
        env={**base_env, "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000"},
        check=True,
    )
    assert record.read_text().split("\n")[:6] == [
        "s3",
        "sync",
        MODEL.storage_uri,
        str(model_dir),
        "--only-show-errors",
        "--endpoint-url",
    ]
    assert record.read_text().split("\n")[6] == "http://minio:9000"

    subprocess.run(["/bin/sh", "-ec", k8m.model_sync_script()], env=base_env, check=True)
    assert "--endpoint-url" not in record.read_text()

    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")  # a sync that fetched nothing must fail the pod
    (model_dir / "config.json").unlink()
    failed = subprocess.run(["/bin/sh", "-ec", k8m.model_sync_script()], env=base_env, capture_output=True, text=True)
    assert failed.returncode == 1 and "no config.json" in failed.stderr


def _assert_hardened(pod: dict, container: dict) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == mf.SERVER_UID
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True and security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # Read-only root: every cache goes to the scratch emptyDir; /dev/shm is memory-backed.
    assert volumes[mounts["/tmp"]]["emptyDir"] == {}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HOME"] == "/tmp" and env["HF_HOME"].startswith("/tmp/")


def test_serving_pods_run_non_root_read_only_with_shm_and_scratch(cfg: RunConfig, images: Path) -> None:
    _, runtime, service = schema.validate_all(ksm.render_kserve(cfg, MODEL))
    _assert_hardened(
        {**service["spec"]["predictor"], "volumes": runtime["spec"]["volumes"]}, runtime["spec"]["containers"][0]
    )
    assert runtime["spec"]["annotations"][mf.KNATIVE_PROGRESS_DEADLINE] == f"{cfg.serving.ready_timeout_s}s"

    deployment = schema.validate_all([k8m.render_deployment(cfg, MODEL)])[0]
    pod = deployment["spec"]["template"]["spec"]
    _assert_hardened(pod, _container(pod, "vllm"))
    assert _container(pod, "model-sync")["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["progressDeadlineSeconds"] >= cfg.serving.ready_timeout_s
    startup = _container(pod, "vllm")["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= cfg.serving.ready_timeout_s


def test_api_key_comes_from_a_secret_never_the_command_line(cfg: RunConfig, images: Path) -> None:
    cfg.serving.api_key_secret = "intentops-vllm"
    _, runtime, _ = ksm.render_kserve(cfg, MODEL)
    deployment = k8m.render_deployment(cfg, MODEL)
    for container in (runtime["spec"]["containers"][0], _container(deployment["spec"]["template"]["spec"], "vllm")):
        key = next(e for e in container["env"] if e["name"] == "VLLM_API_KEY")
        assert key == {
            "name": "VLLM_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "intentops-vllm", "key": "VLLM_API_KEY"}},
        }
        assert not any("api-key" in arg or "api_key" in arg for arg in container["args"])
    cfg.serving.api_key_secret = ""
    assert not any(e["name"] == "VLLM_API_KEY" for e in ksm.render_serving_runtime(cfg)["spec"]["containers"][0]["env"])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://seaweedfs.kubeflow:8333", {"serving.kserve.io/s3-endpoint": "seaweedfs.kubeflow:8333", "serving.kserve.io/s3-usehttps": "0"}),
        ("https://s3.eu-west-1.amazonaws.com", {"serving.kserve.io/s3-endpoint": "s3.eu-west-1.amazonaws.com", "serving.kserve.io/s3-usehttps": "1"}),
        ("minio:9000", {"serving.kserve.io/s3-endpoint": "minio:9000", "serving.kserve.io/s3-usehttps": "1"}),
    ],
)  # fmt: skip
def test_kserve_learns_the_s3_endpoint_from_annotations(
    url: str, expected: dict, cfg: RunConfig, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert mf.s3_endpoint_annotations(url) == expected
    for name in mf.S3_ENDPOINT_ENVS:
        monkeypatch.delenv(name, raising=False)
    assert "annotations" not in ksm.render_service_account(cfg)["metadata"]  # AWS S3 itself: nothing to say
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)  # what the deploy step's S3 secret sets
    account = schema.validate_all([ksm.render_service_account(cfg)])[0]
    assert account["metadata"]["annotations"] == expected


def test_shared_model_cache_volume_downloads_each_version_once(cfg: RunConfig, images: Path) -> None:
    cfg.serving.model_cache_pvc = "intentops-models"
    pod = schema.validate_all([k8m.render_deployment(cfg, MODEL)])[0]["spec"]["template"]["spec"]
    model_volume = next(v for v in pod["volumes"] if v["name"] == "model")
    assert model_volume == {"name": "model", "persistentVolumeClaim": {"claimName": "intentops-models"}}
    server = next(m for m in _container(pod, "vllm")["volumeMounts"] if m["name"] == "model")
    assert server == {"name": "model", "mountPath": "/mnt/models", "subPath": "intent-detector/7", "readOnly": True}
    env = {e["name"]: e["value"] for e in _container(pod, "model-sync")["env"]}
    assert env["MODEL_CACHE"] == "1" and env["MODEL_DIR"] == f"{mf.MODEL_CACHE_MOUNT}/intent-detector/7"


def test_model_sync_with_a_shared_cache_downloads_once_and_publishes_whole(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    stub = bin_dir / "aws"
    stub.write_text(
        f'#!/bin/sh\necho "$4" >> {calls}\ntouch "$4/config.json" "$4/model.safetensors"\n', encoding="utf-8"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    cache = tmp_path / "cache" / "intent-detector" / "7"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL_URI": MODEL.storage_uri, "MODEL_DIR": str(cache),
           "MODEL_CACHE": "1", "HOSTNAME": "pod-a"}  # fmt: skip
    for pod in ("pod-a", "pod-b"):
        subprocess.run(["/bin/sh", "-ec", k8m.model_sync_script()], env={**env, "HOSTNAME": pod}, check=True)
    assert calls.read_text().split() == [f"{cache}.partial-pod-a"]  # the second pod found it complete
    assert sorted(p.name for p in cache.iterdir()) == [mf.MODEL_COMPLETE_MARKER, "config.json", "model.safetensors"]
    assert sorted(p.name for p in cache.parent.iterdir()) == ["7"]  # no partial copy left behind
