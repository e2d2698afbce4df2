"""MLflow tracking: one parent run per pipeline run, one nested run per stage.

Stages run as separate processes (KFP pods, or subprocesses under kfp.local), so the parent run is found by its
`intentops.pipeline_run_id` tag, or created by whichever stage gets there first.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intentops.config import RunConfig
from intentops.storage import redact_uri

if TYPE_CHECKING:
    import mlflow

log = logging.getLogger(__name__)

PIPELINE_RUN_TAG = "intentops.pipeline_run_id"
STAGE_TAG = "intentops.stage"
ROLE_TAG = "intentops.role"
DEFAULT_LOCAL_STORE = "mlflow.db"
_MAX_PARAM_CHARS = 500
_PARAMS_PER_REQUEST = 100
_SAFE_RUN_ID = re.compile(r"^[A-Za-z0-9_.:/-]+$")


def resolve_tracking_uri(cfg: RunConfig) -> str:
    """The config's URI, else $MLFLOW_TRACKING_URI, else a sqlite store in the working directory."""
    return (
        cfg.registry.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI", "")
        or f"sqlite:///{Path.cwd() / DEFAULT_LOCAL_STORE}"
    )


def apply_request_budget(cfg: RunConfig) -> None:
    """Bound MLflow's HTTP retries by `registry.request_budget_s`: MLflow's defaults (7 retries, doubling from
    2 s, 120 s timeout) kept commands retrying for minutes against a dead server.

    Half the budget goes to back-off sleeps (each retry sleeps 2^n s plus up to 1 s jitter), the rest to the
    per-request timeouts, so retries x timeout + sleeps stays within the budget.
    """
    budget = cfg.registry.request_budget_s
    retries = 0
    while retries < 5 and (2 ** (retries + 1) - 1) + (retries + 1) <= budget / 2:
        retries += 1
    sleeps = (2**retries - 1) + retries
    timeout = max(1, int((budget - sleeps) / (retries + 1)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)


def is_unreachable(exc: BaseException) -> bool:
    """True when an MLflow error means the server could not be reached (refused, timed out, retries used up)."""
    import requests

    cause = exc.__cause__ or exc.__context__
    return isinstance(exc, requests.exceptions.RequestException) or (
        cause is not None and isinstance(cause, requests.exceptions.RequestException)
    )


def configure(cfg: RunConfig) -> str:
    """Point mlflow at the run's tracking store and experiment; returns the experiment id."""
    import mlflow

    apply_request_budget(cfg)
    mlflow.set_tracking_uri(resolve_tracking_uri(cfg))
    return mlflow.set_experiment(cfg.registry.experiment).experiment_id


def parent_run_id(cfg: RunConfig, pipeline_run_id: str) -> str:
    """The id of the pipeline's parent run, created (with the whole config as params) if it does not exist yet.

    Stages of one pipeline run are sequential, so find-or-create needs no lock.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Param

    experiment_id = configure(cfg)
    client = MlflowClient()
    if not _SAFE_RUN_ID.match(pipeline_run_id):
        raise ValueError(f"pipeline run id {pipeline_run_id!r}: use letters, digits and . _ : / - only")
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}' and tags.`{ROLE_TAG}` = 'pipeline'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline-{pipeline_run_id}",
        tags={PIPELINE_RUN_TAG: pipeline_run_id, ROLE_TAG: "pipeline"},
    )
    params = [Param(key, redact_uri(value)[:_MAX_PARAM_CHARS]) for key, value in cfg.flat().items()]
    for start in range(0, len(params), _PARAMS_PER_REQUEST):
        client.log_batch(run.info.run_id, params=params[start : start + _PARAMS_PER_REQUEST])
    log.info("MLflow: created parent run %s for pipeline run %s", run.info.run_id, pipeline_run_id)
    return run.info.run_id


@contextmanager
def stage_run(
    stage: str,
    cfg: RunConfig,
    pipeline_run_id: str | None = None,
    params: dict[str, Any] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Run the block inside an MLflow run for `stage`, nested under the pipeline's parent run when there is one.

    The parent shows RUNNING while a stage runs and FINISHED (or FAILED) after it, so the UI tells where a
    pipeline run stands.
    """
    import mlflow

    configure(cfg)
    parent = parent_run_id(cfg, pipeline_run_id) if pipeline_run_id else None
    tags = {STAGE_TAG: stage, ROLE_TAG: "stage"}
    if pipeline_run_id:
        tags[PIPELINE_RUN_TAG] = pipeline_run_id
    client = mlflow.MlflowClient()
    if parent:
        client.update_run(parent, status="RUNNING")
    outcome = "FAILED"
    try:
        with mlflow.start_run(run_name=stage, parent_run_id=parent, nested=parent is not None, tags=tags) as run:
            if params:
                mlflow.log_params({key: redact_uri(value)[:_MAX_PARAM_CHARS] for key, value in params.items()})
            yield run
        outcome = "FINISHED"
    finally:
        if parent:
            client.update_run(parent, status=outcome)
