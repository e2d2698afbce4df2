"""Compile the IntentOps pipelines from the source checkout, and check arguments against a compiled package.

The pipeline code (components/, pipelines/) lives next to src/ in the source checkout; only the CLI imports it, and
kfp, so the library itself stays free of KFP.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from intentops.config import PROJECT_ROOT, ConfigError, RunConfig

TRAINING = "training_pipeline"
RETRAIN = "retrain_if_changed"


class PipelineError(RuntimeError):
    """A pipeline command that cannot proceed; the message says what to do."""


# ---- the source checkout ----------------------------------------------------------------------------------------


def use_checkout() -> Path:
    """Make components/ and pipelines/ importable (they live in the source checkout, next to src/)."""
    missing = [name for name in ("components", "pipelines") if not (PROJECT_ROOT / name / "__init__.py").is_file()]
    if missing:
        raise PipelineError(
            f"{PROJECT_ROOT}: no {' and no '.join(f'{name}/' for name in missing)} here; the pipeline commands need "
            "the IntentOps source checkout (git clone, then `pip install -e .`)"
        )
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    return PROJECT_ROOT


def compile_pipeline(stem: str, path: Path, defaults: dict[str, Any] | None = None) -> Path:
    """Regenerate the resolve-config component if config.py changed, then compile `stem` to `path`."""
    use_checkout()
    from components.resolve_config import generate

    if generate.write_if_stale():
        # A long-lived process (a notebook, the tests) may hold the old modules: compile from the new source.
        for name in (
            "components.resolve_config.component",
            "pipelines.training_pipeline",
            "pipelines.retrain_if_changed",
        ):
            if name in sys.modules:
                importlib.reload(sys.modules[name])
    from pipelines.compile import compile_pipeline as compile_one

    return compile_one(stem, path, defaults)


def portable_arguments(cfg: RunConfig) -> dict[str, Any]:
    """The configuration as pipeline arguments that hold no machine-local paths."""
    use_checkout()
    from pipelines.parameters import pipeline_arguments

    return pipeline_arguments(cfg)


def checked_arguments(package: Path, arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments restricted to what the compiled pipeline declares; anything else is an error naming it."""
    import yaml

    spec = next(yaml.safe_load_all(package.read_text(encoding="utf-8")))
    declared = set(spec["root"]["inputDefinitions"]["parameters"])
    unknown = sorted(set(arguments) - declared)
    if unknown:
        raise ConfigError(f"{package}: the pipeline has no parameter {', '.join(unknown)}")
    return arguments


def local_serving_warning(cfg: RunConfig) -> str | None:
    """A warning when a pretrained (GPU) configuration would serve with the local MLflow server.

    The pipeline's deploy step would then run MLflow's model server inside its own small pod instead of rolling the
    model out on vLLM; cluster configurations serve with `serving.target=kserve` (or `k8s`).
    """
    if cfg.model.profile == "pretrained" and cfg.serving.target == "local":
        return (
            f"model.profile=pretrained ({cfg.model.base_model or 'no base_model'}) with serving.target=local: the "
            "pipeline's deploy step would serve it with MLflow's model server inside its own pod; set "
            "serving.target=kserve (or k8s) to serve it on vLLM"
        )
    return None
