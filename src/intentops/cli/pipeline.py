"""`intentops run | compile | submit | schedule`: the whole Kubeflow pipeline, locally or on a cluster.

`run` compiles the training pipeline and executes that compiled YAML on this machine with kfp.local's
SubprocessRunner (every stage a subprocess of this Python environment, the DAG and its dsl.If exactly as compiled),
MLflow on a sqlite store in the work folder unless a tracking URI is given, and ends with a summary read from the
run's outputs. `compile`, `submit` and `schedule` are for a Kubeflow Pipelines cluster.

The pipeline code (the `components` and `pipelines` packages, installed with intentops) is imported only by these
handlers, with kfp, so the library itself stays free of KFP.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.cli import add_config_argument, config_from_args
from intentops.config import ConfigError, RunConfig

if TYPE_CHECKING:
    import kfp

log = logging.getLogger(__name__)

TRAINING = "training_pipeline"
RETRAIN = "retrain_if_changed"
# Stage order of the summary (task names in the compiled pipeline).
STAGES = (
    "resolve-config",
    "convert-itag",
    "validate-dataset",
    "sft-warmup",
    "grpo-stage1",
    "mine-hard-samples",
    "grpo-stage2",
    "evaluate",
    "evaluate-champion",
    "gate",
    "register-model",
    "deploy-vllm",
)
DEFAULT_WORKDIR = "intentops-run"


class PipelineError(RuntimeError):
    """A pipeline command that cannot proceed; the message says what to do."""


# ---- compiling ----------------------------------------------------------------------------------------------


def compile_pipeline(stem: str, path: Path, defaults: dict[str, Any] | None = None) -> Path:
    """Compile `stem` (training_pipeline or retrain_if_changed) to `path`."""
    from pipelines.compile import compile_pipeline as compile_one

    return compile_one(stem, path, defaults)


def _portable_arguments(cfg: RunConfig) -> dict[str, Any]:
    from pipelines.parameters import pipeline_arguments

    return pipeline_arguments(cfg)


def _explicit_config(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "config", None) or getattr(args, "overrides", None))


# ---- intentops run -----------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """What one local run did, read back from its outputs (also written to WORKDIR/summary.json)."""

    pipeline_run_id: str
    run_dir: str
    wall_seconds: float
    stage_seconds: dict[str, float]
    skipped: list[str]
    evaluation: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    registered: dict[str, Any] = field(default_factory=dict)
    deployment: dict[str, Any] = field(default_factory=dict)
    tracking_uri: str = ""

    @property
    def stages_total(self) -> float:
        return sum(self.stage_seconds.values())

    @property
    def overhead_seconds(self) -> float:
        """Wall time not spent inside a stage's own code: process start-up, kfp.local bookkeeping, artifacts."""
        return max(0.0, self.wall_seconds - self.stages_total)

    @property
    def overhead_share(self) -> float:
        return self.overhead_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "stages_total_seconds": round(self.stages_total, 3),
            "overhead_seconds": round(self.overhead_seconds, 3),
            "overhead_share": round(self.overhead_share, 4),
        }


def _task_outputs(task_dir: Path) -> dict[str, Any]:
    """One task's executor_output.json as {parameters, artifacts: {name: metadata}}."""
    path = task_dir / "executor_output.json"
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    artifacts = {
        name: (block.get("artifacts") or [{}])[0].get("metadata", {})
        for name, block in (raw.get("artifacts") or {}).items()
    }
    return {"parameters": raw.get("parameterValues") or {}, "artifacts": artifacts}


