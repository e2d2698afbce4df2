"""One training process per accelerator: a stage re-runs itself under torchrun when its pod has several GPUs.

A KFP task runs one container command, so a training stage that asks for 8 GPUs starts as one Python process. The
stage function (`intentops.stages.training`) then calls `run_in_processes`, which starts
`torch.distributed.run --standalone --nproc_per_node N -m intentops.training.launch SPEC` and waits: each worker
rebuilds the configuration from SPEC, calls the same `run_sft` / `run_grpo`, and the trainer forms one process group
(NCCL on GPUs, gloo on CPUs) with DeepSpeed ZeRO taken from `sft.deepspeed` / `grpo.deepspeed` by transformers. Only
rank 0 opens the MLflow stage run and publishes the model folder and rollout log; it writes the stage result to a
JSON file the launching process reads back. torchrun is used rather than `accelerate launch`, whose `--cpu` mode
starts a single process (accelerate/commands/launch.py `launch_command` -> `simple_launcher`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from intentops.config import RunConfig

log = logging.getLogger(__name__)

WORKER_ENV = "INTENTOPS_TRAINING_WORKER"
_LOG_TAIL_LINES = 40
_ERROR_SUFFIX = ".error.txt"


class TrainingLaunchError(RuntimeError):
    """The training processes of a stage failed; the message holds the exit status and the end of their log."""


def distributed_state() -> Any:
    """accelerate's process state, CPU-aware: without `cpu=True` a CPU-only torchrun worker would not join the
    gloo group and every rank would think it is the main process (accelerate/state.py `_prepare_backend`)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def processes_for(cfg: RunConfig) -> int:
    """How many training processes the stage runs: `cluster.training_processes`, else one per visible GPU."""
    if cfg.cluster.training_processes:
        return cfg.cluster.training_processes
    import torch

    return max(1, torch.cuda.device_count())


def in_worker() -> bool:
    """True inside a process started by `run_in_processes` (it must train, not launch again)."""
    return os.environ.get(WORKER_ENV) == "1"


def launch_command(processes: int, spec_path: Path) -> list[str]:
    """The torchrun command line that starts `processes` workers on this node."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "intentops.training.launch",
        str(spec_path),
    ]


def run_in_processes(trainer: str, cfg: RunConfig, processes: int, **kwargs: Any) -> dict[str, Any]:
    """Run `trainer` ("sft" or "grpo", called with `kwargs`) in `processes` workers; returns rank 0's report.

    The workers' output is passed through line by line; on failure the error names the exit status and shows the
    last lines of their log.
    """
    with tempfile.TemporaryDirectory(prefix="intentops-launch-") as scratch:
        spec_path, result_path = Path(scratch) / "spec.json", Path(scratch) / "result.json"
        spec = {
            "trainer": trainer,
            "config": cfg.model_dump(mode="json"),
            "kwargs": kwargs,
            "result": str(result_path),
            "errors": scratch,
        }
        spec_path.write_text(json.dumps(spec, default=str), encoding="utf-8")
        command = launch_command(processes, spec_path)
        log.info("%s: starting %d training processes (%s)", trainer, processes, " ".join(command[1:6]))
        tail: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
        env = {**os.environ, WORKER_ENV: "1"}
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                tail.append(line.rstrip("\n"))
            code = proc.wait()
        if code != 0:
            errors = sorted(Path(scratch).glob(f"*{_ERROR_SUFFIX}"))
            first = errors[0].read_text(encoding="utf-8") if errors else "no worker reported an exception"
            raise TrainingLaunchError(
                f"{trainer}: {processes} training processes failed (exit status {code}): {first}\n"
                "last lines of their log:\n" + "\n".join(tail)
            )
        if not result_path.is_file():
            raise TrainingLaunchError(f"{trainer}: the training processes exited 0 but rank 0 wrote no result")
        return json.loads(result_path.read_text(encoding="utf-8"))


def _work(spec: dict[str, Any]) -> None:
    """One worker: train the stage; rank 0 writes its result for the launching process."""
    cfg = RunConfig.model_validate(spec["config"])
    kwargs = spec["kwargs"]
    if spec["trainer"] == "sft":
        from intentops.training.sft import run_sft

        run_sft(kwargs["dataset_dir"], kwargs["base_model"], cfg, kwargs["out_dir"], kwargs.get("pipeline_run_id"))
        result: dict[str, Any] = {}
    else:
        from intentops.training.grpo import run_grpo

        result = run_grpo(
            kwargs["train_path"],
            kwargs["model_dir"],
            cfg,
            kwargs["out_dir"],
            kwargs["stage"],
            kwargs["pipeline_run_id"],
        ).to_dict()
    # No barrier here: after training, rank 0 alone scores the training set (GRPO stage 1), which may outlast a
    # collective's timeout; the other ranks are done once the model is saved.
    if distributed_state().is_main_process:
        Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m intentops.training.launch SPEC.json (started by run_in_processes)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    try:
        _work(spec)
    except Exception as exc:  # reported to the launching process, then re-raised for torchrun's exit status
        rank = os.environ.get("RANK", "0")
        error = Path(spec["errors"]) / f"rank{rank}{_ERROR_SUFFIX}"
        error.write_text(f"rank {rank}: {type(exc).__name__}: {exc}", encoding="utf-8")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
