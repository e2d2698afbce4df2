"""bench/gpu_check.py: the figures' arithmetic, and the whole check in --smoke mode on CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(BENCH))  # run as a script, the bench imports its siblings
    try:
        import gpu_check

        yield gpu_check
    finally:
        sys.path.remove(str(BENCH))


def test_tokens_per_second_uses_only_the_timed_steps(gpu_check) -> None:
    timer = gpu_check.StepTimer()
    timer.step_seconds = [5.0, 1.0, 2.0, 1.0]  # the 5 s first step is warm-up
    for step, tokens in ((1, 100.0), (2, 400.0), (3, 1000.0), (4, 1300.0)):
        timer.on_log(None, SimpleNamespace(global_step=step), None, logs={"num_tokens": tokens})
    assert timer.timed(1) == (3, 4.0)
    assert timer.tokens_per_second(1) == pytest.approx((1300 - 100) / 4.0)
    assert gpu_check.StepTimer().tokens_per_second(1) is None  # nothing logged: no figure, not a zero


def test_cpu_has_no_peak_and_so_no_mfu(gpu_check) -> None:
    info = gpu_check.device_info()
    assert info["device"].startswith("cpu") and info["peak_bf16_flops"] is None


@pytest.mark.slow
def test_smoke_run_measures_every_stage(gpu_check, tmp_path: Path, capsys) -> None:
    assert gpu_check.main(["--smoke", "--work", str(tmp_path / "work")]) == 0
    result = json.loads((tmp_path / "work" / "gpu_check.json").read_text())
    assert result["sft"]["tokens_per_second"] > 0 and result["sft"]["steps_timed"] >= 1
    assert result["grpo"]["seconds_per_step"] > 0 and result["grpo"]["rollouts_per_second"] > 0
    for decoding in ("generate", "label_scoring"):
        assert result["evaluation"][decoding]["samples_per_second"] > 0
    table = capsys.readouterr().out
    assert "| SFT | tokens/s |" in table and "| evaluation | label_scoring samples/s |" in table


def test_refuses_a_non_empty_work_folder(gpu_check, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("not the check's")
    with pytest.raises(SystemExit):
        gpu_check.main(["--smoke", "--work", str(tmp_path)])
    assert (tmp_path / "keep.txt").read_text() == "not the check's"