def summarize_run(run_dir: Path, wall_seconds: float, tracking_uri: str) -> RunSummary:
    """Read stage times, metrics, the gate decision, the registered version and the deployment from a local run."""
    outputs = {stage: _task_outputs(run_dir / stage) for stage in STAGES}
    stage_seconds: dict[str, float] = {}
    for stage, out in outputs.items():
        seconds = [meta["stage_seconds"] for meta in out.get("artifacts", {}).values() if "stage_seconds" in meta]
        if seconds:
            stage_seconds[stage] = float(max(seconds))
    artifacts = {stage: out.get("artifacts", {}) for stage, out in outputs.items()}
    gate = dict(artifacts["gate"].get("decision", {}))
    if "Output" in outputs["gate"].get("parameters", {}):
        gate["passed"] = bool(outputs["gate"]["parameters"]["Output"])
    return RunSummary(
        pipeline_run_id=str(artifacts["convert-itag"].get("records", {}).get("pipeline_run_id", "")),
        run_dir=str(run_dir),
        wall_seconds=round(wall_seconds, 3),
        stage_seconds=stage_seconds,
        skipped=[stage for stage in STAGES if not outputs[stage]],
        evaluation=dict(artifacts["evaluate"].get("evaluation", {})),
        gate=gate,
        registered=dict(artifacts["register-model"].get("registered", {})),
        deployment=dict(artifacts["deploy-vllm"].get("endpoint", {})),
        tracking_uri=tracking_uri,
    )


def _mlflow_ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def format_summary(summary: RunSummary) -> str:
    lines = [
        "",
        f"IntentOps local run {summary.pipeline_run_id or '?'}: {summary.wall_seconds:.1f} s wall",
        "",
        f"  {'stage':<20}{'seconds':>9}",
    ]
    for stage in STAGES:
        if stage in summary.stage_seconds:
            lines.append(f"  {stage:<20}{summary.stage_seconds[stage]:>9.1f}")
        elif stage in summary.skipped:
            lines.append(f"  {stage:<20}{'skipped':>9}")
    lines.append(
        f"  stages {summary.stages_total:.1f} s; orchestration overhead {summary.overhead_seconds:.1f} s "
        f"({summary.overhead_share:.1%} of the wall time: process start-up, kfp.local, artifact bookkeeping)"
    )
    ev = summary.evaluation
    if ev:
        lines.append(
            f"evaluation: intent accuracy {ev.get('intent_accuracy', 0):.3f}, parameter accuracy "
            f"{ev.get('param_accuracy', 0):.3f}, format errors {ev.get('format_error_rate', 0):.3f} "
            f"on {int(ev.get('n', 0))} test records ({ev.get('decoding', '')})"
        )
    if summary.gate:
        verdict = "PASSED" if summary.gate.get("passed") else "FAILED"
        lines.append(f"gate ({summary.gate.get('mode', '?')}): {verdict} - {summary.gate.get('reasons', '')}")
    reg = summary.registered
    if reg:
        lines.append(
            f"registry: {reg.get('name')} version {reg.get('version')} aliases [{reg.get('aliases', '')}] "
            f"({reg.get('model_uri', '')})"
        )
    else:
        lines.append("registry: nothing registered (the gate did not pass)")
    dep = summary.deployment
    if dep:
        stopped = " - stopped after the smoke test" if dep.get("stopped_after_smoke_test") else ""
        lines.append(
            f"deployment: {dep.get('target')} {dep.get('endpoint')} version {dep.get('version')}, smoke test "
            f"{dep.get('smoke_valid_share', 0):.0%} valid{stopped}"
        )
        if dep.get("target") == "local":
            lines.append('  serve it: intentops deploy --target local   then: intentops predict "..."')
    lines += [
        f"look: {_mlflow_ui_command(summary.tracking_uri)}",
        f"      pipeline outputs: {summary.run_dir}",
        "",
    ]
    return "\n".join(lines)


def _local_tracking(cfg: RunConfig, tracking_uri: str | None, workdir: Path) -> RunConfig:
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
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = _local_tracking(cfg, tracking_uri, workdir)
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


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    workdir = Path(args.workdir)
    if args.pipeline == "training":
        print(format_summary(run_local(cfg, workdir, args.tracking_uri)))
        return 0
    run = execute_local(RETRAIN, cfg, workdir, args.tracking_uri)
    check = _task_outputs(run.run_dir / "check-changes")
    reason = check.get("artifacts", {}).get("changes", {}).get("reason", "?")
    if not check.get("parameters", {}).get("Output"):
        print(f"\nretrain-if-changed: nothing to do - {reason} ({run.wall_seconds:.1f} s)")
        print(f"look: {_mlflow_ui_command(run.tracking_uri)}\n")
        return 0
    print(f"\nretrain-if-changed: {reason}; the training pipeline ran:")
    print(format_summary(summarize_run(run.run_dir, run.wall_seconds, run.tracking_uri)))
    return 0


