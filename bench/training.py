"""Training chain benchmark: wall time and throughput per stage of the tiny profile on the bundled example.

Runs the chain the pipeline runs, in one process, with the RunConfig of `configs/tiny-cpu.yaml` (plus any `--set`):
split the bundled example (examples/assistant/records.jsonl, not timed), build the tiny model, SFT warm-up, GRPO
stage 1, hard-sample mining, GRPO stage 2. For each stage it reports wall time, CPU time and items per second (SFT:
training examples seen; GRPO: rollouts, i.e. scored completions; mining: rollouts read), and the stage's own figures
(SFT training-sample accuracy, final reward, hard samples).

    python bench/training.py --write-readme
    OMP_NUM_THREADS=1 python bench/training.py --set sft__epochs=2     # any RunConfig override

The target of issue 3 is the whole chain (SFT, GRPO 1, mining, GRPO 2) in at most 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from readme_section import README, write_section

from intentops.artifacts import MINING_REPORT_JSON
from intentops.catalog import load_catalog
from intentops.cli import add_config_argument, config_from_args
from intentops.config import EXAMPLE_DIR, RunConfig
from intentops.io import read_jsonl, write_json

ROOT = Path(__file__).resolve().parents[1]

SECTION = "training"
TARGET_S = 600.0
log = logging.getLogger("bench.training")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(name: str, func: Callable[[], Any], rows: list[dict[str, Any]]) -> Any:
    """Run one stage, append its row (wall and CPU seconds) and return its result."""
    log.info("stage %s ...", name)
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = func()
    rows.append({"stage": name, "wall_s": time.perf_counter() - wall, "cpu_s": _cpu_seconds() - cpu})
    log.info("stage %s: %.1f s", name, rows[-1]["wall_s"])
    return result


def run_chain(work: Path, cfg: RunConfig) -> dict[str, Any]:
    import mlflow

    from intentops.artifacts import Dataset, HardSet, ModelFolder, Records
    from intentops.data.split import split_dataset
    from intentops.stages import train_chain
    from intentops.tiny_model import create_tiny_model

    cfg = cfg.model_copy(deep=True)
    cfg.registry.tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(cfg.registry.tracking_uri)
    if mlflow.get_experiment_by_name(cfg.registry.experiment) is None:  # keep artifacts under --work, not ./mlruns
        mlflow.create_experiment(cfg.registry.experiment, artifact_location=(work / "mlartifacts").as_uri())
    chain_dir = work / "chain"
    for path in (work / "tiny", chain_dir):
        shutil.rmtree(path, ignore_errors=True)
    dataset = Dataset(work / "dataset")
    if not dataset.exists():
        example = Dataset(EXAMPLE_DIR)
        split_dataset(Records(EXAMPLE_DIR).records, load_catalog(example.catalog_path), cfg.data, dataset.path)
    train = list(read_jsonl(dataset.train))
    catalog = load_catalog(dataset.catalog_path)

    rows: list[dict[str, Any]] = []
    tiny = timed(
        "tiny model", lambda: create_tiny_model(dataset.path, catalog, cfg.model, work / "tiny", cfg.prompt), rows
    )
    rows[-1].update(items=len(train), unit="records", note=f"{ModelFolder(tiny).card()['parameters']:,} parameters")
    cfg.model.base_model = str(tiny)
    names = {"sft": "SFT", "grpo1": "GRPO stage 1", "mine": "mining", "grpo2": "GRPO stage 2"}
    chain = train_chain(cfg, dataset.path, chain_dir, on_stage=lambda name, run: timed(names[name], run, rows))
    meta = chain.stages

    check = ModelFolder(chain.sft).card()["training"]["train_check"]
    rows[1].update(
        items=round(len(train) * cfg.sft.epochs),
        unit="examples",
        note=f"train-sample intent acc {check['intent_accuracy']:.2f}, params {check['param_accuracy']:.2f}",
    )
    g1 = meta["grpo1"]
    rows[2].update(
        items=int(g1.get("rollouts", 0)),
        unit="rollouts",
        note=f"{g1['steps']} steps, final reward {g1['final_reward']:.2f} / 3",
    )
    mined = HardSet(chain.hard_set).read_json(MINING_REPORT_JSON)
    rows[3].update(
        items=mined["rollouts_used"], unit="rollouts", note=f"{mined['hard']} hard of {mined['scored']} scored"
    )
    g2 = meta["grpo2"]
    rows[4].update(
        items=int(g2.get("rollouts", 0)),
        unit="rollouts",
        note=g2.get("skip_reason")
        or f"{g2['steps']} steps on {g2['train_records']} hard samples, final reward {g2['final_reward']:.2f} / 3",
    )
    for row in rows:
        row["per_s"] = row["items"] / row["wall_s"] if row["wall_s"] else 0.0
    chain_rows = [r for r in rows if r["stage"] != "tiny model"]
    return {
        "rows": rows,
        "chain_wall_s": sum(r["wall_s"] for r in chain_rows),
        "total_wall_s": sum(r["wall_s"] for r in rows),
        "train_records": len(train),
    }


def _machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {load[0]:.1f} at the end"
    )


def render(report: dict[str, Any]) -> str:
    lines = [
        "| stage | wall s | CPU s | items | per second | figures |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['stage']} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['items']:,} {row['unit']} | "
            f"{row['per_s']:.1f} | {row['note']} |"
        )
    verdict = "within" if report["chain_wall_s"] <= TARGET_S else "over"
    lines += [
        "",
        f"Chain (SFT + GRPO 1 + mining + GRPO 2): {report['chain_wall_s']:.1f} s, {verdict} the {TARGET_S:.0f} s "
        f"target; with the tiny model build {report['total_wall_s']:.1f} s.",
    ]
    return "\n".join(lines)


def readme_section(report: dict[str, Any]) -> str:
    return (
        f"## {SECTION}\n\n"
        "The tiny profile's training chain on the bundled example (`bench/training.py`): the dataset split from "
        "`examples/assistant/records.jsonl` with the default data config, then the stages in one process with "
        "`configs/tiny-cpu.yaml`. SFT items are training examples seen (records x epochs), GRPO items are rollouts "
        "(scored completions), mining items are rollouts read. CPU s is user + system time of the process.\n\n"
        f"Measured on {report['date']}, {report['train_records']} training records, on {report['machine']}:\n\n"
        f"{render(report)}\n\n"
        f"Reproduce:\n\n```bash\n{report['command']}\n```\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "intentops" / "bench-training"))
    parser.add_argument("--json", help="Also write the figures to this JSON file.")
    parser.add_argument("--write-readme", action="store_true", help=f"Update section '{SECTION}' of {README}.")
    add_config_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = run_chain(work, cfg)
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    report.update(
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
        machine=_machine(),
        command=threads + shlex.join(["python", "bench/training.py", *(argv if argv is not None else sys.argv[1:])]),
    )
    print(render(report))
    print(f"\n{report['command']}")
    if args.json:
        write_json(args.json, report)
    if args.write_readme:
        write_section(SECTION, readme_section(report))
        print(f"updated section '{SECTION}' of {README}")
    return 0 if report["chain_wall_s"] <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
