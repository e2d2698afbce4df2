"""images/ (one pinned versions file, Dockerfiles, build script) and manifests/ (kustomize + schema validation)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from intentops.images import image_pins, is_pinned

ROOT = Path(__file__).resolve().parents[1]

IMAGES = ROOT / "images"
MANIFESTS = ROOT / "manifests"
VERSIONS = image_pins(IMAGES / "versions.env")
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
KUSTOMIZATIONS = [MANIFESTS / "base", *sorted(p for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())]
KUBERNETES_VERSION = "1.30"


def test_every_image_in_versions_env_isis_pinned():
    images = {key: value for key, value in VERSIONS.items() if key.endswith("_IMAGE")}
    assert {"TRAINER_IMAGE", "SERVER_IMAGE", "VLLM_IMAGE", "PYTORCH_IMAGE", "MLFLOW_SERVER_IMAGE"} <= set(images)
    for key, image in images.items():
        assert is_pinned(image), f"{key}={image} is not pinned to an explicit tag"
        assert "$" not in image, f"{key}: unresolved reference"
    assert VERSIONS["VLLM_IMAGE"].startswith("vllm/vllm-openai:v")
    assert not re.search(r":latest\b", (IMAGES / "versions.env").read_text())


@pytest.mark.parametrize("overrides", [{}, {"IMAGE_REGISTRY": "registry.example:5000/team", "IMAGE_TAG": "t1"}])
def test_bash_and_python_read_versions_env_the_same_way(overrides, monkeypatch):
    """build.sh's tags (bash `source`, its IMAGE_TAG default) are the images intentops.images gives compile."""
    for key in ("IMAGE_REGISTRY", "IMAGE_TAG", "TRAINER_IMAGE", "SERVER_IMAGE", "MLFLOW_SERVER_IMAGE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in overrides.items():
        monkeypatch.setenv(key, value)
    python = image_pins(IMAGES / "versions.env")
    out = subprocess.run(
        ["bash", str(IMAGES / "build.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"], **overrides},
    ).stdout
    tags = {line.split("--tag ")[1].split()[0] for line in out.splitlines() if line.startswith("docker build")}
    assert tags == {python["TRAINER_IMAGE"], python["SERVER_IMAGE"], python["MLFLOW_SERVER_IMAGE"]}
    script = f"export IMAGE_TAG=t; set -a; source {IMAGES / 'versions.env'}; env -0"
    raw = subprocess.run(["bash", "-c", script], capture_output=True, check=True, env={"PATH": os.environ["PATH"]})
    bash = dict(item.split("=", 1) for item in raw.stdout.decode().split("\0") if "=" in item)
    monkeypatch.setenv("IMAGE_TAG", "t")
    monkeypatch.delenv("IMAGE_REGISTRY", raising=False)
    for key, value in image_pins(IMAGES / "versions.env").items():
        assert bash[key] == value, key


def test_image_tag_follows_the_git_commit_and_the_environment(monkeypatch):
    for key in ("IMAGE_REGISTRY", "IMAGE_TAG", "TRAINER_IMAGE"):
        monkeypatch.delenv(key, raising=False)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    pins = image_pins(IMAGES / "versions.env")
    assert pins["TRAINER_IMAGE"] == f"ghcr.io/intentops/intentops-trainer:{pins['INTENTOPS_VERSION']}-g{head}"
    assert pins["SERVER_IMAGE"].endswith(f":{pins['INTENTOPS_VERSION']}-g{head}")
    monkeypatch.setenv("IMAGE_REGISTRY", "x")
    monkeypatch.setenv("IMAGE_TAG", "rc1")
    pins = image_pins(IMAGES / "versions.env")
    assert pins["TRAINER_IMAGE"] == "x/intentops-trainer:rc1"
    assert pins["MLFLOW_SERVER_IMAGE"] == f"x/intentops-mlflow:{pins['MLFLOW_VERSION']}"
    assert pins["VLLM_IMAGE"].startswith("vllm/")  # upstream images keep their registry
    digest = "x/intentops-trainer@sha256:" + "0" * 64
    monkeypatch.setenv("TRAINER_IMAGE", digest)
    assert image_pins(IMAGES / "versions.env")["TRAINER_IMAGE"] == digest
    monkeypatch.setenv("TRAINER_IMAGE", "x/intentops-trainer")
    with pytest.raises(ValueError, match="TRAINER_IMAGE=x/intentops-trainer: an image override needs"):
        image_pins(IMAGES / "versions.env")


def test_versions_env_version_is_the_package_version():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert VERSIONS["INTENTOPS_VERSION"] == project["version"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_bases_come_from_versions_env(dockerfile):
    text = dockerfile.read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert froms, dockerfile
    declared = re.findall(r"^ARG\s+(\w+)(=.*)?$", text, flags=re.MULTILINE)
    assert not [name for name, default in declared if default], f"{dockerfile}: ARG defaults would bypass versions.env"
    for base in froms:
        match = re.fullmatch(r"\$\{(\w+)\}", base)
        assert match, f"{dockerfile}: FROM {base} must be an ARG filled from images/versions.env"
        assert is_pinned(VERSIONS[match.group(1)])
    for name, _ in declared:
        assert name in VERSIONS, f"{dockerfile}: ARG {name} has no pin in versions.env"
    assert not re.search(r":latest\b", text)


def test_build_script_passes_every_pin_and_tags_the_pinned_names():
    out = subprocess.run(
        ["bash", str(IMAGES / "build.sh"), "--dry-run"], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    builds = [line for line in out.splitlines() if line.startswith("docker build")]
    pushes = [line.split()[-1] for line in out.splitlines() if line.startswith("docker push")]
    assert len(builds) == len(DOCKERFILES)
    tags = {"trainer": "TRAINER_IMAGE", "server": "SERVER_IMAGE", "mlflow": "MLFLOW_SERVER_IMAGE"}
    for dockerfile in DOCKERFILES:
        line = next(line for line in builds if f"{dockerfile}" in line)
        for name in re.findall(r"^ARG\s+(\w+)", dockerfile.read_text(), flags=re.MULTILINE):
            assert f"--build-arg {name}={VERSIONS[name]}" in line, (dockerfile, name)
        assert f"--tag {VERSIONS[tags[dockerfile.parent.name]]}" in line
    assert sorted(pushes) == sorted(VERSIONS[tag] for tag in tags.values())
    bad = subprocess.run(["bash", str(IMAGES / "build.sh"), "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument 'nope'" in bad.stderr


def test_components_and_manifests_use_the_same_pins():
    from components._common import TRAINER_IMAGE

    assert VERSIONS["TRAINER_IMAGE"] == TRAINER_IMAGE
    images = {
        container["image"]
        for objects in map(_kustomize, KUSTOMIZATIONS)
        for obj in objects
        for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    }
    assert images == {VERSIONS["MLFLOW_SERVER_IMAGE"], VERSIONS["POSTGRES_IMAGE"]}


# ---- manifests -------------------------------------------------------------------------------------------------


def _kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    message = "needs `kustomize` (v4.2+) or `kubectl` >= 1.22 on PATH to build manifests/"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _kustomize(folder: Path) -> list[dict]:
    out = subprocess.run([*_kustomize_command(), str(folder)], capture_output=True, text=True)
    assert out.returncode == 0, f"kustomize build {folder}: {out.stderr}"
    return [obj for obj in yaml.safe_load_all(out.stdout) if obj]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomize_builds_and_every_object_passes_schema_validation(folder):
    import kubernetes_validate

    objects = _kustomize(folder)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "intentops", obj["metadata"]["name"]
        if obj["kind"] != "Namespace":
            # The multi-node trainer's Role lives where the pipeline pods run, not in the serving namespace.
            expected = "kubeflow" if obj["metadata"]["name"] == "intentops-trainer" else "intentops"
            assert obj["metadata"]["namespace"] == expected, obj["metadata"]["name"]


def test_schema_validation_rejects_a_broken_object():
    import kubernetes_validate

    deployment = next(obj for obj in _kustomize(MANIFESTS / "base") if obj["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["replicas"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _by_kind(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def test_mlflow_server_uses_postgres_and_serves_s3_artifacts():
    objects = _by_kind(_kustomize(MANIFESTS / "base"))
    container = objects["Deployment", "mlflow"]["spec"]["template"]["spec"]["containers"][0]
    script = container["args"][0]
    assert "--serve-artifacts" in script and "POSTGRES_PASSWORD" not in script  # store URI comes from the environment
    assert objects["ConfigMap", "mlflow-config"]["data"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    env = {item["name"]: item.get("valueFrom") or item.get("value") for item in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert env["POSTGRES_PASSWORD"]["secretKeyRef"]["name"] == "intentops-postgres"
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"] == {
        "name": "intentops-s3",
        "key": "AWS_SECRET_ACCESS_KEY",
        "optional": True,
    }
    assert ("StatefulSet", "intentops-postgres") in objects
    assert objects["Service", "mlflow"]["spec"]["ports"][0]["port"] == 5000


def test_pipeline_runner_may_deploy_models_and_nothing_cluster_wide():
    objects = _by_kind(_kustomize(MANIFESTS / "base"))
    role = objects["Role", "intentops-deployer"]
    allowed = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for verb in ("create", "patch", "get", "delete"):
        assert ("serving.kserve.io", "inferenceservices", verb) in allowed
    assert ("serving.kserve.io", "servingruntimes", "patch") in allowed
    # tests/test_serving_cluster.py checks the least-privilege rules (no Deployments, one named Secret).
    binding = objects["RoleBinding", "intentops-deployer"]
    assert binding["roleRef"]["name"] == "intentops-deployer"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]
    assert not [key for key in objects if key[0].startswith("Cluster")]


def test_multi_node_training_may_run_trainjobs_and_read_their_logs_only():
    objects = _by_kind(_kustomize(MANIFESTS / "overlays" / "multi-node-training"))
    rules = objects[("Role", "intentops-trainer")]["rules"]
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("trainer.kubeflow.org", "trainjobs"): {"get", "create", "patch"},
        ("", "pods"): {"get", "list"},
        ("", "pods/log"): {"get"},
    }
    binding = objects[("RoleBinding", "intentops-trainer")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]


def test_overlays_change_what_they_say():
    gpu = _by_kind(_kustomize(MANIFESTS / "overlays" / "gpu-pool"))
    assert gpu["ResourceQuota", "intentops-gpu-budget"]["spec"]["hard"]["requests.nvidia.com/gpu"] == "8"
    managed = _by_kind(_kustomize(MANIFESTS / "overlays" / "managed-postgres"))
    assert ("StatefulSet", "intentops-postgres") not in managed
    assert ("Service", "intentops-postgres") not in managed
    assert managed["ConfigMap", "mlflow-config"]["data"]["POSTGRES_HOST"] != "intentops-postgres"
    assert managed["Deployment", "mlflow"]["spec"]["replicas"] == 2


def test_images_install_the_wheel_build_sh_builds_not_the_checkout():
    out = subprocess.run(
        ["bash", str(IMAGES / "build.sh"), "--dry-run", "--no-push", "server"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wheel_line = next(line for line in out.splitlines() if "pip wheel" in line)
    assert wheel_line.split()[-1] == str(ROOT) and f"--wheel-dir {ROOT}/dist/images" in wheel_line
    assert out.index("pip wheel") < out.index("docker build")
    for name in ("trainer", "server"):
        text = (IMAGES / name / "Dockerfile").read_text(encoding="utf-8")
        assert "COPY dist/images/intentops-*.whl /tmp/wheels/" in text, name
        assert not re.search(r"pip install[^\n]*(-e |--editable)", text), f"{name}: editable install"
        assert not re.search(r"^COPY (src|components|pipelines|configs|examples)\b", text, flags=re.MULTILINE), name
        ignore = (IMAGES / name / "Dockerfile.dockerignore").read_text(encoding="utf-8")
        assert "!dist/images/intentops-*.whl" in ignore, name


def test_compile_names_the_registry_and_tag_of_the_environment(tmp_path):
    """`IMAGE_REGISTRY=x intentops compile`: every executor of every compiled pipeline runs x/...:<IMAGE_TAG>."""
    env = {**os.environ, "IMAGE_REGISTRY": "x", "IMAGE_TAG": "0.1.0-gabc", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    env.pop("TRAINER_IMAGE", None)
    script = "import sys; from intentops.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run(
        [sys.executable, "-c", script, "compile", "--out", str(tmp_path)], env=env, check=True, capture_output=True
    )
    compiled = sorted(tmp_path.glob("*.yaml"))
    assert [path.name for path in compiled] == ["retrain_if_changed.yaml", "training_pipeline.yaml"]
    for path in compiled:
        spec = next(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        images = [executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()]
        assert images and set(images) == {"x/intentops-trainer:0.1.0-gabc"}, path.name


def test_build_prints_the_pushed_digest_that_compile_accepts(tmp_path, monkeypatch):
    """After a push build.sh prints VAR=name@sha256:... for its own registry; exported, compile pins that digest."""
    digest = "sha256:" + "ab" * 32
    fake = tmp_path / "docker"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {tmp_path}/calls\n'
        'if [[ "$1 $2" == "image inspect" ]]; then\n'
        f'  echo "mirror.example/intentops-mlflow@sha256:{"cd" * 32}"\n'
        f'  echo "${{@: -1}}" | sed "s/:[^:/]*$/@{digest}/"\n'
        "fi\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "IMAGE_REGISTRY": "reg.example:5000/team", "IMAGE_TAG": "t"}
    out = subprocess.run(
        ["bash", str(IMAGES / "build.sh"), "mlflow"], capture_output=True, text=True, check=True, env=env
    ).stdout
    line = f"MLFLOW_SERVER_IMAGE=reg.example:5000/team/intentops-mlflow@{digest}"
    assert out.splitlines()[-1] == line
    calls = (tmp_path / "calls").read_text(encoding="utf-8").splitlines()
    assert calls[1] == f"push reg.example:5000/team/intentops-mlflow:{VERSIONS['MLFLOW_VERSION']}"
    monkeypatch.setenv(*line.split("=", 1))
    assert image_pins(IMAGES / "versions.env")["MLFLOW_SERVER_IMAGE"] == line.split("=", 1)[1]
