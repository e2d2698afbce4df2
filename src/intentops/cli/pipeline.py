"""`intentops run | compile | submit | schedule`: the whole Kubeflow pipeline, locally or on a cluster.

`run` compiles the training pipeline and executes that compiled YAML on this machine (`pipeline_local`), then prints
a summary read from the run's outputs (`intentops.run_summary`). `compile` writes the YAML (`pipeline_build`);
`submit` and `schedule` hand it to a Kubeflow Pipelines cluster (`pipeline_cluster`). This module is the argument
parsing and printing only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from intentops.cli import add_config_argument, config_from_args
from intentops.cli.pipeline_build import (
    RETRAIN,
    TRAINING,
    PipelineError,
    compile_pipeline,
    local_serving_warning,
    portable_arguments,
)
from intentops.cli.pipeline_cluster import cron_expression, schedule_retraining, submit_run
from intentops.cli.pipeline_local import DEFAULT_WORKDIR, execute_local, retrain_check, run_local
from intentops.config import RunConfig
from intentops.run_log import run_log
from intentops.run_predictions import predictions_section
from intentops.run_summary import STAGES, RunSummary, format_summary, mlflow_ui_command, summarize_run

# Names other code imports from here (tests, bench): the pipeline CLI's public surface.
__all__ = [
    "RETRAIN",
    "STAGES",
    "TRAINING",
    "compile_pipeline",
    "cron_expression",
    "execute_local",
    "format_summary",
    "register",
    "run_local",
    "summarize_run",
]

log = logging.getLogger(__name__)


def _explicit_config(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "config", None) or getattr(args, "overrides", None))


def _run(args: argparse.Namespace) -> int:
    """Run the pipeline with the log in WORKDIR/run.log, then print the summary (also appended to the log)."""
    cfg = config_from_args(args)
    _refuse_to_replace_a_running_server(cfg)
    workdir = Path(args.workdir).resolve()
    with run_log(workdir, full=args.full_log) as log_path:
        lines, status = _run_logged(args, cfg, workdir)
    lines += [f"full log: {log_path}", ""]
    text = "\n".join(lines)
    print(text)
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return status


def _refuse_to_replace_a_running_server(cfg: RunConfig) -> None:
    """The pipeline's local deploy step replaces the recorded local server: stop before that server is touched."""
    if cfg.serving.target != "local":
        return
    from intentops.serving.deploy import process_alive, read_local_state

    state = read_local_state()
    if state is not None and process_alive(int(state["pid"])):
        raise PipelineError(
            f"a local model server is running ({state.get('model_uri')} at {state.get('endpoint')}, pid "
            f"{state['pid']}); the pipeline's local deploy step would replace it, and this run did not start it: "
            "stop it first (intentops serve stop), or deploy elsewhere (--set serving__target=...)"
        )


def _run_logged(args: argparse.Namespace, cfg: RunConfig, workdir: Path) -> tuple[list[str], int]:
    """The run itself: the summary lines to print, and the exit status."""
    if args.pipeline == "training":
        summary = run_local(cfg, workdir, args.tracking_uri)
        predictions, status = _predictions(args, cfg, summary)
        return [format_summary(summary), *predictions], status
    run = execute_local(RETRAIN, cfg, workdir, args.tracking_uri)
    check = retrain_check(run)
    if not check.changed:
        return [
            f"\nretrain-if-changed: nothing to do - {check.reason} ({run.wall_seconds:.1f} s)",
            f"look: {mlflow_ui_command(run.tracking_uri)}",
        ], 0
    summary = summarize_run(run.run_dir, run.wall_seconds, run.tracking_uri)
    predictions, status = _predictions(args, cfg, summary)
    return [
        f"\nretrain-if-changed: {check.reason}; the training pipeline ran:",
        format_summary(summary),
        *predictions,
    ], status


def _cli_options(args: argparse.Namespace, tracking_uri: str) -> list[str]:
    """What `intentops deploy` needs from this run's command line: its config, serving knobs and MLflow store."""
    options = ["--config", args.config] if getattr(args, "config", None) else []
    for item in getattr(args, "overrides", None) or []:
        if item.startswith("serving__"):
            options += ["--set", item]
    return [*options, "--set", f"registry__tracking_uri={tracking_uri}"]


def _predictions(args: argparse.Namespace, cfg: RunConfig, summary: RunSummary) -> tuple[list[str], int]:
    return predictions_section(cfg, summary, args.keep_serving, _cli_options(args, summary.tracking_uri))


def _warn_serving(cfg: RunConfig) -> None:
    warning = local_serving_warning(cfg)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _compile(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    _warn_serving(cfg)
    defaults = portable_arguments(cfg) if _explicit_config(args) else None
    out = Path(args.out or "pipelines")
    for stem in (TRAINING, RETRAIN):
        print(compile_pipeline(stem, out / f"{stem}.yaml", defaults))
    return 0


def _submit(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    _warn_serving(cfg)
    stem = RETRAIN if args.pipeline == "retrain" else TRAINING
    run_id = submit_run(
        cfg,
        stem,
        args.host,
        namespace=args.namespace,
        experiment=args.experiment,
        run_name=args.run_name,
        caching=None if args.caching == "default" else args.caching == "on",
    )
    print(f"submitted run {run_id} of {stem} to {args.host} (experiment {args.experiment})")
    print(f"  {args.host.rstrip('/')}/#/runs/details/{run_id}")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    _warn_serving(cfg)
    cron = cron_expression(args.cron)
    job_id = schedule_retraining(cfg, args.host, cron, args.name, namespace=args.namespace, experiment=args.experiment)
    print(f"scheduled {args.name} ({cron}) as recurring run {job_id} in experiment {args.experiment}")
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
            "stopped). When the gate and the smoke test passed, the job serves the new version locally, prints a "
            "few predictions made through it and the commands to call it, then stops it (--keep-serving leaves it "
            "running). The console shows a readable view of the log; WORKDIR/run.log keeps all of it. Default: the "
            "tiny profile on the bundled example, MLflow in WORKDIR/mlflow.db."
        ),
    )
    add_config_argument(run)
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite store in WORKDIR).")
    run.add_argument(
        "--pipeline",
        choices=("training", "retrain"),
        default="training",
        help="training (default) or retrain-if-changed (trains only if no registered version was trained on this "
        "catalog and data).",
    )
    run.add_argument(
        "--workdir", default=DEFAULT_WORKDIR, help=f"Outputs and MLflow store (default: ./{DEFAULT_WORKDIR})."
    )
    run.add_argument(
        "--keep-serving",
        action="store_true",
        help="After a passed gate and smoke test, leave the local server the job started for its predictions "
        "running (stop it with `intentops serve stop`); default: the job stops it.",
    )
    run.add_argument(
        "--full-log",
        action="store_true",
        help="Show every line of the stages' output on the console (WORKDIR/run.log always has all of it).",
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
