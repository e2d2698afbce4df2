"""Cluster serving defaults: GPU configurations serve on KServe, and compile says so when one would serve locally."""

from __future__ import annotations

from pathlib import Path

import pytest

from intentops.cli import main
from intentops.cli.pipeline_build import local_serving_warning
from intentops.config import load_config

# The checkout (configs/ and manifests/ are not package data).
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["gpu-lora-1p5b.yaml", "multi-gpu-zero3-7b.yaml"])
def test_gpu_configs_serve_on_kserve(name: str) -> None:
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.serving.target == "kserve" and local_serving_warning(cfg) is None
    assert local_serving_warning(cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"target": "local"})}))


def test_compile_warns_when_a_pretrained_config_serves_locally(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    config = ROOT / "configs" / "gpu-lora-1p5b.yaml"
    code = main(["compile", "--out", str(tmp_path), "--config", str(config), "--set", "serving__target=local"])
    assert code == 0
    assert "serving.target=local" in capsys.readouterr().err
    main(["compile", "--out", str(tmp_path), "--config", str(config)])
    assert "warning" not in capsys.readouterr().err


# ---- cluster manifests (manifests/) ------------------------------------------------------------------------------------


def _build(folder: str) -> dict[tuple[str, str], dict]:
    import shutil
    import subprocess

    import yaml

    command = ["kustomize", "build"] if shutil.which("kustomize") else ["kubectl", "kustomize"]
    if not shutil.which(command[0]):
        pytest.skip("needs kustomize or kubectl to build manifests/")
    out = subprocess.run([*command, str(ROOT / "manifests" / folder)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.stdout) if o}


def _grants(role: dict) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_deployer_role_is_least_privilege() -> None:
    objects = _build("base")
    grants = _grants(objects["Role", "intentops-deployer"])
    assert grants == {
        ("serving.kserve.io", "inferenceservices", "get", ()),
        ("serving.kserve.io", "inferenceservices", "create", ()),
        ("serving.kserve.io", "inferenceservices", "patch", ()),
        ("serving.kserve.io", "inferenceservices", "delete", ()),
        ("serving.kserve.io", "servingruntimes", "create", ()),
        ("serving.kserve.io", "servingruntimes", "patch", ()),
        ("", "serviceaccounts", "patch", ("intentops-serving",)),
        ("", "secrets", "get", ("intentops-vllm",)),
    }
    # The account it may only patch exists from the manifests; no Deployment, Pod or account can be created.
    assert objects["ServiceAccount", "intentops-serving"]["secrets"] == [{"name": "intentops-s3"}]
    assert not [
        g for g in grants if g[1] in ("deployments", "pods") or (g[1] == "serviceaccounts" and g[2] == "create")
    ]
    k8s = _grants(_build("overlays/k8s-serving")["Role", "intentops-deployer"])
    assert ("apps", "deployments", "create", ()) in k8s and ("", "services", "delete", ()) in k8s
    assert not [g for g in k8s if g[1] == "secrets" and not g[3]]  # still no Secret beyond the named key


def test_mlflow_requires_login_and_keeps_secrets_off_the_command_line() -> None:
    mlflow = _build("base")["Deployment", "mlflow"]
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    command_line = " ".join(container["command"] + container["args"])
    assert "--app-name basic-auth" in command_line
    for secret in ("POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "$(POSTGRES"):
        assert secret not in command_line, secret
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "intentops-mlflow-auth"
    assert "$(POSTGRES_PASSWORD)" in env["MLFLOW_BACKEND_STORE_URI"]["value"]  # expanded by the kubelet, in env only
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_auth_config_the_server_writes_is_what_mlflow_reads(tmp_path) -> None:
    """Run the container's start-up script (with `mlflow` stubbed) and read the result with MLflow's own reader."""
    import subprocess

    container = _build("base")["Deployment", "mlflow"]["spec"]["template"]["spec"]["containers"][0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mlflow").write_text('#!/bin/sh\necho "$@" > "$ARGS_FILE"\n', encoding="utf-8")
    (bin_dir / "mlflow").chmod(0o755)
    ini = tmp_path / "basic_auth.ini"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow:hex0123@db:5432/mlflow",
        "MLFLOW_ALLOWED_HOSTS": "mlflow:5000",
        "ARGS_FILE": str(tmp_path / "args"),
    }
    subprocess.run([*container["command"], container["args"][0]], env=env, check=True)
    assert "hex0123" not in (tmp_path / "args").read_text()
    assert oct(ini.stat().st_mode & 0o777) == "0o600"
    import configparser

    # What mlflow.server.auth.config.read_auth_config parses (importing it needs the auth extra's Flask-WTF).
    parser = configparser.ConfigParser()
    parser.read(ini)
    assert parser["mlflow"]["database_uri"] == env["MLFLOW_BACKEND_STORE_URI"]
    assert parser["mlflow"]["default_permission"] == "READ" and "admin_password" not in parser["mlflow"]
