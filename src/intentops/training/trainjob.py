"""Several nodes per training stage: the stage submits a Kubeflow Trainer TrainJob and waits for it.

A KFP task is one pod, so a stage that needs more GPUs than one node has (`cluster.training_nodes` > 1) hands the
training to a TrainJob (trainer.kubeflow.org/v1alpha1) of that many nodes on `cluster.trainjob_runtime`. The
runtime's torch plugin gives every node `PET_NNODES`, `PET_NPROC_PER_NODE`, `PET_NODE_RANK`, `PET_MASTER_ADDR` and
`PET_MASTER_PORT`, which `torch.distributed.run` reads as its `--nnodes/--node_rank/--master_*` flags, so each node
runs `python -m torch.distributed.run -m intentops.training.launch SPEC` and all workers form one process group.

The nodes share no disk with the stage's pod, so everything goes through `storage.checkpoint_uri` (S3 or a
ReadWriteMany volume) under `<uri>/<pipeline_run_id>/trainjob/<stage>/`: the stage uploads its inputs and the spec,
rank 0 uploads the model folder and its result, and the stage downloads them into its own artifact. Checkpoints
already live under the same run-scoped location, so a retried TrainJob resumes. A retried stage pod finds its
TrainJob by name: it waits for a running one, takes the result of a finished one and submits a new attempt after a
failed one. The stage logs the job's state as it changes; on failure it raises with the workers' reported
exception and the last lines of the rank-0 node's log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from intentops import storage
from intentops.config import MLFLOW_OPTIONAL_ENV, MLFLOW_REQUIRED_ENV, S3_ENV, RunConfig
from intentops.training.launch import RESULT_FILE, SPEC_FILE, WORKER_ENV, TrainingLaunchError

log = logging.getLogger(__name__)

TRAINJOB_API_VERSION = "trainer.kubeflow.org/v1alpha1"
TRAINJOB_KIND = "TrainJob"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"  # JobSet labels every pod with the TrainJob's name
NODE_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
RUN_LABEL, STAGE_LABEL = "intentops.io/pipeline-run", "intentops.io/stage"
OUTPUT_DIR, ERRORS_DIR = "output", "errors"
INPUT_KEYS = {"sft": ("dataset_dir", "base_model"), "grpo": ("train_path", "model_dir")}
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_LOG_TAIL_LINES = 40
_MAX_ATTEMPTS = 20


def staging_uri(cfg: RunConfig, stage: str, pipeline_run_id: str | None) -> str:
    """Where one stage's TrainJob exchanges inputs, spec, model and result with the stage's pod."""
    return storage.run_scoped(cfg.storage.checkpoint_uri, pipeline_run_id, "trainjob", stage)


def job_name(stage: str, pipeline_run_id: str | None, attempt: int) -> str:
    """A TrainJob name (RFC 1035 label, at most 63 characters) that a retried stage pod finds again."""
    return f"intentops-{stage}-{_run_digest(pipeline_run_id)}" + (f"-a{attempt}" if attempt > 1 else "")


def _run_digest(pipeline_run_id: str | None) -> str:
    """A short label-safe stand-in for the run id (KFP run ids are UUIDs, local ones may be anything)."""
    return hashlib.sha256((pipeline_run_id or "local").encode("utf-8")).hexdigest()[:12]


def stage_inputs(trainer: str, kwargs: dict[str, Any], staging: str) -> dict[str, Any]:
    """Upload the stage's local input files and folders under `staging/inputs/`; other values (an s3:// base model,
    a model name) pass through. Returns the kwargs the nodes see."""
    remote = dict(kwargs)
    for key in INPUT_KEYS[trainer]:
        value = kwargs.get(key)
        if value and not storage.is_s3(value) and Path(value).exists():
            remote[key] = storage.upload(value, f"{staging}/inputs/{key}/{Path(value).name}")
    return remote


def write_spec(trainer: str, cfg: RunConfig, kwargs: dict[str, Any], staging: str) -> str:
    """The spec every node reads: configuration, stage arguments and where rank 0 publishes model and result."""
    spec = {
        "trainer": trainer,
        "config": cfg.model_dump(mode="json"),
        "kwargs": kwargs,
        "inputs": list(INPUT_KEYS[trainer]),
        "output": f"{staging}/{OUTPUT_DIR}",
        "result": f"{staging}/{RESULT_FILE}",
        "errors": f"{staging}/{ERRORS_DIR}",
    }
    with tempfile.TemporaryDirectory(prefix="intentops-trainjob-") as scratch:
        path = Path(scratch) / SPEC_FILE
        path.write_text(json.dumps(spec, default=str), encoding="utf-8")
        return storage.upload(path, f"{staging}/{SPEC_FILE}")


def _secret_env(secret: str, keys: dict[str, str], optional: bool) -> list[dict[str, Any]]:
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}
        for key, env in keys.items()
    ]


def trainjob_manifest(name: str, image: str, spec_uri: str, cfg: RunConfig, labels: dict[str, str]) -> dict[str, Any]:
    """The TrainJob of one stage: N nodes of the stage's image, one worker per GPU, secrets by reference only."""
    cluster = cfg.cluster
    per_node = cluster.training_processes or max(1, cluster.gpus_per_training_stage)
    trainer: dict[str, Any] = {
        "image": image,
        "command": ["python", "-m", "torch.distributed.run", "-m", "intentops.training.launch", spec_uri],
        "numNodes": cluster.training_nodes,
        "numProcPerNode": per_node,
        "env": [
            {"name": WORKER_ENV, "value": "1"},
            *_secret_env(cluster.s3_secret, S3_ENV, optional=True),
            *_secret_env(cluster.mlflow_secret, MLFLOW_REQUIRED_ENV, optional=False),
            *_secret_env(cluster.mlflow_secret, MLFLOW_OPTIONAL_ENV, optional=True),
        ],
    }
    if cluster.gpus_per_training_stage:
        gpus = str(cluster.gpus_per_training_stage)
        trainer["resourcesPerNode"] = {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}}
    return {
        "apiVersion": TRAINJOB_API_VERSION,
        "kind": TRAINJOB_KIND,
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "runtimeRef": {"name": cluster.trainjob_runtime},
            "trainer": trainer,
            "activeDeadlineSeconds": cluster.trainjob_timeout_s,
        },
    }


