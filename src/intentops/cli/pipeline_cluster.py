"""`intentops submit | schedule`: hand a compiled pipeline to a Kubeflow Pipelines cluster through kfp.Client."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from intentops.cli.pipeline_build import RETRAIN, PipelineError, checked_arguments, compile_pipeline, portable_arguments
from intentops.config import ConfigError, RunConfig

if TYPE_CHECKING:
    import kfp


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


def client(host: str, namespace: str | None) -> kfp.Client:
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


def submit_run(
    cfg: RunConfig,
    stem: str,
    host: str,
    *,
    namespace: str | None = None,
    experiment: str = "intentops",
    run_name: str | None = None,
    caching: bool | None = None,
) -> str:
    """Compile `stem` and start one run with every knob of `cfg` as a pipeline argument; returns the run id."""
    kfp_client = client(host, namespace)
    with tempfile.TemporaryDirectory(prefix="intentops-submit-") as scratch:
        package = compile_pipeline(stem, Path(scratch) / f"{stem}.yaml")
        arguments = checked_arguments(package, portable_arguments(cfg))
        result = kfp_client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=caching,
        )
    return str(result.run_id)


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


def schedule_retraining(
    cfg: RunConfig, host: str, cron: str, name: str, *, namespace: str | None = None, experiment: str = "intentops"
) -> str:
    """Create a recurring retrain-if-changed run (one at a time, no catch-up); returns the recurring run id."""
    kfp_client = client(host, namespace)
    with tempfile.TemporaryDirectory(prefix="intentops-schedule-") as scratch:
        package = compile_pipeline(RETRAIN, Path(scratch) / f"{RETRAIN}.yaml")
        arguments = checked_arguments(package, portable_arguments(cfg))
        created = kfp_client.create_experiment(experiment, namespace=namespace)
        job = kfp_client.create_recurring_run(
            experiment_id=created.experiment_id,
            job_name=name,
            description="IntentOps: retrain when the catalog or the data changed (intentops schedule)",
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            pipeline_package_path=str(package),
            params=arguments,
        )
    return str(job.recurring_run_id)
