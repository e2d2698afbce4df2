"""Public intent benchmarks (CLINC150, BANKING77): what each IntentOps stage buys, measured by one command.

    python bench/public/run.py --datasets-dir ../shared/datasets          # writes the table in bench/RESULTS.md
    python bench/public/run.py --datasets-dir DIR --smoke                 # CI size: a handful of intents, < 60 s

For every dataset and protocol (bench/public/prepare.py: in_domain, unseen, oos) the same prepared split feeds
every row, so rows differ only in the method:

- TF-IDF + linear classifier (`intentops.evaluation.baselines.tfidf_baseline`);
- SFT (`intentops.training.sft.run_sft`), then SFT + GRPO stage 1 (`run_grpo`), then SFT + GRPO + RCS stage 2
  (`mine_hard_samples` on the stage-1 rollouts, GRPO stage 2 on the hard set), each scored by `evaluate_model`
  with the config's decoding (batched greedy generation in the tiny profile);
- the best of those three again with label scoring (the perplexity-based decoding of GenCLS++).

Every row records its wall time: training time is cumulative (what it costs to produce that model), evaluation time
is the row's own. Results go to `<results-dir>/<name>.json`; the block between the markers in the report file is
regenerated from it, the hand-written reading around it is left alone. MLflow runs go to a sqlite store in the work
directory (removed with it unless `--work-dir` is given) unless the config or MLFLOW_TRACKING_URI names a tracking
server.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prepare import PROTOCOLS, PrepareError, load_source, prepare

from intentops.artifacts import Dataset
from intentops.catalog import UNCERTAIN_INTENT, load_catalog
from intentops.cli import add_config_argument, config_from_args
from intentops.config import RunConfig
from intentops.io import atomic_write_text, read_json, read_jsonl, write_json

log = logging.getLogger("bench.public.run")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_RESULTS_DIR = HERE / "results"
DEFAULT_REPORT = ROOT / "bench" / "RESULTS.md"
DATASETS = ("clinc150", "banking77")
MARK_START = "<!-- bench/public/run.py: generated block, do not edit by hand -->"
MARK_END = "<!-- end of generated block -->"

# Reduced sizes and knobs that keep the whole chain (3 protocols, 4 trainings/evaluations each) under a minute.
SMOKE_SIZES = {"max_intents": 4, "max_train_per_intent": 6, "max_val_per_intent": 1, "max_test_per_intent": 2}
SMOKE_SETS = (
    "model__tiny_hidden_size=32",
    "model__tiny_num_layers=1",
    "model__tiny_num_heads=2",
    "model__tiny_num_kv_heads=1",
    "model__tiny_intermediate_size=64",
    "model__tiny_vocab_size=300",
    "sft__epochs=1",
    "sft__batch_size=8",
    "sft__check_samples=0",
    "grpo__stage1_max_steps=2",
    "grpo__stage2_max_steps=1",
    "grpo__batch_size=4",
    "grpo__num_generations=2",
    "grpo__max_completion_length=8",
    "evaluation__max_new_tokens=8",
)
MODEL_ROWS = ("SFT", "SFT + GRPO", "SFT + GRPO + RCS")


@dataclass
class Row:
    """One line of the table: a method on one dataset/protocol, its scores and what it cost."""

    method: str
    decoding: str
    n_test: int = 0
    accuracy: float | None = None
    macro_f1: float | None = None
    seen_accuracy: float | None = None
    unseen_accuracy: float | None = None
    oos_recall: float | None = None
    oos_precision: float | None = None
    format_error_rate: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    note: str = ""
    error: str = ""


@dataclass
class ProtocolResult:
    dataset: str
    protocol: str
    data: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    stage_s: dict[str, float] = field(default_factory=dict)
    skipped: str = ""


# ---- configuration -------------------------------------------------------------------------------------------------


def bench_config(base: RunConfig, work_root: Path) -> RunConfig:
    """The config every protocol starts from: baselines off (the TF-IDF row is its own row), every test record
    evaluated, MLflow runs in one sqlite store in the work directory unless a tracking URI is configured."""
    cfg = base.model_copy(deep=True)
    cfg.evaluation.baselines = False
    cfg.evaluation.max_samples = 0
    if not cfg.registry.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        cfg.registry.tracking_uri = f"sqlite:///{work_root / 'mlflow.db'}"
    cfg.registry.experiment = "bench-public"
    return cfg


def protocol_config(base: RunConfig, protocol: str) -> RunConfig:
    """The oos protocol offers the explicit uncertain label (GenCLS++); the others do not."""
    cfg = base.model_copy(deep=True)
    cfg.prompt.uncertain_label = protocol == "oos"
    return cfg


def fit_lengths(cfg: RunConfig, base_dir: Path, data_dir: Path) -> dict[str, int]:
    """Raise `sft.max_length` and `grpo.max_prompt_length` to the longest prompt of this dataset, never lower them.

    The whole catalog is in every prompt (150 tools for CLINC150), so a length tuned for a 20-intent catalog would
    silently truncate the answer out of every SFT example.
    """
    from intentops.evaluation.predictors import chat_prompts
    from intentops.models import load_tokenizer
    from intentops.prompting import PromptBuilder

    tokenizer = load_tokenizer(base_dir)
    train = list(read_jsonl(data_dir / "train.jsonl"))
    records = train + list(read_jsonl(data_dir / "test.jsonl"))
    builder = PromptBuilder(load_catalog(Dataset(data_dir).catalog_path), cfg.prompt, examples=train)
    prompts = chat_prompts(tokenizer, builder, [r["text"] for r in records])
    prompt_tokens = max(len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"])
    targets = [builder.target(r["output"]) for r in records]
    target_tokens = max(len(ids) for ids in tokenizer(targets, add_special_tokens=False)["input_ids"])
    needed_sft = prompt_tokens + target_tokens + 8
    if cfg.sft.max_length < needed_sft:
        log.info("sft.max_length %d -> %d (longest prompt %d tokens)", cfg.sft.max_length, needed_sft, prompt_tokens)
        cfg.sft.max_length = needed_sft
    if cfg.grpo.max_prompt_length < prompt_tokens:
        log.info("grpo.max_prompt_length %d -> %d", cfg.grpo.max_prompt_length, prompt_tokens)
        cfg.grpo.max_prompt_length = prompt_tokens
    return {"prompt_tokens_max": prompt_tokens, "target_tokens_max": target_tokens}


# ---- rows ------------------------------------------------------------------------------------------------------------


def tfidf_row(data_dir: Path, seed: int) -> Row:
    """The TF-IDF + logistic-regression baseline of the evaluation library, on the very same split.

    The library returns scores, not predictions, so for the oos protocol it is called once more on a relabelled view
    of the same test set (its fit is seeded, so it is the same classifier): every gold label set to `uncertain`, the
    out-of-scope records flagged unseen. Its unseen accuracy is then the oos recall, and its seen accuracy the share
    of in-scope records answered `uncertain` (the false alarms that set the precision).
    """
    from intentops.evaluation.baselines import tfidf_baseline

    train = list(read_jsonl(data_dir / "train.jsonl"))
    test = list(read_jsonl(data_dir / "test.jsonl"))
    texts, gold, seen = [r["text"] for r in train], [r["intent"] for r in train], [r["seen"] for r in test]
    test_texts, test_gold = [r["text"] for r in test], [r["intent"] for r in test]
    start = time.perf_counter()
    scores = tfidf_baseline(texts, gold, test_texts, test_gold, seen, seed=seed)
    row = Row(
        method="TF-IDF + linear",
        decoding="classifier",
        n_test=len(test),
        accuracy=scores["intent_accuracy"],
        macro_f1=scores["macro_f1"],
        seen_accuracy=scores["seen_intent_accuracy"],
        unseen_accuracy=scores.get("unseen_intent_accuracy"),
    )
    is_oos = [g == UNCERTAIN_INTENT for g in test_gold]
    if any(is_oos) and UNCERTAIN_INTENT in gold:
        as_uncertain = [UNCERTAIN_INTENT] * len(test)
        # seen flag False marks the out-of-scope records, True the in-scope ones
        flags = [not flag for flag in is_oos]
        view = tfidf_baseline(texts, gold, test_texts, as_uncertain, flags, seed=seed)
        n_oos, n_in = sum(is_oos), len(test) - sum(is_oos)
        hits = view["unseen_intent_accuracy"] * n_oos
        false_alarms = (view["seen_intent_accuracy"] or 0.0) * n_in
        row.oos_recall = hits / n_oos
        row.oos_precision = hits / (hits + false_alarms) if hits + false_alarms else 0.0
        row.seen_accuracy = row.unseen_accuracy = None
    row.train_s = time.perf_counter() - start  # fit and predict are one call: the whole cost goes here
    return row


def row_from_metrics(method: str, metrics: dict[str, Any], train_s: float | None, eval_s: float) -> Row:
    """A table row from an `evaluate_model` metrics.json."""
    by_seen = metrics.get("by_seen", {})
    uncertain = metrics.get("per_intent", {}).get(UNCERTAIN_INTENT)
    has_unseen = "unseen" in by_seen
    return Row(
        method=method,
        decoding=str(metrics.get("decoding")),
        n_test=int(metrics["n"]),
        accuracy=metrics["intent_accuracy"],
        macro_f1=metrics["macro_f1"],
        seen_accuracy=by_seen["seen"]["intent_accuracy"] if has_unseen and "seen" in by_seen else None,
        unseen_accuracy=by_seen["unseen"]["intent_accuracy"] if has_unseen else None,
        oos_recall=uncertain["recall"] if uncertain else None,
        oos_precision=uncertain["precision"] if uncertain else None,
        format_error_rate=metrics.get("format_error_rate"),
        train_s=train_s,
        eval_s=eval_s,
    )


def evaluate(
    method: str, model_dir: Path, data_dir: Path, cfg: RunConfig, out: Path, run_id: str, train_s: float | None
) -> Row:
    from intentops.evaluation import evaluate_model

    start = time.perf_counter()
    metrics = evaluate_model(model_dir, data_dir, cfg, out, run_id, stage=f"evaluate-{out.name}")
    return row_from_metrics(method, metrics, train_s, time.perf_counter() - start)


def model_rows(result: ProtocolResult, data_dir: Path, cfg: RunConfig, work: Path, run_id: str) -> None:
    """SFT, SFT + GRPO, SFT + GRPO + RCS, then label scoring for the best of them; appends to `result.rows`."""
    from intentops.tiny_model import create_tiny_model
    from intentops.training.curriculum import mine_hard_samples
    from intentops.training.grpo import run_grpo
    from intentops.training.sft import run_sft

    stage_s = result.stage_s
    models = work / "models"
    train_path = data_dir / "train.jsonl"

    start = time.perf_counter()
    if cfg.model.profile == "tiny":
        catalog = load_catalog(Dataset(data_dir).catalog_path)
        base = create_tiny_model(data_dir, catalog, cfg.model, models / "tiny-base", cfg.prompt)
    else:
        from intentops.models import resolve_model

        base = resolve_model(cfg.model.base_model, cfg.model.cache_dir or None)
    result.data["lengths"] = fit_lengths(cfg, base, data_dir)
    result.data["effective_config"] = {
        "prompt__uncertain_label": cfg.prompt.uncertain_label,
        "sft__max_length": cfg.sft.max_length,
        "grpo__max_prompt_length": cfg.grpo.max_prompt_length,
    }
    stage_s["base"] = time.perf_counter() - start

    def timed(stage: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        log.info("[%s/%s] %s", result.dataset, result.protocol, stage)
        begin = time.perf_counter()
        value = fn(*args, **kwargs)
        stage_s[stage] = time.perf_counter() - begin
        return value

    sft_dir = Path(timed("sft", run_sft, data_dir, str(base), cfg, models / "sft", run_id))
    cost = stage_s["base"] + stage_s["sft"]
    rows = {"SFT": evaluate("SFT", sft_dir, data_dir, cfg, work / "eval" / "sft", run_id, cost)}
    result.rows.append(rows["SFT"])
    dirs = {"SFT": sft_dir}

    grpo1 = timed("grpo1", run_grpo, train_path, sft_dir, cfg, models / "grpo1", "grpo1", run_id)
    cost += stage_s["grpo1"]
    dirs["SFT + GRPO"] = Path(grpo1.model_dir)
    rows["SFT + GRPO"] = evaluate(
        "SFT + GRPO", dirs["SFT + GRPO"], data_dir, cfg, work / "eval" / "grpo1", run_id, cost
    )
    rows["SFT + GRPO"].note = f"GRPO stage 1: {grpo1.steps} steps on {grpo1.train_records} training records"
    result.rows.append(rows["SFT + GRPO"])

    if grpo1.rollouts_path is None:
        raise RuntimeError(f"GRPO stage 1 wrote no rollout log in {grpo1.model_dir}; nothing to mine")
    hard_dir = work / "hard"
    mining = timed("mining", mine_hard_samples, grpo1.rollouts_path, train_path, cfg.mining, hard_dir)
    grpo2 = timed(
        "grpo2", run_grpo, hard_dir / "train.jsonl", dirs["SFT + GRPO"], cfg, models / "grpo2", "grpo2", run_id
    )
    cost += stage_s["mining"] + stage_s["grpo2"]
    dirs["SFT + GRPO + RCS"] = Path(grpo2.model_dir)
    rcs = evaluate("SFT + GRPO + RCS", dirs["SFT + GRPO + RCS"], data_dir, cfg, work / "eval" / "grpo2", run_id, cost)
    rcs.note = f"RCS: {mining.hard} hard of {mining.scored} samples rolled out in stage 1; " + (
        grpo2.reason if grpo2.skipped else f"GRPO stage 2: {grpo2.steps} steps on them"
    )
    rows["SFT + GRPO + RCS"] = rcs
    result.rows.append(rcs)
    result.data["mining"] = {k: v for k, v in mining.to_dict().items() if k not in ("hard_ids", "per_intent")}

    best = max(MODEL_ROWS, key=lambda name: rows[name].accuracy or 0.0)  # first of equals: the cheaper model
    if cfg.prompt.output_mode != "answer":
        note = "label scoring not run: it needs prompt.output_mode=answer"
        result.rows.append(Row(method=best, decoding="label_scoring", note=note))
        return
    scoring = cfg.model_copy(deep=True)
    scoring.evaluation.decoding = "label_scoring"
    row = evaluate(
        f"{best}", dirs[best], data_dir, scoring, work / "eval" / "label-scoring", run_id, rows[best].train_s
    )
    result.rows.append(row)


def run_protocol(
    dataset: str, source: Path, protocol: str, sizes: dict[str, int | None], base_cfg: RunConfig, work: Path, tag: str
) -> ProtocolResult:
    """Prepare the split, then every row on it. A failing stage is recorded on its row; later rows that need it
    are recorded as not run, so one collapse does not hide the other protocols' numbers."""
    data_dir = work / "data"
    report = prepare(source, data_dir, protocol, dataset=dataset, seed=base_cfg.data.seed, **sizes)
    result = ProtocolResult(dataset=dataset, protocol=protocol, data=report.to_dict())
    cfg = protocol_config(base_cfg, protocol)
    run_id = f"{tag}-{dataset}-{protocol}"
    log.info("[%s/%s] TF-IDF + linear", dataset, protocol)
    result.rows.append(tfidf_row(data_dir, base_cfg.data.seed))
    try:
        model_rows(result, data_dir, cfg, work, run_id)
    except Exception as exc:  # recorded on the table, and the exit status says so
        log.exception("[%s/%s] model rows stopped", dataset, protocol)
        done = {row.method for row in result.rows}
        missing = [(name, cfg.evaluation.decoding) for name in MODEL_ROWS if name not in done]
        if not any(row.decoding == "label_scoring" for row in result.rows):
            missing.append(("best model row", "label_scoring"))
        for index, (name, decoding) in enumerate(missing):
            reason = f"{type(exc).__name__}: {exc}" if index == 0 else "not run: an earlier stage failed"
            result.rows.append(Row(method=name, decoding=decoding, error=reason[:300]))
    return result


