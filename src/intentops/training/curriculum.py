"""Reward-based curriculum sampling (RCS): mine the samples stage-1 GRPO did not master.

Every training sample that stage 1 rolled out gets a score from its rollouts: the mean total reward and the share of
perfect rollouts. A sample is hard when that share is below `mining.hard_threshold` (default 1.0: not every rollout
was perfect). Stage 2 trains on the hard samples, optionally mixed with `easy_per_hard` easy ones (hard-only
trained best in the method's experiments, so the default is 0). Samples stage 1 never drew are "unscored" and left out unless
`mining.include_unscored` is set.

A rollout is perfect when its total equals the sum of the reward weights it was scored with (stored in the rollout
log's metadata by the GRPO stage); for a log without that metadata, when every component is 1.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from intentops.artifacts import MINING_REPORT_JSON, MINING_REPORT_MD, ROLLOUT_COLUMNS, TRAIN_FILE
from intentops.config import MiningConfig
from intentops.io import atomic_write_text, write_json, write_jsonl
from intentops.rewards import REWARD_WEIGHTS_METADATA
from intentops.training.sft import load_split

log = logging.getLogger(__name__)

# Mining needs every rollout column but the generated text itself.
REQUIRED_COLUMNS = tuple(name for name in ROLLOUT_COLUMNS if name not in ("generation", "completion"))
HISTOGRAM_BINS = 10
_EPS = 1e-6


@dataclass
class MiningReport:
    rollouts_path: str
    train_path: str
    out_dir: str
    train_records: int
    scored: int
    unscored: int
    hard: int
    easy: int
    easy_selected: int
    selected: int
    hard_threshold: float
    easy_per_hard: float
    include_unscored: bool
    last_steps_only: int
    steps_used: list[int]
    max_reward: float
    rollouts_used: int
    per_intent: dict[str, dict[str, int]] = field(default_factory=dict)
    histogram: dict[str, list[float]] = field(default_factory=dict)
    hard_ids: list[str] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_rollouts(path: str | Path) -> tuple[Any, float | None]:
    """The rollout log as a DataFrame, and the reward total of a perfect rollout when the log records it."""
    import pandas as pd
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: rollout log not found")
    table = pq.read_table(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in table.column_names]
    if missing:
        raise ValueError(f"{path}: rollout log lacks column(s) {', '.join(missing)}")
    metadata = table.schema.metadata or {}
    max_reward = None
    key = REWARD_WEIGHTS_METADATA.encode()
    if key in metadata:
        max_reward = float(sum(json.loads(metadata[key])))
    frame: pd.DataFrame = table.to_pandas()
    frame["sample_id"] = frame["sample_id"].astype(str)
    return frame, max_reward


def score_samples(frame: Any, max_reward: float | None, last_steps_only: int = 0) -> tuple[Any, list[int]]:
    """Per sample: rollouts, mean total reward, share of perfect rollouts, all_perfect. Returns (scores, steps)."""
    steps = sorted(int(s) for s in frame["step"].unique())
    if last_steps_only:
        steps = steps[-last_steps_only:]
        frame = frame[frame["step"].isin(steps)]
    if max_reward is None:
        perfect = (
            (frame["reward_format"] >= 1 - _EPS)
            & (frame["reward_intent"] >= 1 - _EPS)
            & (frame["reward_params"] >= 1 - _EPS)
        )
    else:
        perfect = frame["reward_total"] >= max_reward - _EPS
    scores = (
        frame.assign(perfect=perfect)
        .groupby("sample_id")
        .agg(rollouts=("reward_total", "size"), mean_reward=("reward_total", "mean"), perfect_share=("perfect", "mean"))
    )
    scores["all_perfect"] = scores["perfect_share"] >= 1 - _EPS
    return scores, steps


def mine_hard_samples(
    rollouts_path: str | Path, train_path: str | Path, mining_cfg: MiningConfig, out_dir: str | Path
) -> MiningReport:
    """Write the stage-2 training set (`train.jsonl`, a subset of `train_path` with every field kept) and the
    report (`mining_report.json`, `mining_report.md`) to `out_dir`."""
    import numpy as np

    out = Path(out_dir)
    records = load_split(train_path)
    frame, max_reward = read_rollouts(rollouts_path)
    scores, steps = score_samples(frame, max_reward, mining_cfg.last_steps_only)
    by_id = {str(r["id"]): r for r in records}
    unknown = sorted(set(scores.index) - set(by_id))
    if unknown and len(unknown) == len(scores):
        raise ValueError(
            f"{rollouts_path}: none of its {len(scores)} sample ids is in {train_path}; "
            f"was the rollout log made from this training set?"
        )
    if unknown:
        log.warning("%d rollout sample ids are not in %s (ignored), e.g. %s", len(unknown), train_path, unknown[:3])
        scores = scores.drop(index=unknown)

    hard_ids = set(scores.index[scores["perfect_share"] < mining_cfg.hard_threshold])
    easy_ids = sorted(set(scores.index) - hard_ids, key=list(by_id).index)
    unscored_ids = [i for i in by_id if i not in scores.index]
    n_easy = min(len(easy_ids), round(mining_cfg.easy_per_hard * len(hard_ids)))
    easy_selected = set(random.Random(mining_cfg.seed).sample(easy_ids, n_easy)) if n_easy else set()
    selected = hard_ids | easy_selected | (set(unscored_ids) if mining_cfg.include_unscored else set())
    subset = [record for record in records if str(record["id"]) in selected]

    per_intent: dict[str, dict[str, int]] = {}
    for sample_id, record in by_id.items():
        counts = per_intent.setdefault(
            str(record.get("intent", "?")), {"hard": 0, "easy": 0, "unscored": 0, "selected": 0}
        )
        status = "hard" if sample_id in hard_ids else "easy" if sample_id in scores.index else "unscored"
        counts[status] += 1
        counts["selected"] += sample_id in selected
    top = max_reward if max_reward is not None else 3.0  # without metadata: three components of weight 1
    counts, edges = np.histogram(scores["mean_reward"].to_numpy(), bins=HISTOGRAM_BINS, range=(0.0, top))
    message = (
        f"{len(hard_ids)} hard of {len(scores)} scored samples (perfect-rollout share < {mining_cfg.hard_threshold})"
        if hard_ids
        else f"no hard samples: all {len(scores)} scored samples had only perfect rollouts; stage 2 will pass the "
        f"stage-1 model on"
    )
    report = MiningReport(
        rollouts_path=str(rollouts_path),
        train_path=str(train_path),
        out_dir=str(out),
        train_records=len(records),
        scored=len(scores),
        unscored=len(unscored_ids),
        hard=len(hard_ids),
        easy=len(easy_ids),
        easy_selected=len(easy_selected),
        selected=len(subset),
        hard_threshold=mining_cfg.hard_threshold,
        easy_per_hard=mining_cfg.easy_per_hard,
        include_unscored=mining_cfg.include_unscored,
        last_steps_only=mining_cfg.last_steps_only,
        steps_used=steps,
        max_reward=float(top),
        rollouts_used=int(scores["rollouts"].sum()) if len(scores) else 0,
        per_intent=dict(sorted(per_intent.items())),
        histogram={"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]},
        hard_ids=sorted(hard_ids),
        message=message,
    )
    write_jsonl(out / TRAIN_FILE, subset)
    write_json(out / MINING_REPORT_JSON, report.to_dict())
    atomic_write_text(out / MINING_REPORT_MD, render_markdown(report))
    log.info("mining: %s; %d records written to %s", message, len(subset), out / TRAIN_FILE)
    return report


def render_markdown(report: MiningReport) -> str:
    """A human-readable summary: thresholds, counts per intent and the reward histogram."""
    lines = [
        "# Hard-sample mining (reward-based curriculum sampling)",
        "",
        f"**{report.message}.**",
        "",
        f"- rollout log: `{report.rollouts_path}` ({report.rollouts_used} rollouts, steps "
        f"{report.steps_used[0] if report.steps_used else '-'}..{report.steps_used[-1] if report.steps_used else '-'})",
        f"- training set: `{report.train_path}` ({report.train_records} records, {report.scored} scored, "
        f"{report.unscored} never rolled out{' and included' if report.include_unscored else ''})",
        f"- hard: perfect-rollout share < {report.hard_threshold}; perfect = total reward {report.max_reward:g}",
        f"- mix: {report.easy_per_hard:g} easy per hard -> {report.easy_selected} easy added; "
        f"stage-2 set: {report.selected} records",
        "",
        "| intent | hard | easy | unscored | selected |",
        "|---|---:|---:|---:|---:|",
    ]
    for intent, counts in report.per_intent.items():
        lines.append(
            f"| {intent} | {counts['hard']} | {counts['easy']} | {counts['unscored']} | {counts['selected']} |"
        )
    lines += ["", "Mean total reward per sample:", "", "| reward | samples |", "|---|---:|"]
    edges, counts = report.histogram.get("edges", []), report.histogram.get("counts", [])
    width = max(counts, default=0) or 1
    for low, high, count in zip(edges, edges[1:], counts, strict=False):
        lines.append(f"| {low:.2f}-{high:.2f} | {count} {'█' * round(20 * count / width)} |")
    return "\n".join(lines) + "\n"
