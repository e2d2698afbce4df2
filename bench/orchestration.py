"""Where a local run's orchestration overhead goes: each task's wall time against its stage's own seconds.

    python bench/orchestration.py intentops-run            # the work folder of a finished `intentops run`
    python bench/orchestration.py --exit-cost              # seconds a stage process spends exiting, with and without
                                                           # the local runs' fast exit (intentops.stages.FAST_EXIT_ENV)

A task's wall time runs from kfp.local's "Executing task" line to its "finished with status" line in WORKDIR/run.log;
its stage seconds are the `stage_seconds` the stage function recorded (WORKDIR/summary.json). What is left is the
process start, the KFP executor around the stage function, and the process exit; the gaps between tasks are
kfp.local's own bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from intentops.run_log import RUN_LOG
from intentops.stages import FAST_EXIT_ENV

# What a training stage's process has imported by the time it exits.
STAGE_IMPORTS = "import mlflow, torch, transformers; import intentops.training.grpo; import intentops.stages"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_LINE = re.compile(r"(\d\d:\d\d:\d\d\.\d+) - \w+ - (Executing task|Task) '([^']+)'(.*)")


def task_spans(run_log: Path) -> dict[str, tuple[float, float]]:
    """{task: (start, end)} in seconds of the day, from kfp.local's lines in a run log."""
    starts: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}
    for line in run_log.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _TASK_LINE.match(_ANSI.sub("", line))
        if not match:
            continue
        clock, kind, task, rest = match.groups()
        moment = datetime.strptime(clock, "%H:%M:%S.%f")
        seconds = moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6
        if kind == "Executing task":
            starts[task] = seconds
        elif "finished with status" in rest and task in starts:
            spans[task] = (starts[task], seconds)
    return spans


def exit_seconds(fast_exit: bool) -> float:
    """Seconds from a stage-like process's last statement to its exit, with or without the fast exit."""
    env = {key: value for key, value in os.environ.items() if key != FAST_EXIT_ENV}
    if fast_exit:
        env[FAST_EXIT_ENV] = "1"
    script = f"{STAGE_IMPORTS}\nimport time; print(time.time(), flush=True)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    return time.time() - float(done.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, nargs="?", help="Work folder of a finished `intentops run`.")
    parser.add_argument("--exit-cost", action="store_true", help="Time a stage process's exit instead.")
    args = parser.parse_args(argv)
    if args.exit_cost:
        for fast_exit in (False, True):
            print(
                f"exit after the stage imports, fast exit {'on' if fast_exit else 'off'}: "
                f"{exit_seconds(fast_exit):.2f} s"
            )
        return 0
    if args.workdir is None:
        parser.error("give a work folder, or --exit-cost")
    summary = json.loads((args.workdir / "summary.json").read_text(encoding="utf-8"))
    spans = task_spans(args.workdir / RUN_LOG)
    stage_seconds = summary["stage_seconds"]
    print("| task | task wall s | stage s | outside the stage s |")
    print("|---|---:|---:|---:|")
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    for task, (start, end) in ordered:
        stage = stage_seconds.get(task, 0.0)
        print(f"| {task} | {end - start:.1f} | {stage:.1f} | {end - start - stage:.1f} |")
    in_tasks = sum(end - start - stage_seconds.get(task, 0.0) for task, (start, end) in ordered)
    gaps = sum(max(0.0, nxt[1][0] - cur[1][1]) for cur, nxt in pairwise(ordered))
    print(
        f"\npipeline wall {summary['wall_seconds']:.1f} s; stages {summary['stages_total_seconds']:.1f} s; "
        f"outside the stages, inside tasks {in_tasks:.1f} s; between tasks {gaps:.1f} s; "
        f"orchestration overhead {summary['overhead_seconds']:.1f} s ({summary['overhead_share']:.1%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
