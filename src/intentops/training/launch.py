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
SPEC_FILE, RESULT_FILE = "spec.json", "result.json"  # what a launch hands its workers, what rank 0 hands back


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
        spec_path, result_path = Path(scratch) / SPEC_FILE, Path(scratch) / RESULT_FILE
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


def _train(spec: dict[str, Any], kwargs: dict[str, Any], relative_to: Path | None = None) -> dict[str, Any]:
    """Run the stage's trainer in this worker; GRPO's result (paths relative to `relative_to` if given), or {}."""
    cfg = RunConfig.model_validate(spec["config"])
    if spec["trainer"] == "sft":
        from intentops.training.sft import run_sft

        run_sft(kwargs["dataset_dir"], kwargs["base_model"], cfg, kwargs["out_dir"], kwargs.get("pipeline_run_id"))
        return {}
    from intentops.training.grpo import run_grpo

    return run_grpo(
        kwargs["train_path"], kwargs["model_dir"], cfg, kwargs["out_dir"], kwargs["stage"], kwargs["pipeline_run_id"]
    ).to_dict(relative_to)


def _work(spec: dict[str, Any]) -> None:
    """One worker: train the stage; rank 0 writes its result for the launching process."""
    # No barrier after training: rank 0 alone scores the training set (GRPO stage 1), which may outlast a
    # collective's timeout; the other ranks are done once the model is saved.
    if spec.get("output"):
        _work_on_node(spec)
        return
    result = _train(spec, spec["kwargs"])
    if distributed_state().is_main_process:
        Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")


def _work_on_node(spec: dict[str, Any]) -> None:
    """A worker of a multi-node TrainJob (`intentops.training.trainjob`): inputs come from and the model and result
    go to the spec's shared location; result paths are relative to the uploaded model folder."""
    from intentops import storage

    state = distributed_state()
    kwargs = dict(spec["kwargs"])
    with state.local_main_process_first():  # one download per node into the shared cache
        for key in spec["inputs"]:
            if kwargs.get(key) and storage.is_s3(kwargs[key]):
                kwargs[key] = str(storage.ensure_local(kwargs[key]))
    with tempfile.TemporaryDirectory(prefix="intentops-node-") as scratch:
        out_dir = Path(scratch) / "model"
        result = _train(spec, {**kwargs, "out_dir": str(out_dir)}, relative_to=out_dir)
        if not state.is_main_process:
            return
        result_file = Path(scratch) / RESULT_FILE
        result_file.write_text(json.dumps(result), encoding="utf-8")
        storage.upload(out_dir, spec["output"])
        storage.upload(result_file, spec["result"])  # last: the stage reads the model only after the result


def _report_error(spec: dict[str, Any], exc: BaseException) -> None:
    """Leave the worker's exception where the launching process looks for it (a local folder or the TrainJob's
    shared location)."""
    rank = os.environ.get("RANK", "0")
    text = f"rank {rank}: {type(exc).__name__}: {exc}"
    if not spec.get("output"):
        (Path(spec["errors"]) / f"rank{rank}{_ERROR_SUFFIX}").write_text(text, encoding="utf-8")
        return
    from intentops import storage

    with tempfile.TemporaryDirectory(prefix="intentops-error-") as scratch:
        path = Path(scratch) / f"rank{rank}{_ERROR_SUFFIX}"
        path.write_text(text, encoding="utf-8")
        storage.upload(path, f"{spec['errors']}/{path.name}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m intentops.training.launch SPEC.json (started by run_in_processes)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from intentops import storage

    with storage.open_uri(args[0]) as handle:  # a local file, or the TrainJob's spec on S3
        spec = json.load(handle)
    try:
        _work(spec)
    except Exception as exc:  # reported to the launching process, then re-raised for torchrun's exit status
        _report_error(spec, exc)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
