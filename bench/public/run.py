"""Public intent benchmarks (CLINC150, BANKING77, the bundled example): what each IntentOps choice buys, one command.

    python bench/public/run.py --datasets-dir ../shared/datasets          # writes the tables in bench/RESULTS.md
    python bench/public/run.py --datasets-dir DIR --smoke                 # CI size: a handful of intents, few steps

What runs (every row of one table on the same prepared split, so rows differ only in the method):
- the training chain on each dataset and protocol (in_domain, unseen, oos): TF-IDF, SFT, SFT + GRPO,
  SFT + GRPO + RCS, label scoring (bench/public/chain.py, splits from prepare.py);
- the seed protocols on each dataset's in_domain split: SFT vs GRPO at equal epochs, GRPO from the base model vs
  after SFT, strict vs loose format reward, offline RCS vs online filtering, the uncertain-label relabelling; and on
  the bundled zh + en example: cross-lingual, split and merged intents (bench/public/protocols.py, variants.py).

Every row records its wall time: training time is cumulative (what it costs to produce that model), evaluation time
is the row's own. Results go to `<results-dir>/<name>.json`; the block between the markers in the report file is
regenerated from it (report.py), the hand-written reading around it is left alone. MLflow runs go to a sqlite
store in the work directory (removed with it unless `--work-dir` is given) unless the config or
MLFLOW_TRACKING_URI names a tracking server.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from chain import run_protocol
from prepare import PROTOCOLS, PrepareError, load_source
from protocols import BUNDLED_COMPARISONS, COMPARISONS, SPLIT_COMPARISONS, bundled_comparisons, split_comparisons
from report import ROOT, git_state, machine, render_block, update_report
from rows import ProtocolResult, Row, bench_config, protocol_config

from intentops.artifacts import RECORDS_FILE
from intentops.catalog import UNCERTAIN_INTENT
from intentops.cli import add_config_argument, config_from_args
from intentops.io import read_json, write_json

log = logging.getLogger("bench.public.run")

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS_DIR = HERE / "results"
DEFAULT_REPORT = ROOT / "bench" / "RESULTS.md"
DEFAULT_BUNDLED = ROOT / "examples" / "assistant"
DATASETS = ("clinc150", "banking77")
SMOKE_PROTOCOLS = ("in_domain",)  # unseen and oos splits are covered by prepare's tests; CI time is short

# Reduced sizes and knobs that keep the whole smoke run (the in_domain chain, the seed protocols, the bundled example)
# at about two minutes on a loaded two-core machine.
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
    "evaluation__max_new_tokens=24",  # the profile decodes constrained: room for a whole call in a 300-token vocabulary
)

# ---- command line ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--datasets-dir", type=Path, help="Folder with <dataset>.jsonl files (required to run).")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="Comma-separated dataset names.")
    parser.add_argument(
        "--protocols", help=f"Comma-separated data protocols (default: all; {','.join(SMOKE_PROTOCOLS)} with --smoke)."
    )
    parser.add_argument(
        "--comparisons",
        default=",".join(COMPARISONS),
        help="Comma-separated seed protocols ('' for none): " + ", ".join(COMPARISONS) + ".",
    )
    parser.add_argument(
        "--bundled", type=Path, default=DEFAULT_BUNDLED, help="The zh + en example (records.jsonl, catalog.yaml)."
    )
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
    protocols = args.protocols or ",".join(SMOKE_PROTOCOLS if args.smoke else PROTOCOLS)
    args.protocols = [p.strip() for p in protocols.split(",") if p.strip()]
    args.comparisons = {c.strip() for c in args.comparisons.split(",") if c.strip()}
    if args.render_only:
        return args
    if args.datasets_dir is None:
        parser.error("--datasets-dir is required (the folder holding clinc150.jsonl, banking77.jsonl)")
    unknown = sorted(set(args.protocols) - set(PROTOCOLS))
    if unknown:
        parser.error(f"unknown protocols: {', '.join(unknown)} (known: {', '.join(PROTOCOLS)})")
    unknown = sorted(args.comparisons - set(COMPARISONS))
    if unknown:
        parser.error(f"unknown comparisons: {', '.join(unknown)} (known: {', '.join(COMPARISONS)})")
    if args.comparisons & set(BUNDLED_COMPARISONS) and not (args.bundled / RECORDS_FILE).is_file():
        parser.error(f"{args.bundled / 'records.jsonl'}: bundled example not found (needed by cross_lingual)")
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
        update_report(args.report, render_block(read_json(args.results_dir / f"{name}.json")), name)
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
                result, chain = run_protocol(dataset, source, protocol, sizes, run_cfg, work, name)
                protocols.append(result)
                wanted = args.comparisons & set(SPLIT_COMPARISONS)
                if protocol == "in_domain" and wanted:
                    try:
                        split_comparisons(result, chain, chain.cfg, wanted)
                    except Exception as exc:  # recorded on the table, and the exit status says so
                        log.exception("[%s] seed protocols stopped", dataset)
                        error = f"{type(exc).__name__}: {exc}"[:300]
                        result.comparisons.append(Row(method="seed protocols", decoding="", error=error))
        wanted = args.comparisons & set(BUNDLED_COMPARISONS)
        if wanted:
            work = work_root / "bundled"
            shutil.rmtree(work, ignore_errors=True)
            bundled_cfg = protocol_config(run_cfg, "in_domain")
            protocols.append(bundled_comparisons(args.bundled, sizes, bundled_cfg, work, name, wanted))
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
        "protocols": [asdict(p) for p in protocols],
        "run_config": base_cfg.model_dump(),
    }
    out = args.results_dir / f"{name}.json"
    write_json(out, results)
    update_report(args.report, render_block(read_json(out)), name)
    failed = [
        f"{p.dataset}/{row.protocol or p.protocol}: {row.method}"
        for p in protocols
        for row in [*p.rows, *p.comparisons]
        if row.error
    ]
    log.info("results: %s; table: %s; %.0f s in all", out, args.report, results["wall_s"])
    if failed:
        log.error("rows that did not run: %s", "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
