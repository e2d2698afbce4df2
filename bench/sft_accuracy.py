"""SFT alone on the bundled example, then the project's evaluation on its test split: what a training knob buys.

Splits examples/assistant/records.jsonl with the default data config (once per work folder), builds the tiny model,
runs `run_sft` with `configs/tiny-cpu.yaml` plus any `section__field=value` overrides, evaluates the SFT model with
`evaluate_model` on the test split, and prints one JSON line (SFT wall and CPU seconds, steps, test accuracies,
load average). `--plain-forward` turns the shared-prefix pass off, to compare steps/s in the same time window.

    OMP_NUM_THREADS=1 python bench/sft_accuracy.py e10b8 sft__epochs=10 sft__batch_size=8 sft__learning_rate=0.002
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

import yaml

from intentops.artifacts import Dataset, ModelFolder, Records
from intentops.catalog import load_catalog
from intentops.config import EXAMPLE_DIR, load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="Run folder name under --work.")
    parser.add_argument("overrides", nargs="*", help="section__field=value (YAML value).")
    parser.add_argument("--work", default="/tmp/intentops-sft-accuracy")
    parser.add_argument("--plain-forward", action="store_true", help="Run every row's prompt prefix itself.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from intentops.data.split import split_dataset
    from intentops.evaluation import evaluate_model
    from intentops.training import shared_prefix
    from intentops.training.sft import run_sft

    if args.plain_forward:
        shared_prefix.MIN_SHARED_TOKENS = 1 << 30
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    overrides = dict(item.split("=", 1) for item in args.overrides)
    overrides = {key: yaml.safe_load(value) for key, value in overrides.items()}
    cfg = load_config(overrides={**overrides, "registry__tracking_uri": f"sqlite:///{work / 'mlflow.db'}"})
    dataset = work / "dataset"
    if not Dataset(dataset).exists():
        split_dataset(Records(EXAMPLE_DIR).records, load_catalog(Dataset(EXAMPLE_DIR).catalog_path), cfg.data, dataset)
    out = work / args.name
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    run_sft(dataset, "", cfg, out / "sft")
    sft_wall, sft_cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = evaluate_model(out / "sft", dataset, cfg, out / "eval")
    training = ModelFolder(out / "sft").card()["training"]
    print(
        json.dumps(
            {
                "name": args.name,
                "overrides": args.overrides,
                "plain_forward": args.plain_forward,
                "sft_wall_s": round(sft_wall, 1),
                "sft_cpu_s": round(sft_cpu, 1),
                "steps": training["steps"],
                "train_loss": round(training["train_loss"], 4),
                "intent_accuracy": round(metrics["intent_accuracy"], 4),
                "param_accuracy": round(metrics["param_accuracy"], 4),
                "format_error_rate": round(metrics["format_error_rate"], 4),
                "load_average": round(os.getloadavg()[0], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