# ---- intentops compile ------------------------------------------------------------------------------------------


def _compile(args: argparse.Namespace) -> int:
    defaults = _portable_arguments(config_from_args(args)) if _explicit_config(args) else None
    out = Path(args.out or "pipelines")
    for stem in (TRAINING, RETRAIN):
        print(compile_pipeline(stem, out / f"{stem}.yaml", defaults))
    return 0


# ---- intentops submit / schedule --------------------------------------------------------------------------------


def _probe(host: str) -> None:
    """Fail fast on a wrong --host: kfp.Client retries its health check for ~25 s, logging a traceback each time."""
    import httpx

    url = f"{host.rstrip('/')}/apis/v2beta1/healthz"
    try:
        response = httpx.get(url, timeout=10.0)
    except httpx.HTTPError as exc:
        raise PipelineError(f"cannot reach Kubeflow Pipelines at {host}: {exc}") from None
    # 401/403 or a login redirect come from an auth proxy in front of KFP; kfp.Client handles credentials.
    if response.status_code == 404:
        raise PipelineError(
            f"{url} answered 404: {host} is not a Kubeflow Pipelines API URL (ml-pipeline-ui or ml-pipeline)"
        )


def _client(host: str, namespace: str | None) -> kfp.Client:
    """A kfp.Client for `host`; an unreachable or non-KFP host is a clear error, not a urllib3 traceback."""
    import kfp
    from kfp_server_api.exceptions import ApiException

    _probe(host)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
            return kfp.Client(host=host, namespace=namespace)
    except (ApiException, OSError, ValueError) as exc:
        raise PipelineError(f"Kubeflow Pipelines at {host}: {exc}") from None


