"""The seed protocols: comparisons that isolate one choice of the method, each on one prepared split.

On the `in_domain` split of each public dataset, starting from the chain's own base and SFT models (chain.py):

- `sft_vs_grpo`: SFT and GRPO from the base model, each for the same number of epochs over the training split
  (GRPO's epochs: optimizer steps x prompts per step / training records);
- `grpo_from_base`: GRPO from the base model (`sft.enabled=false`) vs after the SFT warm-up, same steps;
- `format_reward`: the chain's SFT + GRPO with the configured format reward vs the other one (`grpo.strict_format`);
- `online_filtering`: offline RCS (stage 1, mining, stage 2) vs one GRPO run with `grpo.online_filtering` for the
  same total optimizer steps;
- `uncertain_label`: the chain with the uncertain-label step (SFT with `uncertain()` offered, the least-confident
  `sft.uncertain_share` relabelled, GRPO) against the chain's SFT + GRPO; reports the uncertain rate and precision.

On the bundled zh + en example (variants.py), SFT models only:

- `cross_lingual`: trained in one language, tested in the other, next to the same model on its own language;
- `catalog_change`: intents merged into one that `replaces` them, and the reverse split: a model trained on the old
  catalog (prompted with the new one) vs one retrained on the new catalog.

Comparison rows repeat the chain rows they compare against, so each comparison reads on its own. A failing run is
recorded on its row, as in the chain.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chain import Chain, build_base, relabel_step, timer
from rows import ProtocolResult, Row, evaluate, fit_lengths, tfidf_row
from variants import merge_intents, pick_merge_group, prepare_bundled, replaced_accuracy, with_replaces

from intentops.artifacts import CATALOG_FILE, RECORDS_FILE, TRAIN_FILE
from intentops.config import RunConfig
from intentops.io import read_jsonl

log = logging.getLogger("bench.public.protocols")

SPLIT_COMPARISONS = ("sft_vs_grpo", "grpo_from_base", "format_reward", "online_filtering", "uncertain_label")
BUNDLED_COMPARISONS = ("cross_lingual", "catalog_change")
COMPARISONS = (*SPLIT_COMPARISONS, *BUNDLED_COMPARISONS)


def grpo_epochs(cfg: RunConfig, steps: int, n_train: int) -> float:
    """Passes over the training split that `steps` GRPO optimizer steps make (each prompt drawn once per pass)."""
    prompts_per_step = cfg.grpo.batch_size * cfg.grpo.gradient_accumulation_steps / cfg.grpo.num_generations
    return steps * prompts_per_step / n_train


def _attempt(rows: list[Row], protocol: str, method: str, run: Callable[[], Row]) -> Row | None:
    """Run one comparison row; a failure becomes a row with the error instead of stopping the benchmark."""
    try:
        row = run()
    except Exception as exc:  # recorded on the table, and the exit status says so
        log.exception("%s: %s failed", protocol, method)
        rows.append(Row(method=method, decoding="", protocol=protocol, error=f"{type(exc).__name__}: {exc}"[:300]))
        return None
    row.method, row.protocol = method, protocol
    rows.append(row)
    return row


def _again(rows: list[Row], protocol: str, row: Row | None, method: str | None = None) -> None:
    """A chain row repeated in a comparison table."""
    if row is not None:
        rows.append(dataclasses.replace(row, protocol=protocol, method=method or row.method))


def _predictions(eval_dir: Path) -> list[dict[str, Any]]:
    from intentops.evaluation import PREDICTIONS_FILE

    return list(read_jsonl(eval_dir / PREDICTIONS_FILE))


def split_comparisons(result: ProtocolResult, chain: Chain, cfg: RunConfig, names: set[str]) -> None:
    """The seed protocols on the chain's split; rows go to `result.comparisons`."""
    from intentops.training.grpo import run_grpo
    from intentops.training.sft import run_sft
    from intentops.training.uncertain import uncertain_report

    if chain.base is None or "SFT" not in chain.models or chain.train_path is None:
        raise RuntimeError("the chain did not get as far as SFT; the seed protocols need its models")
    out, timed, data_dir, run_id = result.comparisons, timer(result), chain.data_dir, chain.run_id
    models, evals, stage_s = chain.work / "models", chain.work / "eval", result.stage_s
    n_train = sum(1 for _ in read_jsonl(data_dir / TRAIN_FILE))
    steps = cfg.grpo.stage1_max_steps
    epochs = grpo_epochs(cfg, steps, n_train)
    sft_row, grpo_row, rcs_row = (chain.rows.get(k) for k in ("SFT", "SFT + GRPO", "SFT + GRPO + RCS"))
    base_s = stage_s["base"]

    def grpo_from(model: Path, cfg_run: RunConfig, name: str, cost: float, train: Path | None = None) -> Row:
        result_ = timed(name, run_grpo, train or chain.train_path, model, cfg_run, models / name, "grpo1", run_id)
        row = evaluate(name, Path(result_.model_dir), data_dir, cfg, evals / name, run_id, cost + stage_s[name])
        reward = result_.metrics.get("final_reward", math.nan)
        row.note = f"{result_.steps} GRPO steps" + (
            "" if math.isnan(reward) else f", last logged mean reward {reward:.2f}"
        )
        return row

    if names & {"sft_vs_grpo", "grpo_from_base"}:
        from_base = cfg.model_copy(deep=True)
        from_base.sft.enabled = False
        from_base.grpo.collapse_patience = steps + 1  # the row measures GRPO from scratch, not the collapse guard
        handed = Path(timed("hand-on", run_sft, data_dir, str(chain.base), from_base, models / "handed-on", run_id))
        label = f"GRPO from base, {epochs:.2g} epochs ({steps} steps)"
        cost = base_s + stage_s["hand-on"]
        tried: list[Row] = []
        base_grpo = _attempt(tried, "sft_vs_grpo", label, lambda: grpo_from(handed, from_base, "grpo-base", cost))
        if "sft_vs_grpo" in names:
            matched = cfg.model_copy(deep=True)
            matched.sft.epochs = epochs

            def sft_matched() -> Row:
                folder = Path(
                    timed("sft-matched", run_sft, data_dir, str(chain.base), matched, models / "sft-m", run_id)
                )
                cost = base_s + stage_s["sft-matched"]
                return evaluate("", folder, data_dir, cfg, evals / "sft-matched", run_id, cost)

            _attempt(out, "sft_vs_grpo", f"SFT, {epochs:.2g} epochs", sft_matched)
            out.extend(tried)
        if "grpo_from_base" in names:
            _again(out, "grpo_from_base", base_grpo or tried[0], f"GRPO from base ({steps} steps)")
            _again(out, "grpo_from_base", grpo_row, f"SFT + GRPO ({steps} steps)")

    sft_cost = sft_row.train_s if sft_row and sft_row.train_s else 0.0
    if "format_reward" in names:
        other = cfg.model_copy(deep=True)
        other.grpo.strict_format = not cfg.grpo.strict_format
        kind = {True: "strict", False: "loose"}
        _again(out, "format_reward", grpo_row, f"SFT + GRPO, {kind[cfg.grpo.strict_format]} format reward")
        _attempt(
            out,
            "format_reward",
            f"SFT + GRPO, {kind[other.grpo.strict_format]} format reward",
            lambda: grpo_from(chain.models["SFT"], other, "grpo-format", sft_cost),
        )

    if "online_filtering" in names:
        online = cfg.model_copy(deep=True)
        online.grpo.online_filtering = True
        online.grpo.stage1_max_steps = cfg.grpo.stage1_max_steps + cfg.grpo.stage2_max_steps
        _again(out, "online_filtering", rcs_row, "SFT + GRPO + offline RCS")
        _attempt(
            out,
            "online_filtering",
            f"SFT + GRPO, online filtering ({online.grpo.stage1_max_steps} steps)",
            lambda: grpo_from(chain.models["SFT"], online, "grpo-online", sft_cost),
        )

    if "uncertain_label" in names:
        offered = cfg.model_copy(deep=True)
        offered.prompt.uncertain_label = True
        if offered.sft.uncertain_share <= 0:
            offered.sft.uncertain_share = 0.1

        def relabelled_chain() -> Row:
            fit_lengths(offered, chain.base, data_dir)  # the prompt now lists uncertain() too
            sft_dir = Path(
                timed("sft-uncertain", run_sft, data_dir, str(chain.base), offered, models / "sft-u", run_id)
            )
            train, note = relabel_step(timed, sft_dir, data_dir / TRAIN_FILE, offered, chain.work / "relabelled-u")
            cost = base_s + stage_s["sft-uncertain"] + stage_s.get("relabel", 0.0)
            row = grpo_from(sft_dir, offered, "grpo-uncertain", cost, train)
            report = uncertain_report(_predictions(evals / "grpo-uncertain"), _predictions(chain.evals["SFT + GRPO"]))
            precision = report["uncertain_precision"]
            row.note = (
                f"{note}uncertain rate {report['uncertain_rate']:.1%} of {report['n']} test records, precision "
                + ("— (no uncertain answers)" if precision is None else f"{precision:.1%}")
                + " against SFT + GRPO's errors"
            )
            return row

        _again(out, "uncertain_label", grpo_row, "SFT + GRPO (no uncertain label)")
        _attempt(out, "uncertain_label", f"SFT + relabel {offered.sft.uncertain_share:.0%} + GRPO", relabelled_chain)


