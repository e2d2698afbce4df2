"""images/constraints.txt pins every Python package of the images; vLLM's pin suits TRL (rollouts) and serving."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from intentops.images import image_pins

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
LOCK = IMAGES / "constraints.txt"
PINS = image_pins(IMAGES / "versions.env")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
IMAGE_EXTRAS = ("train", "serve")  # `dev` (pytest, ruff, moto) is never installed in an image


def _lock_script():
    """images/lock.py (a script, not a package): its PINNED is what the lock was resolved with."""
    spec = importlib.util.spec_from_file_location("images_lock", IMAGES / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PINNED: dict[str, str] = _lock_script().PINNED


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(LOCK.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"{LOCK.name}:{number}: {line!r} is not name==version"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{LOCK.name}:{number}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


LOCKED = _lock()


def _image_requirements() -> list[Requirement]:
    named = [*PROJECT["dependencies"]]
    for extra in IMAGE_EXTRAS:
        named += PROJECT["optional-dependencies"][extra]
    return [Requirement(text) for text in named]


def test_lock_pins_every_dependency_named_in_pyproject_within_its_range():
    requirements = _image_requirements()
    assert len(requirements) > 20
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in LOCKED, f"{name} (pyproject.toml) is not pinned in images/constraints.txt"
        assert Version(LOCKED[name]) in requirement.specifier, f"{name}=={LOCKED[name]} outside {requirement}"
        assert not requirement.extras, f"{requirement}: the packages of an extra are not checked here"


def test_lock_agrees_with_every_version_pinned_in_versions_env():
    for variable, package in PINNED.items():
        assert LOCKED[package] == PINS[variable], f"{variable}={PINS[variable]} but the lock pins {LOCKED[package]}"
    assert "intentops" not in LOCKED, "the images install the wheel build.sh builds, not a locked intentops"
    assert not [name for name, version in LOCKED.items() if Version(version).local], "local builds (+cpu) in the lock"


def test_lock_includes_what_the_pinned_packages_need():
    """The resolver's output, not a hand list: vLLM's and TRL's own dependencies are there."""
    for name in ("xgrammar", "datasets", "huggingface-hub", "safetensors", "tokenizers", "botocore"):
        assert name in LOCKED, name


@pytest.mark.parametrize("dockerfile", sorted(IMAGES.glob("*/Dockerfile")), ids=lambda p: p.parent.name)
def test_every_package_a_dockerfile_names_is_locked_at_its_versions_env_pin(dockerfile):
    named = re.findall(r'"([A-Za-z0-9][A-Za-z0-9._-]*)==\$\{(\w+)\}"', dockerfile.read_text(encoding="utf-8"))
    for package, variable in named:
        name = canonicalize_name(package)
        assert LOCKED.get(name) == PINS[variable], (
            f"{dockerfile}: {package}==${{{variable}}} vs lock {LOCKED.get(name)}"
        )
        assert PINNED.get(variable) == name, f"images/lock.py does not resolve with {variable} ({package})"


@pytest.mark.parametrize("dockerfile", sorted(IMAGES.glob("*/Dockerfile")), ids=lambda p: p.parent.name)
def test_every_pip_install_in_the_images_is_constrained_by_the_lock(dockerfile):
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    installs = re.findall(r"pip install[^&\n]*", text)
    assert installs, dockerfile
    for install in installs:
        assert re.search(r"(--constraint|-c) /\S+/constraints\.txt", install), f"{dockerfile}: {install}"
    assert "COPY images/constraints.txt " in text
    ignore = dockerfile.with_name("Dockerfile.dockerignore").read_text(encoding="utf-8")
    assert "!images/constraints.txt" in ignore.splitlines()


def _trl_vllm_range() -> SpecifierSet:
    """The vLLM range TRL declares in trl/import_utils.py (`is_vllm_available`), read from the installed source."""
    origin = importlib.util.find_spec("trl.import_utils").origin
    source = Path(origin).read_text(encoding="utf-8")
    match = re.search(r'Version\("([\d.]+)"\)\s*<=\s*_vllm_base_version\s*<=\s*Version\("([\d.]+)"\)', source)
    assert match, f"{origin}: no vLLM version check found; read how TRL declares its range"
    return SpecifierSet(f">={match.group(1)},<={match.group(2)}")


def test_pinned_vllm_is_in_the_range_the_pinned_trl_supports():
    trl = importlib.metadata.version("trl")
    assert trl == PINS["TRL_VERSION"], "the installed TRL is not the one the images pin"
    supported = _trl_vllm_range()
    vllm = Version(PINS["VLLM_VERSION"])
    assert Version(vllm.base_version) in supported, f"vLLM {vllm} outside TRL {trl}'s {supported}"
    assert Version(LOCKED["vllm"]) in supported
    assert PINS["VLLM_IMAGE"].endswith(f":v{PINS['VLLM_VERSION']}"), "serving and rollouts run the same vLLM"


def test_pinned_vllm_constraints_hold_in_the_lock():
    """vLLM pins torch exactly and bounds transformers; the images must install what it was built for."""
    assert LOCKED["torch"] == PINS["TORCH_VERSION"]
    assert PINS["PYTORCH_IMAGE"].startswith(f"pytorch/pytorch:{PINS['TORCH_VERSION']}-")


def test_trainer_base_image_has_the_cuda_major_vllm_was_built_for():
    """vLLM's wheel brings CUDA libraries of one major (cuda-bindings); torch in the base image must match it."""
    vllm_cuda = Version(LOCKED["cuda-bindings"]).major
    assert Version(PINS["CUDA_VERSION"]).major == vllm_cuda, (
        f"vLLM wants CUDA {vllm_cuda}, base is {PINS['CUDA_VERSION']}"
    )
    assert f"-cuda{PINS['CUDA_VERSION']}-" in PINS["PYTORCH_IMAGE"]


# vLLM's OpenAI server took `structured_outputs` (ChatCompletionRequest / CompletionRequest, StructuredOutputsParams)
# in 0.10.2, replacing the `guided_*` fields; docs/cluster.md "Images and versions" cites the source.
STRUCTURED_OUTPUTS_SINCE = Version("0.10.2")


def test_serving_vllm_takes_the_structured_outputs_request_field_the_client_sends():
    from intentops.serving import client

    source = Path(client.__file__).read_text(encoding="utf-8")
    assert 'extra_body={"structured_outputs":' in source, "the client no longer sends structured_outputs: revisit"
    served = Version(PINS["VLLM_IMAGE"].rpartition(":v")[2])
    assert served >= STRUCTURED_OUTPUTS_SINCE, f"{PINS['VLLM_IMAGE']} predates the structured_outputs field"