def trainjob_state(obj: dict[str, Any]) -> tuple[str, str]:
    """("complete" | "failed" | "suspended" | "running", what the conditions say) of a TrainJob object."""
    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
    for kind in ("Failed", "Complete", "Suspended"):
        condition = conditions.get(kind)
        if condition and str(condition.get("status")) == "True":
            detail = condition.get("message") or condition.get("reason") or kind
            return kind.lower(), f"{kind}: {detail}"
    jobs = (obj.get("status") or {}).get("jobsStatus") or []
    counts = ", ".join(f"{j.get('name')}: {j.get('active', 0)} active, {j.get('ready', 0)} ready" for j in jobs)
    return "running", counts or "submitted, no node started yet"


class TrainJobRunner:
    """Submits and follows one stage's TrainJob through an API client (the pod's service account on a cluster)."""

    def __init__(self, api_client: Any, namespace: str, poll_s: float = 10.0) -> None:
        from intentops.serving.kube import Cluster

        self.api_client, self.namespace, self.poll_s = api_client, namespace, poll_s
        self.cluster = Cluster(api_client, namespace, poll_s=poll_s)

    def _get(self, name: str) -> dict[str, Any] | None:
        return self.cluster.get(TRAINJOB_API_VERSION, TRAINJOB_KIND, name)

    def submit_or_find(self, manifest_for: Any, stage: str, pipeline_run_id: str | None) -> tuple[str, str]:
        """The name of the stage's TrainJob and its state: a running or finished attempt is reused, a failed one
        is followed by a new attempt (which resumes from the run's checkpoints)."""
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            name = job_name(stage, pipeline_run_id, attempt)
            existing = self._get(name)
            if existing is None:
                self.cluster.apply(manifest_for(name))
                log.info("%s: submitted TrainJob %s in %s", stage, name, self.namespace)
                return name, "running"
            state, detail = trainjob_state(existing)
            if state != "failed":
                log.info("%s: following TrainJob %s from an earlier attempt (%s)", stage, name, detail)
                return name, state
            log.info("%s: TrainJob %s failed earlier (%s); submitting a new attempt", stage, name, detail)
        raise TrainingLaunchError(f"{stage}: {_MAX_ATTEMPTS} TrainJob attempts failed; see the earlier ones' logs")

    def wait(self, name: str, timeout_s: float) -> tuple[str, str]:
        """Poll until the job completes or fails, logging each change of state; ("failed", ...) on timeout."""
        deadline, last = time.monotonic() + timeout_s, ""
        while True:
            obj = self._get(name)
            state, detail = trainjob_state(obj) if obj is not None else ("failed", "the TrainJob was deleted")
            if detail != last:
                log.info("TrainJob %s: %s", name, detail)
                last = detail
            if state in ("complete", "failed"):
                return state, detail
            if time.monotonic() >= deadline:
                return "failed", f"still {detail} after {timeout_s:.0f}s"
            time.sleep(self.poll_s)

    def node_log_tail(self, name: str) -> str:
        """The last lines of the rank-0 node's log (every node's when the index label is missing)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.api_client)
        try:
            pods = core.list_namespaced_pod(self.namespace, label_selector=f"{JOBSET_NAME_LABEL}={name}").items
            first = [p for p in pods if (p.metadata.labels or {}).get(NODE_INDEX_LABEL) == "0"] or pods
            tails = [
                f"--- {pod.metadata.name}\n"
                + core.read_namespaced_pod_log(pod.metadata.name, self.namespace, tail_lines=_LOG_TAIL_LINES)
                for pod in first[:1]
            ]
        except ApiException as exc:
            return f"(node logs unreadable: {exc.status} {exc.reason})"
        return "\n".join(tails) or "(no node pod found)"


def _reported_errors(staging: str) -> str:
    try:
        folder = storage.ensure_local(f"{staging}/{ERRORS_DIR}")
    except storage.StorageNotFoundError:
        return "no worker reported an exception"
    return "; ".join(p.read_text(encoding="utf-8") for p in sorted(Path(folder).glob("*")) if p.is_file())


def run_on_nodes(runner: TrainJobRunner, image: str, trainer: str, cfg: RunConfig, **kwargs: Any) -> dict[str, Any]:
    """Train on `cluster.training_nodes` nodes (`trainer` "sft", or "grpo" with `kwargs["stage"]`); the model lands
    in `kwargs["out_dir"]`; returns rank 0's result, its paths relative to that folder."""
    stage = kwargs.get("stage") or trainer
    run_id = kwargs.get("pipeline_run_id")
    staging = staging_uri(cfg, stage, run_id)
    out_dir = Path(kwargs["out_dir"])

    def manifest_for(name: str) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="intentops-inputs-") as scratch:
            inputs = dict(kwargs)
            if trainer == "sft" and not inputs.get("base_model") and cfg.model.profile == "tiny":
                # Built here once: transformers writes model files on global rank 0 only, so no other node could.
                from intentops.training.sft import resolve_base_model

                inputs["base_model"] = str(resolve_base_model(Path(inputs["dataset_dir"]), "", cfg, Path(scratch)))
            spec_uri = write_spec(trainer, cfg, stage_inputs(trainer, inputs, staging), staging)
        labels = {RUN_LABEL: _run_digest(run_id), STAGE_LABEL: stage}
        return trainjob_manifest(name, image, spec_uri, cfg, labels)

    name, state = runner.submit_or_find(manifest_for, stage, run_id)
    if state != "complete":
        state, detail = runner.wait(name, cfg.cluster.trainjob_timeout_s + 600)
        if state != "complete":
            raise TrainingLaunchError(
                f"{stage}: TrainJob {name} ({cfg.cluster.training_nodes} nodes) {detail}; "
                f"workers reported: {_reported_errors(staging)}\nlast lines of the rank-0 node's log:\n"
                + runner.node_log_tail(name)
            )
    result_file = storage.ensure_local(f"{staging}/{RESULT_FILE}")
    result = json.loads(Path(result_file).read_text(encoding="utf-8"))
    storage.download(f"{staging}/{OUTPUT_DIR}", out_dir)
    log.info("%s: TrainJob %s finished; model in %s", stage, name, out_dir)
    return result


def runner_in_pod(cfg: RunConfig) -> tuple[TrainJobRunner, str]:
    """The runner and node image for a stage running in a Kubeflow pod: the pod's namespace and service account,
    and `cluster.trainjob_image` or the image of the pod's own main container."""
    from intentops.serving.kube import kube_api_client

    namespace = os.environ.get("INTENTOPS_NAMESPACE") or (
        _SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() if _SERVICE_ACCOUNT_NAMESPACE.exists() else ""
    )
    if not namespace:
        raise TrainingLaunchError(
            "cluster__training_nodes > 1 submits a TrainJob from inside a Kubernetes pod; no service-account "
            "namespace found (set INTENTOPS_NAMESPACE to run it from elsewhere)"
        )
    api_client = kube_api_client()
    image = cfg.cluster.trainjob_image
    if not image:
        from kubernetes import client

        pod = client.CoreV1Api(api_client).read_namespaced_pod(os.environ.get("HOSTNAME", ""), namespace)
        main = [c for c in pod.spec.containers if c.name == "main"] or pod.spec.containers
        image = main[0].image
    return TrainJobRunner(api_client, namespace), image
