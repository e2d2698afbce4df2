"""One model, three ways of decoding: free greedy generation, constrained to the catalog's calls, and constrained
with every argument value copied from the utterance (`evaluation.copy_arguments`). Same records, same model, one
process; prints a Markdown table (accuracy, parameter accuracy, format errors, seconds) and the command.

    python bench/decoding_accuracy.py MODEL_DIR DATASET_DIR            # the test split
    python bench/decoding_accuracy.py MODEL_DIR DATASET_DIR --split train --modes free,copy
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from intentops.cli import add_config_argument, config_from_args
from intentops.evaluation import load_split
from intentops.evaluation.metrics import compute_metrics
from intentops.evaluation.predictors import make_predictor

MODES = {
    "free": {"evaluation__constrained": False, "evaluation__copy_arguments": False},
    "constrained": {"evaluation__constrained": True, "evaluation__copy_arguments": False},
    "copy": {"evaluation__constrained": True, "evaluation__copy_arguments": True},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("dataset_dir")
    parser.add_argument("--split", default="test")
    parser.add_argument("--modes", default=",".join(MODES), help=f"Comma-separated: {', '.join(MODES)}.")
    add_config_argument(parser)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes: {', '.join(unknown)}")
    records = load_split(args.dataset_dir, args.split)
    texts = [record["text"] for record in records]
    rows = []
    base = config_from_args(args)
    for mode in modes:
        cfg = base.model_copy(deep=True)
        for knob, value in MODES[mode].items():
            setattr(cfg.evaluation, knob.removeprefix("evaluation__"), value)
        predictor = make_predictor("generate", args.model_dir, cfg, progress=False)
        start = time.perf_counter()
        predictions = predictor.predict(texts)
        seconds = time.perf_counter() - start
        figures = compute_metrics(records, [p.call for p in predictions])
        rows.append(
            f"| {mode} | {figures['intent_accuracy']:.3f} | {figures['param_accuracy']:.3f} | "
            f"{figures['format_error_rate']:.3f} | {seconds:.1f} |"
        )
    print(f"{len(records)} {args.split} records of {args.dataset_dir}, model {args.model_dir}\n")
    print("| decoding | intent acc | param acc | format errors | seconds |\n|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\n    python " + shlex.join(["bench/decoding_accuracy.py", *(argv if argv is not None else sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
