"""Cluster serving defaults: GPU configurations serve on KServe, and compile says so when one would serve locally."""

from __future__ import annotations

import pytest

from intentops.cli import main
from intentops.cli.pipeline_build import local_serving_warning
from intentops.config import PROJECT_ROOT, load_config


@pytest.mark.parametrize("name", ["gpu-lora-1p5b.yaml", "multi-gpu-zero3-7b.yaml"])
def test_gpu_configs_serve_on_kserve(name: str) -> None:
    cfg = load_config(PROJECT_ROOT / "configs" / name)
    assert cfg.serving.target == "kserve" and local_serving_warning(cfg) is None
    assert local_serving_warning(cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"target": "local"})}))


def test_compile_warns_when_a_pretrained_config_serves_locally(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    config = PROJECT_ROOT / "configs" / "gpu-lora-1p5b.yaml"
    code = main(["compile", "--out", str(tmp_path), "--config", str(config), "--set", "serving__target=local"])
    assert code == 0
    assert "serving.target=local" in capsys.readouterr().err
    main(["compile", "--out", str(tmp_path), "--config", str(config)])
    assert "warning" not in capsys.readouterr().err
