"""bench/orchestration.py: a local run's overhead split per task from kfp.local's lines in run.log."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from intentops.run_log import RUN_LOG

BENCH = Path(__file__).resolve().parents[1] / "bench" / "orchestration.py"

RUN_LOG_TEXT = (
    "2026-12-02 14:13:18,100 INFO intentops.cli: running the pipeline\n"
    "14:13:20.762 - INFO - Executing task \x1b[96m'convert-itag'\x1b[0m\n"
    "14:13:20.762 - INFO - Streamed logs:\n"
    "    [KFP Executor 2026-12-02 14:13:20,873 INFO]: Looking for component `convert_itag`\n"
    "14:13:26.762 - INFO - Task \x1b[96m'convert-itag'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n"
    "14:13:26.862 - INFO - Executing task \x1b[96m'validate-dataset'\x1b[0m\n"
    "14:13:34.362 - INFO - Task \x1b[96m'validate-dataset'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n"
    "14:13:34.400 - INFO - Executing task \x1b[96m'sft-warmup'\x1b[0m\n"
)


@pytest.fixture
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_orchestration", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_task_spans_pair_each_tasks_start_and_finish_lines(tmp_path: Path, bench: ModuleType) -> None:
    log = tmp_path / RUN_LOG
    log.write_text(RUN_LOG_TEXT, encoding="utf-8")
    spans = bench.task_spans(log)
    assert set(spans) == {"convert-itag", "validate-dataset"}  # sft-warmup never finished
    start, end = spans["convert-itag"]
    assert end - start == pytest.approx(6.0)
    assert spans["validate-dataset"][1] - spans["validate-dataset"][0] == pytest.approx(7.5)


def test_the_table_shows_what_each_task_spent_outside_its_stage(
    tmp_path: Path, bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / RUN_LOG).write_text(RUN_LOG_TEXT, encoding="utf-8")
    summary = {
        "wall_seconds": 14.0,
        "stage_seconds": {"convert-itag": 5.4, "validate-dataset": 6.7},
        "stages_total_seconds": 12.1,
        "overhead_seconds": 1.9,
        "overhead_share": 1.9 / 14.0,
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    assert bench.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| convert-itag | 6.0 | 5.4 | 0.6 |" in out
    assert "| validate-dataset | 7.5 | 6.7 | 0.8 |" in out
    assert "between tasks 0.1 s" in out
    assert "orchestration overhead 1.9 s (13.6%)" in out
