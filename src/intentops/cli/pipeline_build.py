"""Compile the IntentOps pipelines, and check arguments against a compiled package.

The pipeline code (the `components` and `pipelines` packages, installed with intentops) is imported only by the CLI,
with kfp, so the library itself stays free of KFP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from intentops.config import ConfigError, RunConfig

TRAINING = "training_pipeline"
RETRAIN = "retrain_if_changed"


class PipelineError(RuntimeError):
    """A pipeline command that cannot proceed; the message says what to do."""


# ---- the source checkout ----------------------------------------------------------------------------------------


def compile_pipeline(stem: str, path: Path, defaults: dict[str, Any] | None = None) -> Path:
    """Compile `stem` (training_pipeline or retrain_if_changed) to `path`."""
    from pipelines.compile import compile_pipeline as compile_one

    return compile_one(stem, path, defaults)


def portable_arguments(cfg: RunConfig) -> dict[str, Any]:
    """The configuration as pipeline arguments that hold no machine-local paths."""
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
