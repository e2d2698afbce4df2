"""The log of `intentops run`: the console sees a readable view, WORKDIR/run.log keeps every byte.

The raw text below is what kfp.local prints for one task (shortened, layout as in a real run): its executor input,
component loading, the stage's own lines with a tqdm bar sharing a line with a log record, a Trainer log dict,
a known third-party deprecation warning with its code line, and the outputs block.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from intentops.run_log import PREVIOUS_RUN_LOG, RUN_LOG, ConsoleFilter, run_log

RAW = (
    "23:13:59.935 - INFO - Executing task \x1b[96m'sft-warmup'\x1b[0m\n"
    "23:13:59.936 - INFO - Streamed logs:\n"
    "    [KFP Executor 2026-12-01 23:13:59,998 INFO]: Looking for component `sft_warmup` in --component_module_path `/tmp/x.py`\n"
    '    [KFP Executor 2026-12-01 23:13:59,998 INFO]: Loading KFP component "sft_warmup" from /tmp/x.py\n'
    "    [KFP Executor 2026-12-01 23:13:59,999 INFO]: Got executor_input:\n"
    "    {\n"
    '        "inputs": {\n'
    '            "parameterValues": {"sft__epochs": 16}\n'
    "        }\n"
    "    }\n"
    "    [KFP Executor 2026-12-01 23:14:05,349 INFO]: training a 400-token byte-level BPE tokenizer on 54 records\n"
    "    [2026-12-01 23:14:05,414] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU. "
    "If you have GPU or other accelerator, we were unable to detect it.\n"
    "      0%|          | 0/7 [00:00<?, ?it/s]\r 14%|█▍        | 1/7 [00:00<00:00,  8.54it/s]"
    "[KFP Executor 2026-12-01 23:14:07,958 INFO]: sft step 7/7: mean_token_accuracy=0.0122\n"
    "    {'train_runtime': '0.234', 'train_loss': '6.21', 'epoch': '1'}\n"
    "    \r100%|██████████| 7/7 [00:00<00:00,  8.54it/s][KFP Executor 2026-12-01 23:14:07,959 INFO]: sft done\n"
    "    \r100%|██████████| 7/7 [00:00<00:00, 28.88it/s]\n"
    "    /venv/lib/python3.11/site-packages/transformers/modeling_utils.py:3312: FutureWarning: "
    "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing` instead.\n"
    "      warnings.warn(\n"
    "    /work/src/mine.py:10: UserWarning: something new\n"
    "      warn_here()\n"
    '    [KFP Executor 2026-12-01 23:14:08,000 INFO]: HTTP Request: POST http://127.0.0.1:5000/invocations "HTTP/1.1 200 OK"\n'
    "    [KFP Executor 2026-12-01 23:14:08,266 WARNING]: SFT model written\n"
    "    [KFP Executor 2026-12-01 23:14:08,267 INFO]: Wrote executor output file to /tmp/run/sft-warmup/executor_output.json.\n"
    "\n"
    "\n"
    "23:14:09.698 - INFO - Task \x1b[96m'sft-warmup'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n"
    "23:14:09.700 - INFO - Task \x1b[96m'sft-warmup'\x1b[0m outputs:\n"
    "    model: Model( name='model',\n"
    "                  uri='/tmp/run/sft-warmup/model',\n"
    "                  metadata={'stage': 'sft'} )\n"
    "--------------------------------------------------------------------------------\n"
    "23:14:09.703 - INFO - Executing task \x1b[96m'grpo-stage1'\x1b[0m\n"
)

EXPECTED = [
    "23:13:59.935 - INFO - Executing task \x1b[96m'sft-warmup'\x1b[0m",
    "    [23:14:05] training a 400-token byte-level BPE tokenizer on 54 records",
    "    [23:14:07] sft step 7/7: mean_token_accuracy=0.0122",
    "    100%|██████████| 7/7 [00:00<00:00,  8.54it/s]",
    "    [23:14:07] sft done",
    "    /work/src/mine.py:10: UserWarning: something new",
    "      warn_here()",
    "    [23:14:08 WARNING] SFT model written",
    "23:14:09.698 - INFO - Task \x1b[96m'sft-warmup'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "--------------------------------------------------------------------------------",
    "23:14:09.703 - INFO - Executing task \x1b[96m'grpo-stage1'\x1b[0m",
]


def _filtered(text: str) -> list[str]:
    console = ConsoleFilter()
    return [shown for line in text.split("\n")[:-1] for shown in console.feed(line)]


def test_the_console_sees_the_stage_lines_one_complete_bar_and_unknown_warnings() -> None:
    assert _filtered(RAW) == EXPECTED


def test_a_failing_stage_is_shown_even_right_after_its_executor_input() -> None:
    raw = (
        "    [KFP Executor 2026-12-01 23:13:59,999 INFO]: Got executor_input:\n"
        "    {\n"
        '        "inputs": {}\n'
        "    }\n"
        "    Traceback (most recent call last):\n"
        "      ValueError: bad knob\n"
        "23:14:09.698 - ERROR - Task 'sft-warmup' finished with status FAILURE\n"
    )
    assert _filtered(raw) == [
        "    Traceback (most recent call last):",
        "      ValueError: bad knob",
        "23:14:09.698 - ERROR - Task 'sft-warmup' finished with status FAILURE",
    ]


def test_run_log_keeps_everything_in_the_file_and_the_previous_run_aside(tmp_path: Path, capsys) -> None:
    (tmp_path / RUN_LOG).write_text("the run before\n", encoding="utf-8")
    with run_log(tmp_path) as path:
        sys.stdout.write(RAW[: len(RAW) // 2])  # a write may end mid-line
        sys.stdout.write(RAW[len(RAW) // 2 :])
        logging.getLogger("intentops.test").warning("a record of the job itself")
    assert path == tmp_path / RUN_LOG
    assert (tmp_path / PREVIOUS_RUN_LOG).read_text(encoding="utf-8") == "the run before\n"
    written = path.read_bytes().decode("utf-8")  # as written: tqdm's carriage returns included
    assert written.startswith(RAW) and "a record of the job itself" in written
    assert capsys.readouterr().out.splitlines() == EXPECTED
    with run_log(tmp_path, full=True):
        sys.stdout.write(RAW)
    assert capsys.readouterr().out == RAW


def test_the_console_drops_nanobinds_exit_report_of_a_fast_exiting_task() -> None:
    """Triton's bindings list what the skipped shutdown collections would have freed; the log file keeps it."""
    raw = [
        "    [KFP Executor 2026-12-02 14:05:03,615 INFO]: Wrote executor output file to /tmp/run/executor_output.json.",
        "    nanobind: leaked 4 instances!",
        ' - leaked instance 0x7fd5073cdbe8 of type "triton._C.libtriton.ir.attribute"',
        "    nanobind: leaked 64 types!",
        '     - leaked type "triton._C.libtriton.ir.location"',
        "     - ... skipped remainder",
        "    nanobind: leaked 514 functions!",
        '     - leaked function "__str__"',
        "    nanobind: this is likely caused by a reference counting issue in the binding code.",
        "    See https://nanobind.readthedocs.io/en/latest/refleaks.html    ",
        "    - leaked items in my own stage's list: 3",
        "14:05:04.326 - INFO - Task \x1b[96m'sft-warmup'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    ]
    console = ConsoleFilter()
    shown = [out for line in raw for out in console.feed(line)]
    assert shown == [
        "    - leaked items in my own stage's list: 3",
        "14:05:04.326 - INFO - Task \x1b[96m'sft-warmup'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    ]
