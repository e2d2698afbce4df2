"""GPU check: how fast SFT, GRPO and evaluation run on one accelerator, on a model of a real size.

Builds a random-init model with Qwen2.5-0.5B's transformer shape (24 layers, hidden 896, 14 heads / 2 KV heads, MLP
4864, the vocabulary padded to 151,936 rows) and a BPE tokenizer trained on the bundled example, then runs the
product's own stage functions on the bundled example (nothing is downloaded):

- SFT warm-up (`run_sft`, bf16 where supported): tokens/s over the timed optimizer steps, and MFU = 6 x parameters x
  tokens/s / peak bf16 FLOP/s (the 6N rule; attention FLOPs are left out, so MFU is slightly understated);
- GRPO stage 1 (`run_grpo`, rollouts by transformers generation, or vLLM colocate with `--vllm` when importable):
  seconds per optimizer step and rollouts (scored completions) per second;
- evaluation: samples/s of batched generation and of label scoring on the test split;
- peak accelerator memory per section.

    python bench/gpu_check.py                  # on the GPU machine, at most ~8 minutes on one H100/H200
    python bench/gpu_check.py --smoke          # CPU, tiny shapes, a few steps: what the test suite runs

One Markdown table is printed and every figure is written to `--out` (JSON).
"""

from __future__ import annotations

import argparse
import logging
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from intentops.artifacts import Dataset, Records
from intentops.catalog import load_catalog
from intentops.cli import add_config_argument
from intentops.config import EXAMPLE_DIR, RunConfig, load_config
from intentops.io import write_json

log = logging.getLogger("bench.gpu_check")

# Dense bf16 peak of the accelerators this check is meant for (vendor datasheets, SXM parts, no sparsity).
PEAK_BF16_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12}
QWEN25_05B_SHAPE = {
    "model__tiny_hidden_size": 896,
    "model__tiny_num_layers": 24,
    "model__tiny_num_heads": 14,
    "model__tiny_num_kv_heads": 2,
    "model__tiny_intermediate_size": 4864,
    "model__tiny_max_positions": 2048,
    "model__tiny_vocab_size": 8000,
}
QWEN25_VOCAB = 151_936
SMOKE_SHAPE = {"model__tiny_hidden_size": 32, "model__tiny_num_layers": 1, "model__tiny_intermediate_size": 64}


class StepTimer(TrainerCallback):
    """Wall seconds of each optimizer step (synchronised with the accelerator) and the trainer's token count."""

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self.tokens_at_step: dict[int, float] = {}
        self._started = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        _synchronize()
        self._started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        _synchronize()
        self.step_seconds.append(time.perf_counter() - self._started)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "num_tokens" in logs:
            self.tokens_at_step[state.global_step] = float(logs["num_tokens"])

    def timed(self, warmup: int) -> tuple[int, float]:
        """(steps, seconds) after the first `warmup` steps (allocator and kernel warm-up are not throughput)."""
        steps = self.step_seconds[warmup:] or self.step_seconds
        return len(steps), sum(steps)

    def tokens_per_second(self, warmup: int) -> float | None:
        """Tokens of the timed steps / their seconds, from TRL's cumulative `num_tokens` (logged every step)."""
        first, last = warmup, len(self.step_seconds)
        if first not in self.tokens_at_step or last not in self.tokens_at_step or last <= first:
            return None
        seconds = sum(self.step_seconds[first:last])
        return (self.tokens_at_step[last] - self.tokens_at_step[first]) / seconds if seconds else None


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def device_info() -> dict[str, Any]:
    """The accelerator's name and dense bf16 peak (None when unknown: MFU is then not reported)."""
    import torch

    if not torch.cuda.is_available():
        return {"device": f"cpu ({platform.machine()})", "peak_bf16_flops": None, "torch": torch.__version__}
    name = torch.cuda.get_device_name(0)
    peak = next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)
    return {"device": name, "peak_bf16_flops": peak, "torch": torch.__version__, "cuda": torch.version.cuda}


def check_config(config: str | None, smoke: bool, use_vllm: bool, overrides: dict[str, Any]) -> RunConfig:
    """The run configuration reshaped for the check (model shape, short runs, one log line per step), then the
    caller's overrides."""
    knobs: dict[str, Any] = {
        **(SMOKE_SHAPE if smoke else QWEN25_05B_SHAPE),
        "model__tiny_copy_tokens": False,  # label scoring needs the name and `(` as separate tokens
        "sft__logging_steps": 1,
        "sft__check_samples": 0,
        "sft__resume": False,
        "sft__save_steps": 10_000,
        "sft__batch_size": 4 if smoke else 16,
        "grpo__logging_steps": 1,
        "grpo__save_steps": 10_000,
        "grpo__stage1_max_steps": 3 if smoke else 12,
        "grpo__batch_size": 4 if smoke else 16,
        "grpo__num_generations": 2 if smoke else 8,
        "grpo__max_completion_length": 8 if smoke else 32,
        "grpo__use_vllm": use_vllm,
        "evaluation__max_new_tokens": 8 if smoke else 32,
        "evaluation__baselines": False,
        **overrides,
    }
    return load_config(config, knobs)


