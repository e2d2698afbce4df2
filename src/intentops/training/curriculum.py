"""Reward-based curriculum sampling (RCS): mine the training samples the stage-1 policy has not mastered.

The input is the scoring pass (`intentops.training.scoring`): after stage 1, the policy sampled G completions for
every training record, scored with the GRPO rewards. A sample's score is the share of its G completions that are
perfect; perfect means format and intent rewards of 1, and, with `mining.hard_includes_params`, a parameter reward
of 1 too. A sample is hard when its score is below `mining.hard_threshold` (default 1.0: not every completion was
perfect). Stage 2 trains on the hard samples, optionally mixed with `easy_per_hard` easy ones (hard-only trained
best in the method's experiments, so the default is 0).

Records are joined to the log by their `id`; the log records the training set's hash, so a log made from another
training file is refused, and a record without a score is an error naming it (records whose prompt is too long for
GRPO are listed by the pass and reported, not trained).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from intentops.artifacts import MINING_REPORT_JSON, MINING_REPORT_MD, TRAIN_FILE
from intentops.config import MiningConfig
from intentops.io import atomic_write_text, write_json, write_jsonl
from intentops.rewards import REWARD_WEIGHTS_METADATA
from intentops.training.rollouts import (
    GENERATIONS_METADATA,
    KIND_METADATA,
    SKIPPED_METADATA,
    TRAIN_SET_HASH_METADATA,
    train_set_hash,
)
from intentops.training.sft import load_split

log = logging.getLogger(__name__)

# Mining needs the sample id and the reward components of the scoring pass, not the generated text.
REQUIRED_COLUMNS = ("sample_id", "reward_format", "reward_intent", "reward_params", "reward_total")
HISTOGRAM_BINS = 10
_EPS = 1e-6


@dataclass
class MiningReport:
    scores_path: str
    train_path: str
    out_dir: str
    train_records: int
    scored: int
    skipped: int
    coverage: float
    hard: int
    easy: int
    easy_selected: int
    selected: int
    hard_threshold: float
    hard_includes_params: bool
    easy_per_hard: float
    generations: int
    max_reward: float
    rollouts_used: int
    per_intent: dict[str, dict[str, float]] = field(default_factory=dict)
    score_histogram: dict[str, int] = field(default_factory=dict)
    reward_histogram: dict[str, list[float]] = field(default_factory=dict)
    hard_ids: list[str] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ui_metadata(self) -> dict[str, Any]:
        """Flat scalars for the Kubeflow UI's artifact metadata: coverage, counts and the hard share per intent."""
        return {
            "train_records": self.train_records,
            "scored": self.scored,
            "coverage": round(self.coverage, 4),
            "hard": self.hard,
            "hard_share": round(self.hard / self.scored, 4) if self.scored else 0.0,
            "easy": self.easy,
            "selected": self.selected,
            "hard_threshold": self.hard_threshold,
            "hard_includes_params": self.hard_includes_params,
            **{f"score={key}": count for key, count in self.score_histogram.items()},
            **{f"hard_share/{intent}": c["hard_share"] for intent, c in self.per_intent.items()},
        }


