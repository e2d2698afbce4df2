"""A non-editable wheel is complete: intentops, components and pipelines import from it, the bundled defaults are
package data, and it compiles the same pipelines as the checkout (what the trainer image installs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

BUNDLED = [
    "intentops/resources/configs/tiny-cpu.yaml",
    "intentops/resources/configs/gpu-lora-1p5b.yaml",
    "intentops/resources/configs/multi-gpu-zero3-7b.yaml",
    "intentops/resources/configs/deepspeed/zero2.json",
    "intentops/resources/configs/deepspeed/zero3.json",
    "intentops/resources/examples/assistant/catalog.yaml",
    "intentops/resources/examples/assistant/manifest.jsonl",
    "intentops/resources/examples/assistant/records.jsonl",
    "intentops/resources/images/versions.env",
    "intentops/serving/schemas/",
    "components/resolve_config/component.py",
    "pipelines/training_pipeline.py",
]

CHECK = """
import json, sys
from pathlib import Path
import components, intentops, pipelines
from intentops.config import RESOURCES, load_config
from pipelines.compile import compile_all

site = Path(sys.argv[1])
for module in (intentops, components, pipelines):
    assert Path(module.__file__).is_relative_to(site), module.__file__
cfg = load_config()
assert Path(cfg.data.manifest).is_file() and Path(cfg.data.manifest).is_relative_to(site), cfg.data.manifest
big = load_config(RESOURCES / "configs" / "multi-gpu-zero3-7b.yaml")
assert Path(big.sft.deepspeed).is_file(), big.sft.deepspeed
print(json.dumps([str(path) for path in compile_all(sys.argv[2])]))
"""


# What the wheel is built from (images/build.sh builds it from the checkout for the images).
BUILD_INPUTS = ["pyproject.toml", "README.md", "src", "components", "pipelines", "configs", "examples/assistant"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build from a copy of exactly those inputs (pip builds in the source tree; the checkout stays clean)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    (source / "images").mkdir()
    shutil.copy2(ROOT / "images" / "versions.env", source / "images" / "versions.env")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        timeout=300,
        cwd=out,
    )
    (path,) = out.glob("intentops-*.whl")
    return path


def test_wheel_ships_the_packages_and_the_bundled_defaults(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for expected in BUNDLED:
        assert any(name.startswith(expected) for name in names), expected
    assert not [name for name in names if name.startswith(("tests/", "bench/", "src/"))]


def test_installed_wheel_needs_no_checkout_and_compiles_the_committed_pipelines(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(site), str(tmp_path / "compiled")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # no checkout anywhere near
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for stem in ("training_pipeline", "retrain_if_changed"):
        built = list(yaml.safe_load_all((tmp_path / "compiled" / f"{stem}.yaml").read_text(encoding="utf-8")))
        committed = list(yaml.safe_load_all((ROOT / "pipelines" / f"{stem}.yaml").read_text(encoding="utf-8")))
        assert built == committed, f"the wheel compiles a different {stem}.yaml than the checkout"
