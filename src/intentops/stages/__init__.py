"""One function per pipeline stage: its MLflow stage run, its timing and the metadata of the artifacts it writes.

The KFP components and the CLI commands are one-call shims over these, so a stage behaves the same in a pod, under
`intentops run` (kfp.local) and from the command line. Each function returns the metadata the Kubeflow UI shows on
its output artifact (always with `stage_seconds`). SFT, GRPO and evaluation open their MLflow stage run inside
`run_sft`, `run_grpo` and `evaluate_model`, because only the main process of a multi-GPU launch may log and the
evaluation records its run id in its metrics; the other stages open theirs here.
"""

import atexit
import gc
import os

from intentops.stages.data import ChangeCheck, check_changes, convert_itag, validate_dataset
from intentops.stages.evaluation import (
    EvaluateOutputs,
    GateOutputs,
    decide_gate,
    evaluate,
    evaluate_champion,
    gate,
)
from intentops.stages.release import deploy_vllm, register_model
from intentops.stages.training import ChainResult, GrpoOutputs, grpo, mine_hard_samples, sft_warmup, train_chain

# Set by `intentops run` for its kfp.local tasks. A task is a process that ends soon after its stage returns, and
# the cyclic garbage collections of interpreter shutdown walk every object torch, transformers and TRL created:
# about 3 s per task on the 2-core machine (bench/README.md, "orchestration"). Frozen objects are skipped and the
# exiting process frees their memory anyway; atexit handlers registered before this one (logging, weakref
# finalizers) still run after it. Not on a cluster: there a pod's teardown is small next to scheduling it, and
# Triton's nanobind bindings report the objects no collection freed as leaks, in every training pod's log.
FAST_EXIT_ENV = "INTENTOPS_FAST_EXIT"
if os.environ.get(FAST_EXIT_ENV) == "1":
    atexit.register(gc.freeze)

__all__ = [
    "FAST_EXIT_ENV",
    "ChainResult",
    "ChangeCheck",
    "EvaluateOutputs",
    "GateOutputs",
    "GrpoOutputs",
    "check_changes",
    "convert_itag",
    "decide_gate",
    "deploy_vllm",
    "evaluate",
    "evaluate_champion",
    "gate",
    "grpo",
    "mine_hard_samples",
    "register_model",
    "sft_warmup",
    "train_chain",
    "validate_dataset",
]
