"""Training stages on several nodes: a Kubeflow Trainer TrainJob submitted, followed and read back by the stage.

There is no cluster here. The fake Kubernetes API server (tests/fake_k8s.py) stands in for the API, and its TrainJob
"controller" does what the Trainer's torch runtime does on a cluster: it starts the TrainJob's command once per node
with the `PET_*` variables the torch plugin injects (here: two CPU "nodes" on 127.0.0.1, gloo), records each node's
pod and log, and writes the Complete/Failed condition. Inputs, model and result travel through moto S3.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from intentops.artifacts import ModelFolder
from intentops.config import ConfigError, RunConfig, load_config
from intentops.training import trainjob
from intentops.training.launch import WORKER_ENV, TrainingLaunchError
from intentops.training.trainjob import (
    JOBSET_NAME_LABEL,
    NODE_INDEX_LABEL,
    TRAINJOB_API_VERSION,
    TrainJobRunner,
    job_name,
    trainjob_manifest,
    trainjob_state,
)
from tests.fake_k8s import FakeKubernetes

NAMESPACE = "intentops"


def _cluster_config(**knobs: Any) -> RunConfig:
    cfg = RunConfig()
    for key, value in knobs.items():
        setattr(cfg.cluster, key, value)
    return cfg


def test_manifest_asks_for_n_nodes_one_worker_per_gpu_and_names_secrets_only() -> None:
    cfg = _cluster_config(training_nodes=4, gpus_per_training_stage=8, s3_secret="s3", mlflow_secret="ml")
    manifest = trainjob_manifest("intentops-sft-abc", "registry/trainer:1", "s3://b/spec.json", cfg, {"a": "b"})
    trainer = manifest["spec"]["trainer"]
    assert manifest["apiVersion"] == TRAINJOB_API_VERSION and manifest["kind"] == "TrainJob"
    assert manifest["spec"]["runtimeRef"] == {"name": "torch-distributed"}
    assert manifest["spec"]["activeDeadlineSeconds"] == cfg.cluster.trainjob_timeout_s
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8"}
    assert trainer["command"] == [
        "python",
        "-m",
        "torch.distributed.run",
        "-m",
        "intentops.training.launch",
        "s3://b/spec.json",
    ]
    env = {e["name"]: e for e in trainer["env"]}
    assert env[WORKER_ENV]["value"] == "1"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3",
        "key": "AWS_SECRET_ACCESS_KEY",
        "optional": True,
    }
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["optional"] is False
    assert all("value" not in e for name, e in env.items() if name != WORKER_ENV)  # no secret value is copied
    assert _cluster_config(training_nodes=2, gpus_per_training_stage=0).cluster.training_processes == 0
    cpu = trainjob_manifest("n", "i", "s", _cluster_config(training_nodes=2, gpus_per_training_stage=0), {})
    assert "resourcesPerNode" not in cpu["spec"]["trainer"] and cpu["spec"]["trainer"]["numProcPerNode"] == 1


def test_job_names_are_dns_labels_stable_per_run_and_numbered_per_attempt() -> None:
    run = "3f6c1f1e-1b7e-4f57-9d0b-7a0f4f1c2d3e"
    first, second = job_name("grpo2", run, 1), job_name("grpo2", run, 2)
    assert first == job_name("grpo2", run, 1) and second == first + "-a2"
    assert first != job_name("grpo2", "another-run", 1)
    for name in (first, second, job_name("sft", None, 17)):
        assert len(name) <= 63 and name[0].isalpha() and all(c.islower() or c.isdigit() or c == "-" for c in name)


def test_state_reads_the_trainjob_conditions() -> None:
    assert trainjob_state({})[0] == "running"
    running = {"status": {"jobsStatus": [{"name": "node", "active": 2, "ready": 1}]}}
    assert trainjob_state(running) == ("running", "node: 2 active, 1 ready")
    done = {"status": {"conditions": [{"type": "Complete", "status": "True", "message": "jobs completed"}]}}
    assert trainjob_state(done) == ("complete", "Complete: jobs completed")
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    assert trainjob_state(failed) == ("failed", "Failed: DeadlineExceeded")
    assert trainjob_state({"status": {"conditions": [{"type": "Failed", "status": "False"}]}})[0] == "running"


def test_several_nodes_need_a_location_every_node_reaches() -> None:
    with pytest.raises(ConfigError, match="storage__checkpoint_uri: cluster__training_nodes=2 needs a location"):
        load_config(None, {"cluster__training_nodes": 2})
    load_config(None, {"cluster__training_nodes": 2, "storage__checkpoint_uri": "s3://bucket/runs"})


def test_a_retried_stage_follows_its_running_job_and_resubmits_after_a_failed_one() -> None:
    run = "run-1"
    applied: list[str] = []

    def manifest_for(name: str) -> dict[str, Any]:
        applied.append(name)
        return trainjob_manifest(name, "img", "s3://b/spec.json", _cluster_config(training_nodes=2), {})

    with FakeKubernetes() as fake:
        runner = TrainJobRunner(fake.api_client(), NAMESPACE, poll_s=0.01)
        assert runner.submit_or_find(manifest_for, "sft", run) == (job_name("sft", run, 1), "running")
        assert runner.submit_or_find(manifest_for, "sft", run) == (job_name("sft", run, 1), "running")
        assert applied == [job_name("sft", run, 1)]  # a running job is followed, not submitted twice
        failed = {"conditions": [{"type": "Failed", "status": "True", "message": "node-0 OOMKilled"}]}
        fake.set_status("TrainJob", job_name("sft", run, 1), failed)
        assert runner.submit_or_find(manifest_for, "sft", run) == (job_name("sft", run, 2), "running")
        assert applied == [job_name("sft", run, 1), job_name("sft", run, 2)]
        assert fake.get("TrainJob", job_name("sft", run, 1)) is not None  # the failed attempt is kept for its logs


class _TorchRuntime:
    """What the Trainer's torch runtime does with an applied TrainJob: one pod per node running its command with
    the PET_* rendezvous variables, then the Complete or Failed condition."""

    def __init__(self, fake: FakeKubernetes) -> None:
        self.fake = fake
        self.threads: list[threading.Thread] = []

    def __call__(self, job: dict[str, Any]) -> None:
        thread = threading.Thread(target=self._run, args=(job["metadata"]["name"], job["spec"]["trainer"]))
        thread.start()
        self.threads.append(thread)

    def _run(self, name: str, trainer: dict[str, Any]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        nodes = []
        for rank in range(trainer["numNodes"]):
            env = {
                **os.environ,
                **{e["name"]: e["value"] for e in trainer["env"] if "value" in e},
                "PET_NNODES": str(trainer["numNodes"]),
                "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
                "PET_NODE_RANK": str(rank),
                "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
            }
            command = [sys.executable, *trainer["command"][1:]]
            pod = f"{name}-node-0-{rank}"
            labels = {JOBSET_NAME_LABEL: name, NODE_INDEX_LABEL: str(rank)}
            self.fake.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "labels": labels}})
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            nodes.append((pod, process))
        codes = []
        for pod, process in nodes:
            output, _ = process.communicate(timeout=600)
            self.fake.pod_logs[pod] = output
            codes.append(process.returncode)
        condition = (
            {"type": "Complete", "status": "True", "message": "jobs completed"}
            if not any(codes)
            else {"type": "Failed", "status": "True", "message": f"node exit codes {codes}"}
        )
        self.fake.set_status("TrainJob", name, {"conditions": [condition]})


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch, training_config: RunConfig, s3_bucket: str, tmp_path: Path) -> Any:
    """A config asking for two CPU nodes, with the pod's runner pointed at the fake API and its torch runtime."""
    cfg = training_config.model_copy(deep=True)
    cfg.registry.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.cluster.training_nodes = 2
    cfg.cluster.gpus_per_training_stage = 0
    cfg.cluster.training_processes = 1
    cfg.storage.checkpoint_uri = f"s3://{s3_bucket}/runs"
    cfg.sft.epochs = 1
    with FakeKubernetes() as fake:
        runtime = _TorchRuntime(fake)
        fake.on_apply("TrainJob", runtime)
        runner = TrainJobRunner(fake.api_client(), NAMESPACE, poll_s=0.5)
        monkeypatch.setattr(trainjob, "runner_in_pod", lambda _cfg: (runner, "registry/trainer:1"))
        yield cfg, fake
        for thread in runtime.threads:
            thread.join(timeout=600)