def read_scores(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The scoring pass as a DataFrame and its metadata (weights, kind, training-set hash, skipped ids, G)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scoring-pass log not found")
    table = pq.read_table(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in table.column_names]
    if missing:
        raise ValueError(f"{path}: rollout log lacks column(s) {', '.join(missing)}")
    raw = {key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()}
    kind = raw.get(KIND_METADATA, "")
    if kind != "scoring":
        raise ValueError(
            f"{path}: a {kind or 'untyped'} rollout log, not the scoring pass over every training record; mining "
            f"needs the stage-1 scoring pass (rollouts.scoring.parquet)"
        )
    meta = {
        "weights": json.loads(raw[REWARD_WEIGHTS_METADATA]) if REWARD_WEIGHTS_METADATA in raw else [1.0, 1.0, 1.0],
        "train_set_hash": json.loads(raw.get(TRAIN_SET_HASH_METADATA, '""')),
        "skipped": json.loads(raw.get(SKIPPED_METADATA, "[]")),
        "generations": int(json.loads(raw.get(GENERATIONS_METADATA, "0"))),
    }
    frame = table.to_pandas()
    frame["sample_id"] = frame["sample_id"].astype(str)
    return frame, meta


def score_samples(frame: Any, include_params: bool) -> Any:
    """Per sample: completions, mean total reward and the share of perfect completions (the sample's score)."""
    perfect = (frame["reward_format"] >= 1 - _EPS) & (frame["reward_intent"] >= 1 - _EPS)
    if include_params:
        perfect &= frame["reward_params"] >= 1 - _EPS
    return (
        frame.assign(perfect=perfect)
        .groupby("sample_id")
        .agg(rollouts=("reward_total", "size"), mean_reward=("reward_total", "mean"), score=("perfect", "mean"))
    )


def mine_hard_samples(
    scores_path: str | Path, train_path: str | Path, mining_cfg: MiningConfig, out_dir: str | Path
) -> MiningReport:
    """Write the stage-2 training set (`train.jsonl`, a subset of `train_path` with every field kept) and the
    report (`mining_report.json`, `mining_report.md`) to `out_dir`."""
    import numpy as np

    out = Path(out_dir)
    records = load_split(train_path)
    frame, meta = read_scores(scores_path)
    expected_hash = train_set_hash(records)
    if meta["train_set_hash"] != expected_hash:
        raise ValueError(
            f"{scores_path}: scored training set {meta['train_set_hash'][:12] or '(none)'} is not {train_path} "
            f"({expected_hash[:12]}); score the same training set stage 1 trained on"
        )
    scores = score_samples(frame, mining_cfg.hard_includes_params)
    by_id = {str(r["id"]): r for r in records}
    skipped = set(meta["skipped"])
    unscored = [(line, i) for line, i in enumerate(by_id, start=1) if i not in scores.index and i not in skipped]
    if unscored:
        line, first = unscored[0]
        raise ValueError(
            f"{train_path}:{line}: record {first!r} has no score in {scores_path} ({len(unscored)} records lack one); "
            f"the scoring pass must cover every training record"
        )

    hard_ids = set(scores.index[scores["score"] < mining_cfg.hard_threshold - _EPS])
    easy_ids = [i for i in by_id if i in scores.index and i not in hard_ids]
    n_easy = min(len(easy_ids), round(mining_cfg.easy_per_hard * len(hard_ids)))
    easy_selected = set(random.Random(mining_cfg.seed).sample(easy_ids, n_easy)) if n_easy else set()
    selected = hard_ids | easy_selected
    subset = [record for record in records if str(record["id"]) in selected]

    per_intent: dict[str, dict[str, float]] = {}
    for sample_id, record in by_id.items():
        counts = per_intent.setdefault(str(record.get("intent", "?")), {"records": 0, "hard": 0, "selected": 0})
        counts["records"] += 1
        counts["hard"] += sample_id in hard_ids
        counts["selected"] += sample_id in selected
    for counts in per_intent.values():
        counts["hard_share"] = round(counts["hard"] / counts["records"], 4)
    generations = meta["generations"] or int(scores["rollouts"].max())
    score_counts = {
        f"{k}/{generations}": int((scores["score"] * generations).round().eq(k).sum()) for k in range(generations + 1)
    }
    top = float(sum(meta["weights"]))
    counts, edges = np.histogram(scores["mean_reward"].to_numpy(), bins=HISTOGRAM_BINS, range=(0.0, top))
    rule = "format and intent" + (" and params" if mining_cfg.hard_includes_params else "")
    message = (
        f"{len(hard_ids)} hard of {len(scores)} scored samples (share of perfect completions < "
        f"{mining_cfg.hard_threshold}, perfect = {rule} right)"
        if hard_ids
        else f"no hard samples: all {len(scores)} scored samples had only perfect completions; stage 2 will pass "
        f"the stage-1 model on"
    )
    report = MiningReport(
        scores_path=str(scores_path),
        train_path=str(train_path),
        out_dir=str(out),
        train_records=len(records),
        scored=len(scores),
        skipped=len(skipped & set(by_id)),
        coverage=len(scores) / len(records) if records else 0.0,
        hard=len(hard_ids),
        easy=len(easy_ids),
        easy_selected=len(easy_selected),
        selected=len(subset),
        hard_threshold=mining_cfg.hard_threshold,
        hard_includes_params=mining_cfg.hard_includes_params,
        easy_per_hard=mining_cfg.easy_per_hard,
        generations=generations,
        max_reward=top,
        rollouts_used=int(scores["rollouts"].sum()) if len(scores) else 0,
        per_intent=dict(sorted(per_intent.items())),
        score_histogram=score_counts,
        reward_histogram={"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]},
        hard_ids=sorted(hard_ids),
        skipped_ids=sorted(skipped & set(by_id)),
        message=message,
    )
    write_jsonl(out / TRAIN_FILE, subset)
    write_json(out / MINING_REPORT_JSON, report.to_dict())
    atomic_write_text(out / MINING_REPORT_MD, render_markdown(report))
    log.info("mining: %s; %d records written to %s", message, len(subset), out / TRAIN_FILE)
    return report


def render_markdown(report: MiningReport) -> str:
    """A human-readable summary: coverage, rule, hard share per intent and the score and reward histograms."""
    lines = [
        "# Hard-sample mining (reward-based curriculum sampling)",
        "",
        f"**{report.message}.**",
        "",
        f"- scoring pass: `{report.scores_path}` ({report.rollouts_used} completions, {report.generations} per record)",
        f"- training set: `{report.train_path}`: {report.train_records} records, {report.scored} scored "
        f"(coverage {report.coverage:.1%}), {report.skipped} skipped for an over-long prompt",
        f"- hard: share of perfect completions < {report.hard_threshold}; perfect = format and intent reward 1"
        f"{' and parameter reward 1' if report.hard_includes_params else ''}",
        f"- mix: {report.easy_per_hard:g} easy per hard -> {report.easy_selected} easy added; "
        f"stage-2 set: {report.selected} records",
        "",
        "| intent | records | hard | hard share | selected |",
        "|---|---:|---:|---:|---:|",
    ]
    for intent, c in report.per_intent.items():
        lines.append(f"| {intent} | {c['records']} | {c['hard']} | {c['hard_share']:.1%} | {c['selected']} |")
    width = max(report.score_histogram.values(), default=0) or 1
    lines += ["", "Samples by perfect completions:", "", "| perfect | samples |", "|---|---:|"]
    for key, count in report.score_histogram.items():
        lines.append(f"| {key} | {count} {'█' * round(20 * count / width)} |")
    lines += ["", "Mean total reward per sample:", "", "| reward | samples |", "|---|---:|"]
    edges, counts = report.reward_histogram.get("edges", []), report.reward_histogram.get("counts", [])
    width = max(counts, default=0) or 1
    for low, high, count in zip(edges, edges[1:], counts, strict=False):
        lines.append(f"| {low:.2f}-{high:.2f} | {count} {'█' * round(20 * count / width)} |")
    return "\n".join(lines) + "\n"
