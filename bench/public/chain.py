"""The IntentOps training chain on one prepared split: SFT, GRPO stage 1, RCS mining, GRPO stage 2, each evaluated.

For every dataset and protocol (bench/public/prepare.py: in_domain, unseen, oos) the same prepared split feeds
every row, so rows differ only in the method:

- TF-IDF + linear classifier (`intentops.evaluation.baselines.tfidf_baseline`);
- SFT (`intentops.training.sft.run_sft`), then SFT + GRPO stage 1 (`run_grpo`), then SFT + GRPO + RCS stage 2
  (`mine_hard_samples` on the stage-1 scoring pass, GRPO stage 2 on the hard set), each scored by `evaluate_model`
  with the config's decoding (batched greedy generation in the tiny profile);
- the best of those three again with label scoring (the perplexity-based decoding of GenCLS++).

With `prompt.uncertain_label` on (the oos protocol), the chain relabels the least-confident share of the training
records `uncertain()` after SFT (`intentops.training.uncertain`), and GRPO and mining train on the relabelled split.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prepare import prepare
from rows import MODEL_ROWS, ProtocolResult, Row, evaluate, fit_lengths, protocol_config, tfidf_row

from intentops.artifacts import CATALOG_FILE, TRAIN_FILE
from intentops.catalog import load_catalog
from intentops.config import RunConfig

log = logging.getLogger("bench.public.chain")


@dataclass
class Chain:
    """The folders one chain produced, so the seed protocols (protocols.py) start from the same models."""

    data_dir: Path
    work: Path
    run_id: str
    cfg: RunConfig  # the protocol's config, lengths fitted to the split by the chain
    base: Path | None = None
    train_path: Path | None = None  # what GRPO trained on: the split, or its uncertain-relabelled copy
    models: dict[str, Path] = field(default_factory=dict)  # row method -> model folder
    evals: dict[str, Path] = field(default_factory=dict)  # row method -> evaluation folder
    rows: dict[str, Row] = field(default_factory=dict)


def timer(result: ProtocolResult) -> Any:
    """`timed(stage, fn, *args)`: run a stage, log it, record its wall time in `result.stage_s`."""

    def timed(stage: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        log.info("[%s/%s] %s", result.dataset, result.protocol, stage)
        begin = time.perf_counter()
        value = fn(*args, **kwargs)
        result.stage_s[stage] = time.perf_counter() - begin
        return value

    return timed


def build_base(data_dir: Path, cfg: RunConfig, out: Path) -> Path:
    """The model every training starts from: the tiny profile's random-init model, or the configured base."""
    if cfg.model.profile == "tiny":
        from intentops.tiny_model import create_tiny_model

        catalog = load_catalog(data_dir / CATALOG_FILE)
        return create_tiny_model(data_dir, catalog, cfg.model, out, cfg.prompt)
    from intentops.models import resolve_model

    return resolve_model(cfg.model.base_model, cfg.model.cache_dir or None)


def relabel_step(timed: Any, sft_dir: Path, train_path: Path, cfg: RunConfig, out: Path) -> tuple[Path, str]:
    """The chain's uncertain-label step (after SFT, before GRPO): (the train file GRPO uses, a note for the row)."""
    if not cfg.prompt.uncertain_label or cfg.sft.uncertain_share <= 0:
        return train_path, ""
    from intentops.training.uncertain import relabel_uncertain

    path, report = timed("relabel", relabel_uncertain, sft_dir, train_path, cfg, out)
    return path, f"{report.relabelled} of {report.train_records} training records relabelled uncertain() after SFT; "