# ---- report ----------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1m": round(os.getloadavg()[0], 1),  # the machine may be shared: timings depend on it
    }


def git_state() -> dict[str, Any]:
    """The commit the code came from, and whether the working tree had changes on top of it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return {"commit": "", "worktree_clean": None}
    if head.returncode != 0:
        return {"commit": "", "worktree_clean": None}
    return {"commit": head.stdout.strip(), "worktree_clean": status.returncode == 0 and not status.stdout.strip()}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _code_version(results: dict[str, Any]) -> str:
    if not results.get("commit"):
        return "outside a git checkout"
    dirty = {True: "", False: " plus uncommitted changes", None: ""}[results.get("worktree_clean")]
    return f"commit `{results['commit']}`{dirty}"


def render_block(results: dict[str, Any]) -> str:
    """Markdown for the generated block: command, machine, sizes, one table per dataset."""
    m = results["machine"]
    config = " + ".join(f"`{part}`" for part in [results["config"], *results["overrides"]])
    lines = [
        MARK_START,
        "",
        f"Measured {results['finished']} ({_code_version(results)}) with:",
        "",
        f"    {results['command']}",
        "",
        f"Machine: {m['cpu_cores']} CPU cores, {m['memory_gib']} GiB RAM, "
        f"{'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}; torch {m['torch']}, Python {m['python']}; "
        f"1-minute load average {m['load_average_1m']} at the start, {m['load_average_1m_end']} at the end; "
        f"torch threads: {results['torch_threads'] or 'default'}. Config: {config}; "
        f"total wall time {results['wall_s'] / 60:.1f} min.",
        "",
        "Columns: accuracy and macro-F1 over the whole test split (%); `seen`/`unseen`: accuracy on test records of "
        "intents in / held out of training; `oos R`/`oos P`: recall and precision of `uncertain()` on CLINC150's "
        "out-of-scope test records; `fmt err`: answers that do not parse as a call; `train s`: cumulative wall time "
        "to produce the row's model (for SFT this includes building the tiny base model); `eval s`: the row's "
        "evaluation time. `—`: does not apply to the row's protocol. TF-IDF + linear is the evaluation library's "
        "baseline (character 1-3-gram TF-IDF, logistic regression; fit and prediction are one call, timed as "
        "`train s`); it cannot predict an intent absent from training. The `label_scoring` row of each protocol is "
        "the most accurate of the three model rows decoded again with label scoring instead of generation.",
    ]
    for dataset in results["datasets"]:
        lines += ["", f"#### {dataset}", ""]
        blocks = [p for p in results["protocols"] if p["dataset"] == dataset]
        for block in blocks:
            if block["skipped"]:
                lines.append(f"- `{block['protocol']}`: skipped ({block['skipped']})")
                continue
            data = block["data"]
            counts = data["counts"]
            extra = f", {len(data['unseen_intents'])} held out of training" if data["unseen_intents"] else ""
            oos = {"uncertain": "labelled `uncertain()`", "excluded": "excluded", "none": "none in the data"}[
                data["oos"]
            ]
            lines.append(
                f"- `{block['protocol']}`: {data['intents']} intents{extra}; train {counts['train']}, "
                f"val {counts['val']} ({data['val_source']}), test {counts['test']}; out-of-scope: {oos}"
                + (
                    f" ({data['oos_counts']['train']} train, {data['oos_counts']['test']} test)"
                    if data["oos"] == "uncertain"
                    else ""
                )
            )
        lines += [
            "",
            "| protocol | method | decoding | acc | macro-F1 | seen | unseen | oos R | oos P | fmt err | train s | eval s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for block in blocks:
            split_by_seen = bool(block["data"].get("unseen_intents"))  # seen/unseen only mean something here
            for row in block["rows"]:
                if row["error"]:
                    lines.append(
                        f"| {block['protocol']} | {row['method']} | {row['decoding']} | {row['error']} |||||||||"
                    )
                    continue
                lines.append(
                    f"| {block['protocol']} | {row['method']} | {row['decoding']} | {_pct(row['accuracy'])} | "
                    f"{_pct(row['macro_f1'])} | {_pct(row['seen_accuracy'] if split_by_seen else None)} | "
                    f"{_pct(row['unseen_accuracy'] if split_by_seen else None)} | "
                    f"{_pct(row['oos_recall'])} | {_pct(row['oos_precision'])} | {_pct(row['format_error_rate'])} | "
                    f"{_secs(row['train_s'])} | {_secs(row['eval_s'])} |"
                )
        notes = [f"- {b['protocol']}, {r['method']}: {r['note']}" for b in blocks for r in b["rows"] if r["note"]]
        if notes:
            lines += ["", *notes]
    lines += ["", MARK_END]
    return "\n".join(lines)


def update_report(path: Path, block: str) -> None:
    """Replace the generated block of the report (or start the file with it); the prose around it stays."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, text)