def _pad_vocabulary(model_dir: Path, rows: int) -> int:
    """Pad the embedding/output matrix to `rows` (as Qwen2.5 does): the output projection then costs what it does in
    the real model. Returns the parameter count."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if rows > model.config.vocab_size:
        model.resize_token_embeddings(rows, mean_resizing=False)
        model.save_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())


def run_check(work: Path, cfg: RunConfig, smoke: bool) -> dict[str, Any]:
    """Build the model, then time SFT, GRPO stage 1 and evaluation; every figure in one dict."""
    from intentops.data.split import split_dataset
    from intentops.evaluation import load_split
    from intentops.evaluation.predictors import make_predictor
    from intentops.tiny_model import create_tiny_model
    from intentops.training.grpo import run_grpo
    from intentops.training.sft import run_sft

    cfg = cfg.model_copy(deep=True)
    cfg.registry.tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    dataset = work / "dataset"
    if not dataset.exists():
        split_dataset(Records(EXAMPLE_DIR).records, load_catalog(Dataset(EXAMPLE_DIR).catalog_path), cfg.data, dataset)
    train = load_split(dataset, "train")
    catalog = load_catalog(Dataset(dataset).catalog_path)
    base = create_tiny_model(dataset, catalog, cfg.model, work / "base", cfg.prompt)
    parameters = _pad_vocabulary(base, 0 if smoke else QWEN25_VOCAB)
    cfg.model.profile, cfg.model.base_model = "pretrained", str(base)
    steps_wanted = 4 if smoke else 60
    cfg.sft.epochs = steps_wanted * cfg.sft.batch_size / len(train)
    info = {**device_info(), "parameters": parameters, "train_records": len(train)}
    warmup = 1 if smoke else 5

    _reset_peak()
    sft_timer = StepTimer()
    run_sft(dataset, str(base), cfg, work / "sft", callbacks=[sft_timer])
    steps, seconds = sft_timer.timed(warmup)
    tokens_s = sft_timer.tokens_per_second(warmup)
    peak = info["peak_bf16_flops"]
    sft = {
        "steps_timed": steps,
        "seconds_per_step": seconds / steps if steps else None,
        "tokens_per_second": tokens_s,
        "mfu": 6 * parameters * tokens_s / peak if tokens_s and peak else None,
        "peak_memory_gib": _peak_gib(),
    }

    _reset_peak()
    grpo_timer = StepTimer()
    run_grpo(Dataset(dataset).train, work / "sft", cfg, work / "grpo1", "grpo1", callbacks=[grpo_timer])
    steps, seconds = grpo_timer.timed(1)
    rollouts_per_step = cfg.grpo.batch_size * cfg.grpo.gradient_accumulation_steps
    grpo = {
        "rollouts": "vllm colocate" if cfg.grpo.use_vllm else "transformers generate",
        "steps_timed": steps,
        "seconds_per_step": seconds / steps if steps else None,
        "rollouts_per_second": rollouts_per_step * steps / seconds if seconds else None,
        "peak_memory_gib": _peak_gib(),
    }

    texts = [record["text"] for record in load_split(dataset, "test", max_samples=16 if smoke else 0)]
    evaluation: dict[str, Any] = {"samples": len(texts)}
    for decoding in ("generate", "label_scoring"):
        _reset_peak()
        predictor = make_predictor(decoding, work / "grpo1", cfg, progress=False)
        predictor.predict(texts[: cfg.evaluation.batch_size])  # warm-up batch
        _synchronize()
        started = time.perf_counter()
        predictor.predict(texts)
        _synchronize()
        evaluation[decoding] = {
            "samples_per_second": len(texts) / (time.perf_counter() - started),
            "peak_memory_gib": _peak_gib(),
        }
        del predictor
    return {"info": info, "sft": sft, "grpo": grpo, "evaluation": evaluation}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def render_table(result: dict[str, Any]) -> str:
    """The one table the check prints: a row per measured figure."""
    sft, grpo, evaluation = result["sft"], result["grpo"], result["evaluation"]
    rows = [
        ("SFT", "tokens/s", _fmt(sft["tokens_per_second"], 0)),
        ("SFT", "MFU % (6N rule, bf16 peak)", _fmt(sft["mfu"] * 100 if sft["mfu"] is not None else None)),
        ("SFT", "s per optimizer step", _fmt(sft["seconds_per_step"], 3)),
        ("SFT", "peak memory GiB", _fmt(sft["peak_memory_gib"], 2)),
        ("GRPO", f"s per optimizer step ({grpo['rollouts']})", _fmt(grpo["seconds_per_step"], 3)),
        ("GRPO", "rollouts/s", _fmt(grpo["rollouts_per_second"])),
        ("GRPO", "peak memory GiB", _fmt(grpo["peak_memory_gib"], 2)),
    ]
    for decoding in ("generate", "label_scoring"):
        rows.append(("evaluation", f"{decoding} samples/s", _fmt(evaluation[decoding]["samples_per_second"])))
        rows.append(("evaluation", f"{decoding} peak memory GiB", _fmt(evaluation[decoding]["peak_memory_gib"], 2)))
    info = result["info"]
    lines = [
        f"device: {info['device']}; model: {info['parameters']:,} parameters; {info['train_records']} training records",
        "",
        "| stage | figure | value |",
        "|---|---|---:|",
        *(f"| {stage} | {figure} | {value} |" for stage, figure, value in rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU-sized model and a few steps (for the test suite).")
    parser.add_argument("--vllm", action="store_true", help="GRPO rollouts through vLLM colocate (needs vllm).")
    parser.add_argument("--work", type=Path, default=Path("bench-gpu-check"), help="Scratch folder (created).")
    parser.add_argument("--out", type=Path, help="JSON with every figure (default WORK/gpu_check.json).")
    add_config_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.overrides)}
    if args.work.exists() and any(args.work.iterdir()):
        parser.error(f"--work {args.work} is not empty; the check writes a fresh scratch folder")
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = run_check(args.work, check_config(args.config, args.smoke, args.vllm, overrides), args.smoke)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["command"] = shlex.join([Path(sys.executable).name, *sys.argv])
    write_json(args.out or args.work / "gpu_check.json", result)
    print(render_table(result))
    print(f"\n{result['seconds']} s in all; reproduce: {result['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