def bundled_comparisons(
    bundled: Path, sizes: dict[str, int | None], cfg: RunConfig, work: Path, tag: str, names: set[str]
) -> ProtocolResult:
    """Cross-lingual and catalog-change rows on the bundled zh + en example (SFT models only)."""
    from intentops.catalog import load_catalog
    from intentops.training.sft import run_sft

    info = prepare_bundled(
        bundled / RECORDS_FILE,
        bundled / CATALOG_FILE,
        work / "data",
        max_intents=sizes.get("max_intents"),
        max_train_per_intent=sizes.get("max_train_per_intent"),
        max_test_per_intent=sizes.get("max_test_per_intent"),
        seed=cfg.data.seed,
    )
    result = ProtocolResult(dataset="assistant (bundled example)", protocol="bundled", data=info)
    out, timed, run_id = result.comparisons, timer(result), f"{tag}-assistant"
    same, cross = work / "data" / "same", work / "data" / "cross"
    lang_pair = f"{info['train_lang']}→{info['test_lang']}", f"{info['train_lang']}→{info['train_lang']}"
    models = work / "models"

    def train(data: Path, name: str) -> tuple[Path, float]:
        base = timed(f"base-{name}", build_base, data, cfg, models / f"base-{name}")
        fit_lengths(cfg, base, data)
        model = Path(timed(f"sft-{name}", run_sft, data, str(base), cfg, models / name, run_id))
        return model, result.stage_s[f"base-{name}"] + result.stage_s[f"sft-{name}"]

    def ev(model: Path, data: Path, name: str, cost: float) -> Row:
        return evaluate("", model, data, cfg, work / "eval" / name, run_id, cost)

    try:
        sft, cost = train(same, "sft")
    except Exception as exc:  # every row below needs this model
        log.exception("bundled: SFT failed")
        out.append(Row(method="SFT", decoding="", protocol="bundled", error=f"{type(exc).__name__}: {exc}"[:300]))
        return result
    if "cross_lingual" in names:
        for pair, data in zip(lang_pair, (cross, same), strict=True):
            _attempt(out, "cross_lingual", f"TF-IDF + linear, {pair}", lambda d=data: tfidf_row(d, cfg.data.seed))
            _attempt(out, "cross_lingual", f"SFT, {pair}", lambda d=data, p=pair: ev(sft, d, f"sft-{p}", cost))
    if "catalog_change" in names:
        group, old = pick_merge_group(load_catalog(same / CATALOG_FILE), cfg.data.seed)
        merged_dir, split_dir = work / "data" / "merged", work / "data" / "split"
        merged_catalog = merge_intents(same, group, old, merged_dir)
        split_catalog = with_replaces(same, group, old, split_dir)
        result.data["catalog_change"] = {"split_intents": group, "merged_intent": old}
        rows: dict[str, Row | None] = {}
        rows["merge old"] = _attempt(
            out, "catalog_change", f"merge {'+'.join(group)}→{old}: trained on old catalog",
            lambda: ev(sft, merged_dir, "merge-old", cost),
        )  # fmt: skip
        try:
            sft_merged, merged_cost = train(merged_dir, "sft-merged")
        except Exception as exc:
            out.append(
                Row(method="SFT on merged catalog", decoding="", protocol="catalog_change", error=str(exc)[:300])
            )
            return result
        rows["merge new"] = _attempt(
            out,
            "catalog_change",
            "merge: retrained on new catalog",
            lambda: ev(sft_merged, merged_dir, "merge-new", merged_cost),
        )
        rows["split old"] = _attempt(
            out, "catalog_change", f"split {old}→{'+'.join(group)}: trained on old catalog",
            lambda: ev(sft_merged, split_dir, "split-old", merged_cost),
        )  # fmt: skip
        rows["split new"] = _attempt(
            out, "catalog_change", "split: retrained on new catalog", lambda: ev(sft, split_dir, "split-new", cost)
        )
        changed = {"merge": ([old], merged_catalog), "split": (group, split_catalog)}
        for key, row in rows.items():
            if row is None:
                continue
            names_, catalog = changed[key.split()[0]]
            predictions = _predictions(work / "eval" / key.replace(" ", "-"))
            exact = replaced_accuracy(predictions, catalog, names_, mapped=False)
            row.note = f"changed intents ({', '.join(names_)}): accuracy {_share(exact)}"
            if key == "merge old":  # a split cannot be mapped: the old answer names several new intents
                mapped = replaced_accuracy(predictions, catalog, names_, mapped=True)
                row.note += f", {_share(mapped)} with old answers mapped through `replaces`"
    return result


def _share(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.1f}%"