def _checked_arguments(package: Path, arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments restricted to what the compiled pipeline declares; anything else is an error naming it."""
    import yaml

    spec = next(yaml.safe_load_all(package.read_text(encoding="utf-8")))
    declared = set(spec["root"]["inputDefinitions"]["parameters"])
    unknown = sorted(set(arguments) - declared)
    if unknown:
        raise ConfigError(f"{package}: the pipeline has no parameter {', '.join(unknown)}")
    return arguments


def _submit(args: argparse.Namespace) -> int:
    import tempfile

    cfg = config_from_args(args)
    stem = RETRAIN if args.pipeline == "retrain" else TRAINING
    client = _client(args.host, args.namespace)
    with tempfile.TemporaryDirectory(prefix="intentops-submit-") as scratch:
        package = compile_pipeline(stem, Path(scratch) / f"{stem}.yaml")
        arguments = _checked_arguments(package, _portable_arguments(cfg))
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=args.run_name,
            experiment_name=args.experiment,
            namespace=args.namespace,
            enable_caching=None if args.caching == "default" else args.caching == "on",
        )
    print(f"submitted run {result.run_id} of {stem} to {args.host} (experiment {args.experiment})")
    print(f"  {args.host.rstrip('/')}/#/runs/details/{result.run_id}")
    return 0


def cron_expression(expr: str) -> str:
    """KFP schedules use 6-field cron (seconds first); a standard 5-field expression gets second 0."""
    if expr.startswith("@"):
        return expr
    fields = expr.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise ConfigError(
        f"--cron {expr!r}: expected 5 fields (minute hour day month weekday), 6 with seconds first, or @daily etc."
    )


def _schedule(args: argparse.Namespace) -> int:
    import tempfile

    cfg = config_from_args(args)
    cron = cron_expression(args.cron)
    client = _client(args.host, args.namespace)
    with tempfile.TemporaryDirectory(prefix="intentops-schedule-") as scratch:
        package = compile_pipeline(RETRAIN, Path(scratch) / f"{RETRAIN}.yaml")
        arguments = _checked_arguments(package, _portable_arguments(cfg))
        experiment = client.create_experiment(args.experiment, namespace=args.namespace)
        job = client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=args.name,
            description="IntentOps: retrain when the catalog or the data changed (intentops schedule)",
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            pipeline_package_path=str(package),
            params=arguments,
        )
    print(f"scheduled {args.name} ({cron}) as recurring run {job.recurring_run_id} in experiment {args.experiment}")
    print("  to change it: disable or delete it in the KFP UI (or `kfp recurring-run delete ID`), then schedule again")
    return 0


# ---- argparse ---------------------------------------------------------------------------------------------------


def _reported(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a PipelineError as one line (exit 1); config mistakes are reported by intentops.cli.main (exit 2)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except PipelineError as exc:
            print(f"intentops {args.command}: error: {exc}", file=sys.stderr)
            return 1

    return run


def _add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="Kubeflow Pipelines API URL, e.g. http://localhost:8080.")
    parser.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs).")
    parser.add_argument("--experiment", default="intentops", help="KFP experiment (default: intentops).")
    add_config_argument(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="Run the whole pipeline on this machine (kfp.local) and print a summary.",
        description=(
            "Compile the training pipeline and execute that compiled YAML locally with kfp.local's SubprocessRunner: "
            "every stage, the gate's dsl.If, registration and a bounded local deployment (served, smoke-tested, "
            "stopped). Default: the tiny profile on the bundled example, MLflow in WORKDIR/mlflow.db."
        ),
    )
    add_config_argument(run)
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store in WORKDIR).")
    run.add_argument(
        "--pipeline",
        choices=("training", "retrain"),
        default="training",
        help="training (default) or retrain-if-changed (trains only if the catalog or data changed since the champion).",
    )
    run.add_argument(
        "--workdir", default=DEFAULT_WORKDIR, help=f"Outputs and MLflow store (default: ./{DEFAULT_WORKDIR})."
    )
    run.set_defaults(handler=_reported(_run))

    comp = subparsers.add_parser(
        "compile",
        help="Compile the pipelines to YAML (default: pipelines/*.yaml).",
        description=(
            "Compile intentops-training and intentops-retrain-if-changed. Without --config/--set the parameter "
            "defaults are RunConfig's (what is committed); with them, that configuration becomes the UI defaults."
        ),
    )
    comp.add_argument("--out", help="Output folder (default: ./pipelines).")
    add_config_argument(comp)
    comp.set_defaults(handler=_reported(_compile))

    submit = subparsers.add_parser(
        "submit",
        help="Submit one pipeline run to a Kubeflow Pipelines cluster.",
        description="Compile and submit a run; every knob of --config/--set is passed as a pipeline parameter.",
    )
    _add_cluster_arguments(submit)
    submit.add_argument("--run-name", help="Run name (default: KFP's).")
    submit.add_argument("--pipeline", choices=("training", "retrain"), default="training", help="Which pipeline.")
    submit.add_argument(
        "--caching", choices=("default", "on", "off"), default="default", help="Override every task's caching."
    )
    submit.set_defaults(handler=_reported(_submit))

    schedule = subparsers.add_parser(
        "schedule",
        help="Schedule intentops-retrain-if-changed as a recurring run.",
        description=(
            "Create a recurring run of the retrain-if-changed pipeline (one at a time, no catch-up). A recurring run "
            "keeps the pipeline it was created with: to change it, delete or disable it and schedule again."
        ),
    )
    _add_cluster_arguments(schedule)
    schedule.add_argument("--cron", required=True, help="Cron expression, e.g. '0 3 * * *' (03:00 daily).")
    schedule.add_argument("--name", default="intentops-retrain", help="Recurring run name.")
    schedule.set_defaults(handler=_reported(_schedule))
