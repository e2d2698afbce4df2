"""What every IntentOps component shares at pipeline-build time: the pinned image and the pod settings.

A component's Python body runs inside the trainer image and can only import `intentops`, so nothing here is used
at run time. This module is the compile-time side: the base image (images/versions.env resolved as images/build.sh
tags it, so `IMAGE_REGISTRY=... IMAGE_TAG=... intentops compile` names the pushed image; intentops.images), and
`StageSpec` + `apply_stage` that turn one stage's declared needs (CPU/memory, GPU, secrets, caching, retries) into
KFP task settings and kfp-kubernetes platform config.

GPU placement is decided per run: the GPU count is the `cluster__gpus_per_training_stage` pipeline parameter and
the node selector / tolerations are outputs of the resolve-config step (built from the `cluster__*` knobs), wired
through `kubernetes.add_node_selector_json` / `add_toleration_json` (KFP backend >= 2.4).
"""

from __future__ import annotations

from dataclasses import dataclass

from kfp import kubernetes
from kfp.dsl import PipelineTask
from kfp.dsl.pipeline_channel import PipelineChannel

from intentops.config import MLFLOW_OPTIONAL_ENV, MLFLOW_REQUIRED_ENV, S3_ENV
from intentops.images import image_pins

TRAINER_IMAGE: str = image_pins()["TRAINER_IMAGE"]
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class StageSpec:
    """One stage's pod needs; each components/<stage>/component.py declares its own `SPEC`."""

    name: str
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    gpu: bool = False
    caching: bool = False
    retries: int = 0
    s3: bool = True
    mlflow: bool = True

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"{self.name}: retries must be >= 0, got {self.retries}")


@dataclass(frozen=True)
class RunSettings:
    """Per-run values the pod settings depend on (pipeline parameters or resolve-config outputs)."""

    gpus: PipelineChannel | int
    gpu_node_selector: PipelineChannel | dict
    gpu_tolerations: PipelineChannel | list
    s3_secret: PipelineChannel | str
    mlflow_secret: PipelineChannel | str


def apply_stage(task: PipelineTask, spec: StageSpec, run: RunSettings) -> PipelineTask:
    """Apply a stage's resources, GPU placement, secrets, caching and retries to its task."""
    task.set_display_name(spec.name)
    task.set_cpu_request(spec.cpu_request).set_cpu_limit(spec.cpu_limit)
    task.set_memory_request(spec.memory_request).set_memory_limit(spec.memory_limit)
    task.set_caching_options(enable_caching=spec.caching)
    if spec.retries:
        # Transient failures (node preemption, a lost GPU, an S3 hiccup) are retried with backoff.
        task.set_retry(num_retries=spec.retries, backoff_duration="60s", backoff_factor=2.0)
    if spec.gpu:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(run.gpus)
        kubernetes.add_node_selector_json(task, run.gpu_node_selector)
        kubernetes.add_toleration_json(task, run.gpu_tolerations)
    if spec.s3:
        kubernetes.use_secret_as_env(task, secret_name=run.s3_secret, secret_key_to_env=S3_ENV, optional=True)
    if spec.mlflow:
        kubernetes.use_secret_as_env(task, secret_name=run.mlflow_secret, secret_key_to_env=MLFLOW_REQUIRED_ENV)
        kubernetes.use_secret_as_env(
            task, secret_name=run.mlflow_secret, secret_key_to_env=MLFLOW_OPTIONAL_ENV, optional=True
        )
    return task
