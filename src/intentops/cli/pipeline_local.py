"""`intentops run`: execute a compiled pipeline on this machine with kfp.local's SubprocessRunner.

Every stage is a subprocess of this Python environment, the DAG and its dsl.If exactly as compiled; MLflow runs on
a sqlite store in the work folder unless a tracking URI is given.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from intentops.cli.pipeline_build import TRAINING, PipelineError, compile_pipeline
from intentops.config import RunConfig
from intentops.run_summary import RunSummary, summarize_run, task_outputs
from intentops.stages import FAST_EXIT_ENV

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = "intentops-run"


def local_tracking(cfg: RunConfig, tracking_uri: str | None, workdir: Path) -> RunConfig:
    """Use the given tracking URI, else the config's, else a sqlite store in the work folder (never an ambient
    $MLFLOW_TRACKING_URI: a demo run must not register a tiny model in a team registry by accident)."""
    uri = tracking_uri or cfg.registry.tracking_uri
    if uri:
        return RunConfig.from_flat({"registry__tracking_uri": uri}, base=cfg)
    import mlflow

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    if client.get_experiment_by_name(cfg.registry.experiment) is None:
        # Keep run and model artifacts in the work folder too (the default would be ./mlruns of the cwd).
        client.create_experiment(cfg.registry.experiment, artifact_location=(workdir / "mlartifacts").as_uri())
    return RunConfig.from_flat({"registry__tracking_uri": uri}, base=cfg)


@dataclass(frozen=True)
class LocalRun:
    """Where a local run left its outputs, how long it took and which MLflow it used."""

    run_dir: Path
    wall_seconds: float
    tracking_uri: str


def execute_local(stem: str, cfg: RunConfig, workdir: Path, tracking_uri: str | None = None) -> LocalRun:
    """Compile pipeline `stem`, then execute that YAML with kfp.local's SubprocessRunner in this environment."""
    import kfp.local
    from kfp import components

    # Stages are subprocesses that inherit this environment. MLflow's usage telemetry would start a sender thread in
    # each of them that, offline, holds up interpreter exit: pure orchestration overhead.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Stages download their inputs file by file: one progress bar per file is noise in the log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # transformers' per-file bars ("Loading weights", "Writing model shards") too; the Trainer's step bar and the
    # evaluation's bar are their own tqdm and stay: one bar per long stage.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Each task skips the shutdown garbage collections (about 3 s per task; intentops.stages).
    os.environ.setdefault(FAST_EXIT_ENV, "1")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = local_tracking(cfg, tracking_uri, workdir)
    package = compile_pipeline(stem, workdir / "pipeline" / f"{stem}.yaml")
    pipeline_root = workdir / "pipeline_root"
    pipeline_root.mkdir(exist_ok=True)
    before = set(pipeline_root.iterdir())
    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True
    )
    pipeline = components.load_component_from_file(str(package))
    log.info("running %s locally (pipeline root %s, MLflow %s)", package, pipeline_root, cfg.registry.tracking_uri)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # kfp.local runs every stage in this Python environment and has no pods: resources, GPUs, secrets and the
        # container image of the compiled pipeline do not apply here, and it says so once per task.
        warnings.filterwarnings("ignore", message=r"You may be attemping to run a task", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=r"Task '.*': settings \[", category=UserWarning)
        try:
            pipeline(**cfg.flat())
        except RuntimeError as exc:
            raise PipelineError(f"local run failed: {exc} (the stage's log is above)") from None
    wall = time.perf_counter() - started
    new = sorted(set(pipeline_root.iterdir()) - before, key=lambda path: path.stat().st_mtime)
    if not new:
        raise PipelineError(f"{pipeline_root}: kfp.local wrote no run folder")
    return LocalRun(new[-1], wall, cfg.registry.tracking_uri)


def run_local(cfg: RunConfig, workdir: Path, tracking_uri: str | None = None) -> RunSummary:
    """Run the training pipeline locally and summarise it (also written to WORKDIR/summary.json)."""
    from intentops.io import write_json

    run = execute_local(TRAINING, cfg, workdir, tracking_uri)
    summary = summarize_run(run.run_dir, run.wall_seconds, run.tracking_uri)
    write_json(workdir.resolve() / "summary.json", summary.to_dict())
    return summary


@dataclass(frozen=True)
class RetrainCheck:
    """The retrain-if-changed decision of a local run: whether training ran, and why."""

    changed: bool
    reason: str


def retrain_check(run: LocalRun) -> RetrainCheck:
    """Read the check-changes task's decision from a local retrain-if-changed run."""
    check = task_outputs(run.run_dir / "check-changes")
    reason = str(check.get("artifacts", {}).get("changes", {}).get("reason", "?"))
    return RetrainCheck(bool(check.get("parameters", {}).get("Output")), reason)