def model_rows(result: ProtocolResult, chain: Chain, cfg: RunConfig) -> None:
    """SFT, SFT + GRPO, SFT + GRPO + RCS, then label scoring for the best of them; appends to `result.rows` and
    fills `chain` with the folders."""
    from intentops.training.curriculum import mine_hard_samples
    from intentops.training.grpo import run_grpo
    from intentops.training.sft import run_sft

    stage_s, data_dir, work, run_id = result.stage_s, chain.data_dir, chain.work, chain.run_id
    models = work / "models"
    timed = timer(result)
    chain.base = timed("base", build_base, data_dir, cfg, models / "tiny-base")
    result.data["lengths"] = fit_lengths(cfg, chain.base, data_dir)
    result.data["effective_config"] = {
        "prompt__uncertain_label": cfg.prompt.uncertain_label,
        "sft__max_length": cfg.sft.max_length,
        "grpo__max_prompt_length": cfg.grpo.max_prompt_length,
    }

    def add(method: str, model_dir: Path, name: str, cost: float, note: str = "") -> Row:
        row = evaluate(method, model_dir, data_dir, cfg, work / "eval" / name, run_id, cost)
        row.note = note
        chain.models[method], chain.evals[method], chain.rows[method] = model_dir, work / "eval" / name, row
        result.rows.append(row)
        return row

    sft_dir = Path(timed("sft", run_sft, data_dir, str(chain.base), cfg, models / "sft", run_id))
    cost = stage_s["base"] + stage_s["sft"]
    add("SFT", sft_dir, "sft", cost)

    # ---- uncertain-label step of the training chain (intentops.training.uncertain) ----
    train_path, relabel_note = relabel_step(timed, sft_dir, data_dir / TRAIN_FILE, cfg, work / "relabelled")
    cost += stage_s.get("relabel", 0.0)
    chain.train_path = train_path

    grpo1 = timed("grpo1", run_grpo, train_path, sft_dir, cfg, models / "grpo1", "grpo1", run_id)
    cost += stage_s["grpo1"]
    note = f"{relabel_note}GRPO stage 1: {grpo1.steps} steps on {grpo1.train_records} training records"
    add("SFT + GRPO", Path(grpo1.model_dir), "grpo1", cost, note)

    if grpo1.scores_path is None:
        raise RuntimeError(f"GRPO stage 1 wrote no scoring pass in {grpo1.model_dir}; nothing to mine")
    hard_dir = work / "hard"
    mining = timed("mining", mine_hard_samples, grpo1.scores_path, train_path, cfg.mining, hard_dir)
    grpo2 = timed("grpo2", run_grpo, hard_dir / TRAIN_FILE, grpo1.model_dir, cfg, models / "grpo2", "grpo2", run_id)
    cost += stage_s["mining"] + stage_s["grpo2"]
    note = f"RCS: {mining.hard} hard of {mining.scored} samples scored after stage 1; " + (
        grpo2.reason if grpo2.skipped else f"GRPO stage 2: {grpo2.steps} steps on them"
    )
    add("SFT + GRPO + RCS", Path(grpo2.model_dir), "grpo2", cost, note)
    result.data["mining"] = {k: v for k, v in mining.to_dict().items() if k not in ("hard_ids", "per_intent")}

    rows = chain.rows
    best = max(MODEL_ROWS, key=lambda name: rows[name].accuracy or 0.0)  # first of equals: the cheaper model
    if cfg.prompt.output_mode != "answer":
        note = "label scoring not run: it needs prompt.output_mode=answer"
        result.rows.append(Row(method=best, decoding="label_scoring", note=note))
        return
    scoring = cfg.model_copy(deep=True)
    scoring.evaluation.decoding = "label_scoring"
    out = work / "eval" / "label-scoring"
    result.rows.append(evaluate(best, chain.models[best], data_dir, scoring, out, run_id, rows[best].train_s))


def run_protocol(
    dataset: str, source: Path, protocol: str, sizes: dict[str, int | None], base_cfg: RunConfig, work: Path, tag: str
) -> tuple[ProtocolResult, Chain]:
    """Prepare the split, then every row on it. A failing stage is recorded on its row; later rows that need it
    are recorded as not run, so one collapse does not hide the other protocols' numbers."""
    data_dir = work / "data"
    report = prepare(source, data_dir, protocol, dataset=dataset, seed=base_cfg.data.seed, **sizes)
    result = ProtocolResult(dataset=dataset, protocol=protocol, data=report.to_dict())
    cfg = protocol_config(base_cfg, protocol)
    chain = Chain(data_dir=data_dir, work=work, run_id=f"{tag}-{dataset}-{protocol}", cfg=cfg)
    log.info("[%s/%s] TF-IDF + linear", dataset, protocol)
    result.rows.append(tfidf_row(data_dir, base_cfg.data.seed))
    try:
        model_rows(result, chain, cfg)
    except Exception as exc:  # recorded on the table, and the exit status says so
        log.exception("[%s/%s] model rows stopped", dataset, protocol)
        done = {row.method for row in result.rows}
        missing = [(name, cfg.evaluation.decoding) for name in MODEL_ROWS if name not in done]
        if not any(row.decoding == "label_scoring" for row in result.rows):
            missing.append(("best model row", "label_scoring"))
        for index, (name, decoding) in enumerate(missing):
            reason = f"{type(exc).__name__}: {exc}" if index == 0 else "not run: an earlier stage failed"
            result.rows.append(Row(method=name, decoding=decoding, error=reason[:300]))
    return result, chain
