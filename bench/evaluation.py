"""Evaluation decoding benchmark: label scoring vs batched generation vs the seed 002 loop, one model, one test set.

The seed 002 offline evaluation script generates one prompt at a time (`model.generate` on a single unpadded
prompt, max_new_tokens=64, greedy, EOS = tokenizer.eos_token) and compares strings. `seed002_loop` below
reproduces that loop faithfully, with the prompt the model was trained with in place of the script's hand-built
Qwen prompt. Against it, on the same SFT-trained tiny model and the same test records, in one process:

- batched greedy generation (`GenerationPredictor`: length-sorted batches, the shared system-prompt prefix cached
  once), identical by construction: the same greedy decoding, so the intents must agree exactly; also without the
  prefix cache, to show what batching alone buys;
- label scoring (`LabelScoringPredictor`: seed 001 perplexity-based decoding, every label scored in one pass over the
  cached prompt, then greedy argument completion), a different decoder: its agreement with generation is measured,
  not assumed; and label scoring as a pure intent classifier (no arguments), which is what seed 001 measures; each
  with the whole vocabulary or the catalog's tokens as the normaliser;
- generation constrained to the catalog call grammar (what the vLLM server enforces), and with every argument value
  copied from the utterance (`evaluation.copy_arguments`);
- a throughput table: samples/s at batch 1, 8 and 32 for generate, constrained generate and label scoring.

    python bench/evaluation.py --write-readme                 # builds dataset + SFT model once under --work
    python bench/evaluation.py --set sft__epochs=4 ...        # RunConfig overrides for the model the bench trains
    python bench/evaluation.py --model DIR --dataset DIR      # any IntentOps model folder and dataset

A random (untrained) model would generate max_new_tokens every time and flatter batching, so the default builds an
SFT-trained tiny model (`run_sft`) whose answers have realistic lengths.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from readme_section import README, write_section

from intentops.artifacts import Dataset, ModelFolder, Records
from intentops.catalog import load_catalog
from intentops.cli import add_config_argument, config_from_args
from intentops.config import EXAMPLE_DIR, RunConfig
from intentops.evaluation import load_split
from intentops.evaluation.generation import GenerationPredictor
from intentops.evaluation.label_scoring import LabelScoringPredictor
from intentops.evaluation.metrics import compute_metrics, gold_calls, strict_accuracy
from intentops.evaluation.predictors import Prediction, chat_prompts, prediction_from_completion
from intentops.io import write_json
from intentops.models import load_model_and_tokenizer, read_model_card
from intentops.prompting import PromptBuilder

ROOT = Path(__file__).resolve().parents[1]

SECTION = "evaluation"
SEED_MAX_NEW_TOKENS = 64  # what the seed 002 script uses
INTENT_ONLY = "label scoring, intents only"
CATALOG = "label scoring, catalog-normalised"
CATALOG_INTENT_ONLY = "label scoring, catalog-normalised, intents only"
THROUGHPUT_BATCHES = (1, 8, 32)
log = logging.getLogger("bench.evaluation")


# ---- inputs -------------------------------------------------------------------------------------------------------


def prepare(work: Path, cfg: RunConfig) -> tuple[Path, Path]:
    """Dataset split from the bundled example and a tiny model SFT-trained on it, built once under `work`."""
    import mlflow

    from intentops.data.split import split_dataset
    from intentops.training.sft import run_sft

    cfg = cfg.model_copy(deep=True)
    cfg.registry.tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(cfg.registry.tracking_uri)
    if mlflow.get_experiment_by_name(cfg.registry.experiment) is None:  # keep artifacts under --work, not ./mlruns
        mlflow.create_experiment(cfg.registry.experiment, artifact_location=(work / "mlartifacts").as_uri())
    dataset = work / "dataset"
    if not Dataset(dataset).exists():
        example = Dataset(EXAMPLE_DIR)
        log.info("splitting %s into %s", Records(EXAMPLE_DIR).records, dataset)
        split_dataset(Records(EXAMPLE_DIR).records, load_catalog(example.catalog_path), cfg.data, dataset)
    model = work / "sft-model"
    if not ModelFolder(model).exists():
        log.info("SFT-training the tiny model into %s (%.1f epochs)", model, cfg.sft.epochs)
        run_sft(dataset, "", cfg, model)
    return dataset, model


# ---- the three methods --------------------------------------------------------------------------------------------


def seed002_loop(model: Any, tokenizer: Any, builder: PromptBuilder, texts: Sequence[str]) -> list[Prediction]:
    """The seed 002 evaluation loop: one prompt per `generate` call, no padding, no attention mask, 64 new tokens."""
    import torch

    predictions = []
    for text, prompt in zip(texts, chat_prompts(tokenizer, builder, texts), strict=True):
        start = time.perf_counter()
        model_inputs = tokenizer([prompt], return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.no_grad():
            generated_ids = model.generate(
                model_inputs.input_ids,
                max_new_tokens=SEED_MAX_NEW_TOKENS,
                pad_token_id=tokenizer.eos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                do_sample=False,
            )
        generated_ids = [
            output_ids[len(input_ids) :]
            for input_ids, output_ids in zip(model_inputs.input_ids, generated_ids, strict=True)
        ]
        pred = tokenizer.batch_decode(generated_ids, skip_special_tokens=True)[0]
        predictions.append(prediction_from_completion(builder, text, pred, latency_s=time.perf_counter() - start))
    return predictions


def label_scoring_intents_only(scoring: LabelScoringPredictor, texts: Sequence[str]) -> list[Prediction]:
    """Seed 001 as a pure classifier: the best-scoring label per text, no argument completion."""
    predictions = []
    for text, row in zip(texts, scoring.score(texts), strict=True):
        best = max(range(len(row)), key=row.__getitem__)
        predictions.append(Prediction(text, scoring.names[best], None, scoring.labels[best], None))
    return predictions


def timed(fn: Callable[[], list[Prediction]]) -> tuple[list[Prediction], float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def best_of(fn: Callable[[], list[Prediction]], repeats: int) -> tuple[list[Prediction], float, float]:
    """The result and the shortest wall and CPU (user + system, this process) seconds of `repeats` runs.

    On CPUs shared with other jobs a single wall time mostly measures the neighbours; the fastest of several runs and
    the process's own CPU time are what the method costs.
    """
    walls, cpus = [], []
    for _ in range(max(1, repeats)):
        cpu = time.process_time()
        result, wall = timed(fn)
        walls.append(wall)
        cpus.append(time.process_time() - cpu)
    return result, min(walls), min(cpus)


def agreement(a: Sequence[Prediction], b: Sequence[Prediction]) -> float:
    """Share of records where two methods predict the same intent (a format error counts as its own answer)."""
    return sum(x.intent == y.intent for x, y in zip(a, b, strict=True)) / len(a)


def throughput(
    predictors: dict[str, Any], texts: Sequence[str], batches: Sequence[int] = THROUGHPUT_BATCHES
) -> list[dict[str, Any]]:
    """Samples/s of each decoder at each batch size, on the same texts (one warm-up call per decoder first)."""
    rows = []
    for name, predictor in predictors.items():
        predictor.predict(texts[:2])
        row: dict[str, Any] = {"decoder": name}
        for batch_size in batches:
            predictor.batch_size = batch_size
            log.info("throughput: %s at batch %d on %d records", name, batch_size, len(texts))
            _, wall = timed(lambda predictor=predictor: predictor.predict(texts))
            row[f"batch {batch_size}"] = round(len(texts) / wall, 1)
        rows.append(row)
    return rows


# ---- report -------------------------------------------------------------------------------------------------------


def throughput_markdown(report: dict[str, Any]) -> str:
    rows = report["throughput"]
    if not rows:
        return ""
    columns = [key for key in rows[0] if key != "decoder"]
    lines = [
        "| decoder | " + " | ".join(f"{c} (samples/s)" for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        *(f"| {r['decoder']} | " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows),
    ]
    return (
        f"Throughput of `intentops evaluate`'s decoders by batch size ({report['throughput_n']} test records, same "
        "model, same process, samples/s; label scoring includes the argument completion):\n\n"
        + "\n".join(lines)
        + "\n\n"
    )


def markdown(report: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {r['method']} | {r['batch_size']} | {r['wall_s']} | {r['cpu_s']} | {r['samples_per_s']} | "
        f"{r['speedup']}x | {r['cpu_speedup']}x | "
        f"{r['intent_accuracy']} | {r['param_accuracy'] if r['param_accuracy'] is not None else '-'} | "
        f"{r['intent_agreement_with_seed_loop']} |"
        for r in report["methods"]
    )
    seed = report["seed002_script_arithmetic"]
    return (
        f"## {SECTION}\n\n"
        "Decoding strategies of `intentops evaluate` against the seed 002 evaluation loop (one prompt per "
        "`generate` call), same SFT-trained tiny model, same test records, one process. Agreement: share of records "
        "with the same predicted intent as the seed loop (batched generation must be 100%: same greedy decoding).\n\n"
        f"Model: `{report['model']}`; {report['n']} test records; max_new_tokens {report['max_new_tokens']}; "
        f"{report['machine']}; torch threads {report['threads']}; measured {report['measured_at']}.\n\n"
        "| method | batch | wall s | CPU s | samples/s | speed-up vs seed loop (wall) | speed-up (CPU) | intent acc | "
        "param acc | intent agreement |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"Targets: label scoring >= 10x, batched generation >= 4x the seed loop. The seed script's own string "
        f"arithmetic on the seed loop's completions gives intent {seed['intent_accuracy']} / parameter "
        f"{seed['param_accuracy']}; against `intentops.evaluation.metrics`: {seed['matches_metrics']}.\n\n"
        "Reading the label-scoring rows: a label is scored on the tokens every answer for it begins with, as this "
        "model's tokenizer writes them (`intentops.evaluation.label_paths`: with the tiny profile's copy tokens "
        "`name(` is one token, `name()` two), plus, where the bracket merges with what follows (plain byte-level "
        f"BPE), the mass of the tokens that begin with the rest; {report['paths_with_openers']} of "
        f"{report['labels']} labels have such an opening set here. Vocabulary normalisation projects every trie node ({report['label_trie_nodes']} nodes for "
        f"{report['labels']} labels) onto the whole output head (hidden {report['hidden_size']} x vocabulary "
        f"{report['vocab_size']}); catalog normalisation (each step's probability among the tokens some label takes "
        "there, the distribution constrained decoding chooses from) runs only the nodes that lead to a choice "
        f"({report['catalog_trie_nodes']}) and projects onto {report['catalog_rows']} output rows. Label scoring with "
        "arguments adds a greedy completion for intents with parameters, in which rows that have stopped leave the "
        "batch. Wall times are the fastest of the runs, CPU times this process's own (user + system), so the CPU "
        "speed-up is the one other jobs on the machine disturb least.\n\n"
        f"{throughput_markdown(report)}"
        f"Reproduce:\n\n```bash\n{report['command']}\n```\n"
    )


# ---- main ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="IntentOps model folder (default: SFT-train the tiny model under --work).")
    parser.add_argument("--dataset", help="Dataset folder (default: split the bundled example under --work).")
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "intentops" / "bench-evaluation"))
    parser.add_argument("--samples", type=int, default=200, help="Test records (the first N of test.jsonl).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=SEED_MAX_NEW_TOKENS, help="For batched methods.")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0 = torch default); 1 is fastest for tiny models."
    )
    parser.add_argument(
        "--throughput-samples", type=int, default=64, help="Test records per throughput cell (0 = no table)."
    )
    parser.add_argument("--repeats", type=int, default=3, help="Runs per method; the fastest counts.")
    parser.add_argument("--json", help="Also write the figures to this JSON file.")
    parser.add_argument("--write-readme", action="store_true", help=f"Update section '{SECTION}' of {README}.")
    add_config_argument(parser)  # e.g. --set sft__epochs=4 for the model the bench trains
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model and args.dataset:
        dataset_dir, model_dir = Path(args.dataset), Path(args.model)
    elif args.model or args.dataset:
        parser.error("give both --model and --dataset, or neither (the bench then builds both under --work)")
    else:
        dataset_dir, model_dir = prepare(Path(args.work), cfg)

    records = load_split(dataset_dir, "test", args.samples)
    texts = [r["text"] for r in records]
    model, tokenizer = load_model_and_tokenizer(model_dir, cfg.model, for_training=False)
    if torch.cuda.is_available():
        model = model.to("cuda")
    builder = PromptBuilder.from_model_dir(model_dir)
    common = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "progress": False}
    generation = GenerationPredictor(model, tokenizer, builder, **common)
    generation_full_prompts = GenerationPredictor(model, tokenizer, builder, prefix_cache=False, **common)
    constrained = GenerationPredictor(model, tokenizer, builder, constrained=True, **common)
    copying = GenerationPredictor(model, tokenizer, builder, constrained=True, copy_arguments=True, **common)
    scoring = LabelScoringPredictor(model, tokenizer, builder, **common)
    catalog_scoring = LabelScoringPredictor(model, tokenizer, builder, normalization="catalog", **common)
    methods: dict[str, tuple[int, Callable[[Sequence[str]], list[Prediction]]]] = {
        "seed 002 loop": (1, lambda t: seed002_loop(model, tokenizer, builder, t)),
        "batched generation, no prefix cache": (args.batch_size, generation_full_prompts.predict),
        "batched generation": (args.batch_size, generation.predict),
        "constrained generation": (args.batch_size, constrained.predict),
        "constrained generation, arguments copied": (args.batch_size, copying.predict),
        "label scoring": (args.batch_size, scoring.predict),
        INTENT_ONLY: (args.batch_size, lambda t: label_scoring_intents_only(scoring, t)),
        CATALOG: (args.batch_size, catalog_scoring.predict),
        CATALOG_INTENT_ONLY: (args.batch_size, lambda t: label_scoring_intents_only(catalog_scoring, t)),
    }
    results: dict[str, tuple[list[Prediction], float, float]] = {}
    load_at_start = os.getloadavg()[0]
    for name, (_, run) in methods.items():
        run(texts[:2])  # warm-up: first-call allocations and kernel selection are not what we measure
        log.info("timing %s on %d records (best of %d)", name, len(texts), args.repeats)
        results[name] = best_of(lambda run=run: run(texts), args.repeats)

    throughput_texts = texts[: args.throughput_samples]
    throughput_rows = (
        throughput(
            {
                "generate": generation,
                "constrained generate": constrained,
                "constrained generate, arguments copied": copying,
                "label scoring": scoring,
                CATALOG: catalog_scoring,
            },
            throughput_texts,
        )
        if throughput_texts
        else []
    )
    seed_predictions, seed_wall, seed_cpu = results["seed 002 loop"]
    seed_intent, seed_params = strict_accuracy([r["output"] for r in records], [p.raw for p in seed_predictions])
    rows = []
    gold_intents = [gold_calls(record)[0].name for record in records]
    for name, (predictions, wall, cpu) in results.items():
        metrics = compute_metrics(records, [p.call for p in predictions])
        if name in (INTENT_ONLY, CATALOG_INTENT_ONLY):  # no call string: only the intent can be scored
            hits = [p.intent == gold for p, gold in zip(predictions, gold_intents, strict=True)]
            metrics = {"intent_accuracy": sum(hits) / len(hits), "param_accuracy": None}
        rows.append(
            {
                "method": name,
                "batch_size": methods[name][0],
                "wall_s": round(wall, 2),
                "samples_per_s": round(len(texts) / wall, 2),
                "cpu_s": round(cpu, 2),
                "speedup": round(seed_wall / wall, 1),
                "cpu_speedup": round(seed_cpu / cpu, 1),
                "intent_accuracy": round(metrics["intent_accuracy"], 4),
                "param_accuracy": None if metrics["param_accuracy"] is None else round(metrics["param_accuracy"], 4),
                "intent_agreement_with_seed_loop": round(agreement(predictions, seed_predictions), 4),
            }
        )
    seed_metrics = rows[0]
    command = "python bench/evaluation.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    report = {
        "model": f"{model_dir.name} ({read_model_card(model_dir).get('base_model')}, stage "
        f"{read_model_card(model_dir).get('stage')})",
        "n": len(texts),
        "max_new_tokens": args.max_new_tokens,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", CPU only")
        + f", load average {load_at_start:.1f} when the timings started and {os.getloadavg()[0]:.1f} when they "
        "ended (other processes share the CPUs)",
        "measured_at": datetime.now(UTC).isoformat(timespec="minutes"),
        "methods": rows,
        "labels": len(scoring.labels),
        "paths_with_openers": sum(bool(path.openers) for path in scoring.paths),
        "label_trie_nodes": len(scoring.trie.nodes),
        "catalog_trie_nodes": len(catalog_scoring.trie.nodes),
        "catalog_rows": len({t for _, tokens in catalog_scoring.trie.edges for t in tokens}),
        "throughput": throughput_rows,
        "throughput_n": len(throughput_texts),
        "mean_answer_tokens": round(
            sum(len(tokenizer(p.raw, add_special_tokens=False)["input_ids"]) for p in seed_predictions)
            / len(seed_predictions),
            1,
        ),
        "hidden_size": model.config.hidden_size,
        "vocab_size": model.config.vocab_size,
        "label_scoring_vs_generation_agreement": round(
            agreement(results["label scoring"][0], results["batched generation"][0]), 4
        ),
        "seed002_script_arithmetic": {
            "intent_accuracy": round(seed_intent, 4),
            "param_accuracy": round(seed_params, 4),
            "matches_metrics": "match"
            if (round(seed_intent, 4), round(seed_params, 4))
            == (seed_metrics["intent_accuracy"], seed_metrics["param_accuracy"])
            else "differs: see predictions",
        },
        "command": command.strip(),
    }
    print(markdown(report))
    print(f"label scoring vs batched generation, intent agreement: {report['label_scoring_vs_generation_agreement']}")
    if args.json:
        write_json(args.json, report)
    if args.write_readme:
        write_section(SECTION, markdown(report))
        print(f"updated section '{SECTION}' of {README}")
    print(json.dumps({r["method"]: [r["speedup"], r["cpu_speedup"]] for r in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
