"""The report: the generated block of bench/RESULTS.md (command, machine, sizes, one table per dataset).

The block between the markers is regenerated from the results JSON; the hand-written reading around it stays. Each
results name (`--name`) has its own block, so runs of different sizes sit side by side in one report.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from intentops.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]


def marks(name: str) -> tuple[str, str]:
    """The start and end markers of the block of results `name`."""
    return (
        f"<!-- bench/public/run.py: generated block {name}, do not edit by hand -->",
        f"<!-- end of generated block {name} -->",
    )


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
    start, end = marks(results["name"])
    lines = [
        start,
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
        blocks = [p for p in results["protocols"] if p["dataset"] == dataset and p["protocol"] != "bundled"]
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
        lines += comparison_table([row for block in blocks for row in block.get("comparisons", [])])
    bundled = [p for p in results["protocols"] if p["protocol"] == "bundled"]
    for block in bundled:
        data = block["data"]
        counts = data.get("counts", {})
        lines += ["", f"#### {block['dataset']}", ""]
        if counts:
            lines.append(
                f"{data['intents']} intents, single-intent records; trained on {data['train_lang']} "
                f"(train {counts['same']['train']}), tested on held-out {data['train_lang']} records "
                f"({counts['same']['test']}) and on {data['test_lang']} records ({counts['cross']['test']})."
                " CLINC150 and BANKING77 are English-only, so the cross-lingual protocol runs on this example. "
                "Models here are SFT only."
            )
        change = data.get("catalog_change")
        if change:
            lines.append(
                f"Catalog change: `{'`, `'.join(change['split_intents'])}` merged into `{change['merged_intent']}` "
                "(which `replaces` them), and the reverse split."
            )
        lines += comparison_table(block.get("comparisons", []))
    lines += ["", end]
    return "\n".join(lines)


def comparison_table(rows: list[dict[str, Any]]) -> list[str]:
    """The seed-protocol rows of one dataset: one table, grouped by comparison, notes below."""
    if not rows:
        return []
    lines = [
        "",
        "Seed protocols (each comparison on the same split; rows of the chain repeated for reference):",
        "",
        "| comparison | method | acc | macro-F1 | fmt err | train s | eval s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["error"]:
            lines.append(f"| {row['protocol']} | {row['method']} | {row['error']} |||||")
            continue
        lines.append(
            f"| {row['protocol']} | {row['method']} | {_pct(row['accuracy'])} | {_pct(row['macro_f1'])} | "
            f"{_pct(row['format_error_rate'])} | {_secs(row['train_s'])} | {_secs(row['eval_s'])} |"
        )
    notes = [f"- {r['protocol']}, {r['method']}: {r['note']}" for r in rows if r["note"] and not r["error"]]
    return lines + (["", *notes] if notes else [])


def update_report(path: Path, block: str, name: str) -> None:
    """Replace the report's generated block of results `name` (or add it at the end); the prose and the other
    blocks stay."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n\n"
    start, end = marks(name)
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, text)
