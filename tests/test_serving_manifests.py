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
    account, runtime, _ = mf.validate_all(mf.render_kserve(cfg, MODEL))
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
    service = mf.render_inference_service(cfg, MODEL)
    mf.validate_manifest(service)
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
    assert annotations[mf.KSERVE_DEPLOYMENT_MODE] == "Serverless"

    canary = mf.render_inference_service(cfg, MODEL, canary_percent=15)
    mf.validate_manifest(canary)
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 15
    with pytest.raises(mf.ManifestError, match=r"outside 0\.\.100"):
        mf.render_inference_service(cfg, MODEL, canary_percent=120)


def test_tensor_parallel_follows_gpu_count(cfg: RunConfig, images: Path) -> None:
    runtime = mf.render_serving_runtime(cfg, mf.Resources(gpus=4))
    container = runtime["spec"]["containers"][0]
    assert "--tensor-parallel-size=4" in container["args"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "4"


def test_plain_kubernetes_bundle_syncs_from_s3_and_probes_health(cfg: RunConfig, images: Path) -> None:
    service, version_service, deployment = mf.validate_all(mf.render_k8s(cfg, MODEL, replicas=2))
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
    assert mf.service_url(cfg) == "http://intent-detector.serving.svc.cluster.local:80/v1"


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_schema_validation_rejects_typos_and_bad_values(cfg: RunConfig, images: Path) -> None:
    service = mf.render_inference_service(cfg, MODEL, canary_percent=10)
    service["spec"]["predictor"]["canaryTraficPercent"] = service["spec"]["predictor"].pop("canaryTrafficPercent")
    with pytest.raises(mf.ManifestError, match="canaryTraficPercent"):
        mf.validate_manifest(service)

    service = mf.render_inference_service(cfg, MODEL)
    service["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] = ["1"]
    with pytest.raises(mf.ManifestError, match=r"spec\.predictor\.model\.resources\.limits"):
        mf.validate_manifest(service)

    service = mf.render_inference_service(cfg, MODEL)
    del service["spec"]["predictor"]["model"]["modelFormat"]
    with pytest.raises(mf.ManifestError, match="modelFormat"):
        mf.validate_manifest(service)

    runtime = mf.render_serving_runtime(cfg)
    runtime["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/health", "port": 8080}}
    with pytest.raises(mf.ManifestError, match="readinesProbe"):
        mf.validate_manifest(runtime)

    deployment = mf.render_deployment(cfg, MODEL)
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(mf.ManifestError, match=r"Deployment/intent-detector-v7 .*spec\.replicas"):
        mf.validate_manifest(deployment)


def test_names_must_be_dns_labels(cfg: RunConfig, images: Path) -> None:
    cfg.serving.service_name = "Intent_Detector"
    with pytest.raises(mf.ManifestError, match="DNS-1035"):
        mf.render_inference_service(cfg, MODEL)


def test_image_pins_come_from_versions_env_unless_overridden(cfg: RunConfig, images: Path) -> None:
    assert mf.vllm_image(cfg) == "vllm/vllm-openai:v0.11.0"
    cfg.serving.vllm_image = "registry.local/vllm:custom"
    assert mf.vllm_image(cfg) == "registry.local/vllm:custom"
    images.write_text("VLLM_IMAGE=vllm/vllm-openai:v0.11.0\n", encoding="utf-8")
    with pytest.raises(mf.ManifestError, match=f"{images}: no AWS_CLI_IMAGE"):
        mf.render_deployment(cfg, MODEL)


def test_repository_pins_the_serving_images() -> None:
    """images/versions.env (interpolated like dotenv does) pins both images the manifests use, never `latest`."""
    for variable in (mf.VLLM_IMAGE_VAR, mf.AWS_CLI_IMAGE_VAR):
        image = mf.pinned_image(variable)
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image


def test_yaml_stream_round_trips(cfg: RunConfig, images: Path) -> None:
    objs = mf.render_kserve(cfg, MODEL, canary_percent=5) + mf.render_k8s(cfg, MODEL)
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
        ["/bin/sh", "-ec", mf.model_sync_script()],
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

    subprocess.run(["/bin/sh", "-ec", mf.model_sync_script()], env=base_env, check=True)
    assert "--endpoint-url" not in record.read_text()

    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")  # a sync that fetched nothing must fail the pod
    (model_dir / "config.json").unlink()
    failed = subprocess.run(["/bin/sh", "-ec", mf.model_sync_script()], env=base_env, capture_output=True, text=True)
    assert failed.returncode == 1 and "no config.json" in failed.stderr
