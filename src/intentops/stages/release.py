"""Release stages: register-model and deploy-vllm."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from intentops.artifacts import (
    GateResult,
)
from intentops.config import RunConfig
from intentops.stages._timing import timed as _timed

log = logging.getLogger(__name__)


def register_model(
    cfg: RunConfig,
    model_dir: str | Path,
    evaluation_dir: str | Path,
    decision_dir: str | Path,
    dataset_dir: str | Path,
    pipeline_run_id: str,
) -> tuple[Any, dict[str, Any]]:
    """Register the candidate (@challenger; @champion when the gate passed); returns (version, UI metadata)."""
    with _timed({}) as meta:
        from intentops.registry import register_model as register
        from intentops.stages.training import resolved_model

        version = register(
            resolved_model(cfg, model_dir),
            cfg,
            pipeline_run_id=pipeline_run_id,
            eval_dir=evaluation_dir,
            gate_path=GateResult(decision_dir).json_path,
            dataset_manifest=dataset_dir,
        )
        meta.update(
            name=version.name,
            version=version.version,
            aliases=",".join(version.aliases),
            model_uri=version.model_uri,
            previous_champion=version.previous_champion or "",
        )
    return version, meta


def deploy_vllm(cfg: RunConfig, version: str, pipeline_run_id: str | None = None) -> tuple[dict[str, Any], dict]:
    """Deploy a registered version on `serving.target`; returns (deployment summary, UI metadata).

    The `local` target's server is stopped after its smoke test, so a pipeline step never leaves a process behind.
    """
    target = cfg.serving.target
    local = target == "local"
    with _timed({}) as meta:
        import mlflow

        from intentops.serving.deploy import deploy, stop_local
        from intentops.tracking import stage_run

        with stage_run("deploy-vllm", cfg, pipeline_run_id, params={"target": target, "version": version}):
            try:
                result = deploy(cfg, version=version, target=target, record=not local)
            finally:
                stopped = stop_local() if local else None
            summary = {**result.to_dict(), "stopped_after_smoke_test": stopped is not None}
            mlflow.log_dict(summary, "deployment.json")
            mlflow.log_metrics({"smoke_valid_share": result.smoke.valid_share, "smoke_accuracy": result.smoke.accuracy})
        meta.update(
            target=target,
            version=version,
            endpoint=result.endpoint,
            smoke_valid_share=result.smoke.valid_share,
            smoke_accuracy=result.smoke.accuracy,
            previous_version=result.previous_version or "",
            stopped_after_smoke_test=stopped is not None,
        )
    return summary, meta