# ---- command line ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--datasets-dir", type=Path, help="Folder with <dataset>.jsonl files (required to run).")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="Comma-separated dataset names.")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="Comma-separated protocols.")
    parser.add_argument("--max-train-per-intent", type=int, help="Subsample training records per intent.")
    parser.add_argument("--max-val-per-intent", type=int, help="Subsample validation records per intent.")
    parser.add_argument("--max-test-per-intent", type=int, help="Subsample test records per intent.")
    parser.add_argument("--max-intents", type=int, help="Keep only N intents per dataset (seeded).")
    parser.add_argument("--smoke", action="store_true", help="CI size: a handful of intents and examples, few steps.")
    parser.add_argument("--name", help="Results name (default: smoke with --smoke, else tiny-cpu).")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help="Where <name>.json goes.")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="Markdown file whose table is regenerated.")
    parser.add_argument("--work-dir", type=Path, help="Keep prepared data, models and evaluations here.")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="Only regenerate the report block from an existing <results-dir>/<name>.json (no training).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 with --smoke). A tiny model gains nothing from more, "
        "and on a shared CPU extra threads spin against other jobs.",
    )
    add_config_argument(parser)
    args = parser.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if args.render_only:
        return args
    if args.datasets_dir is None:
        parser.error("--datasets-dir is required (the folder holding clinc150.jsonl, banking77.jsonl)")
    unknown = sorted(set(args.protocols) - set(PROTOCOLS))
    if unknown:
        parser.error(f"unknown protocols: {', '.join(unknown)} (known: {', '.join(PROTOCOLS)})")
    for dataset in args.datasets:
        if not (args.datasets_dir / f"{dataset}.jsonl").is_file():
            parser.error(f"{args.datasets_dir / f'{dataset}.jsonl'}: dataset file not found")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    name = args.name or ("smoke" if args.smoke else "tiny-cpu")
    if args.render_only:
        update_report(args.report, render_block(read_json(args.results_dir / f"{name}.json")))
        log.info("regenerated the block of %s from %s", args.report, args.results_dir / f"{name}.json")
        return 0
    sizes: dict[str, int | None] = {
        "max_intents": args.max_intents,
        "max_train_per_intent": args.max_train_per_intent,
        "max_val_per_intent": args.max_val_per_intent,
        "max_test_per_intent": args.max_test_per_intent,
    }
    if args.smoke:
        sizes = {key: value if value is not None else SMOKE_SIZES[key] for key, value in sizes.items()}
    overrides = [*(SMOKE_SETS if args.smoke else ()), *args.overrides]
    threads = args.threads or (1 if args.smoke else None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    base_cfg = config_from_args(argparse.Namespace(config=args.config, overrides=overrides))

    started = time.perf_counter()
    measured_on = machine()
    work_root = (args.work_dir or Path(tempfile.mkdtemp(prefix="intentops-bench-"))).resolve()
    work_root.mkdir(parents=True, exist_ok=True)
    run_cfg = bench_config(base_cfg, work_root)
    protocols: list[ProtocolResult] = []
    try:
        for dataset in args.datasets:
            source = args.datasets_dir / f"{dataset}.jsonl"
            has_oos = any(r.intent == UNCERTAIN_INTENT for r in load_source(source)[0])
            for protocol in args.protocols:
                if protocol == "oos" and not has_oos:
                    protocols.append(ProtocolResult(dataset, protocol, {}, skipped="no out-of-scope records"))
                    continue
                work = work_root / dataset / protocol
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                protocols.append(run_protocol(dataset, source, protocol, sizes, run_cfg, work, name))
    except PrepareError as exc:
        print(f"run: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_root, ignore_errors=True)

    results = {
        "name": name,
        "command": "python bench/public/run.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **git_state(),
        "machine": {**measured_on, "load_average_1m_end": round(os.getloadavg()[0], 1)},
        "config": str(args.config or "configs/tiny-cpu.yaml"),
        "overrides": overrides,
        "sizes": sizes,
        "torch_threads": threads,
        "wall_s": time.perf_counter() - started,
        "datasets": args.datasets,
        "protocols": [{**asdict(p), "rows": [asdict(row) for row in p.rows]} for p in protocols],
        "run_config": base_cfg.model_dump(),
    }
    out = args.results_dir / f"{name}.json"
    write_json(out, results)
    update_report(args.report, render_block(read_json(out)))
    failed = [f"{p.dataset}/{p.protocol}: {row.method}" for p in protocols for row in p.rows if row.error]
    log.info("results: %s; table: %s; %.0f s in all", out, args.report, results["wall_s"])
    if failed:
        log.error("rows that did not run: %s", "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