@pytest.mark.slow
def test_sft_on_two_nodes_trains_one_model_and_hands_it_to_the_stage(
    two_nodes: tuple[RunConfig, FakeKubernetes], small_dataset_dir: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from intentops.stages.training import sft_warmup

    cfg, fake = two_nodes
    meta = sft_warmup(cfg, small_dataset_dir, tmp_path / "sft", pipeline_run_id="run-nodes")
    assert ModelFolder(tmp_path / "sft").exists() and meta["stage"] == "sft"
    assert ModelFolder(tmp_path / "sft").card()["training"]["processes"] == 2  # one process group over both nodes
    (job,) = fake.names("TrainJob")
    assert sorted(fake.pod_logs) == [f"{job}-node-0-0", f"{job}-node-0-1"]
    runs = MlflowClient(cfg.registry.tracking_uri).search_runs(
        [e.experiment_id for e in MlflowClient(cfg.registry.tracking_uri).search_experiments()]
    )
    assert [r.info.run_name for r in runs].count("sft") == 1  # rank 0 alone tracks the stage
    assert fake.get("TrainJob", job)["status"]["conditions"][0]["type"] == "Complete"
    weights = ModelFolder(tmp_path / "sft").content_hash()
    # A retried stage pod takes the finished job's model instead of training again.
    sft_warmup(cfg, small_dataset_dir, tmp_path / "sft-retry", pipeline_run_id="run-nodes")
    assert len(fake.applies("TrainJob")) == 1
    assert ModelFolder(tmp_path / "sft-retry").content_hash() == weights


@pytest.mark.slow
def test_a_failed_trainjob_raises_with_the_workers_error_and_the_rank0_log(
    two_nodes: tuple[RunConfig, FakeKubernetes], small_dataset_dir: Path, tmp_path: Path
) -> None:
    from intentops.stages.training import sft_warmup

    cfg, _ = two_nodes
    cfg.model.base_model = cfg.storage.checkpoint_uri.replace("/runs", "/no-such-base-model")
    with pytest.raises(TrainingLaunchError) as raised:
        sft_warmup(cfg, small_dataset_dir, tmp_path / "sft", pipeline_run_id="run-broken")
    message = str(raised.value)
    assert "TrainJob intentops-sft-" in message and "Failed: node exit codes" in message
    assert "no-such-base-model: no such object or prefix" in message  # the workers' reported exception
    assert "last lines of the rank-0 node's log:\n--- intentops-sft-" in message
    assert not ModelFolder(tmp_path / "sft").exists()


def test_a_grpo_result_travels_with_its_model_folder(tmp_path: Path) -> None:
    """A node's result names files inside the model folder it uploads; the stage finds them in its download."""
    from intentops.training.grpo import GrpoResult

    node = tmp_path / "node" / "model"
    result = GrpoResult("grpo1", node, node / "rollouts.parquet", 12, steps=3, scores_path=node / "scores.parquet")
    sent = result.to_dict(relative_to=node)
    assert (sent["model_dir"], sent["rollouts_path"], sent["scores_path"]) == (
        ".",
        "rollouts.parquet",
        "scores.parquet",
    )
    here = tmp_path / "stage" / "model"
    back = GrpoResult.from_dict(sent, base=here)
    assert (back.model_dir, back.rollouts_path, back.scores_path) == (
        here,
        here / "rollouts.parquet",
        here / "scores.parquet",
    )
    assert GrpoResult.from_dict(result.to_dict(), base=here) == result  # absolute paths (one pod) stay as they are
