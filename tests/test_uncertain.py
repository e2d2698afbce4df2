"""The uncertain-label relabelling: confidences, the least-confident pick, relabelled records, the report, validation."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from intentops.artifacts import CATALOG_FILE, TRAIN_FILE
from intentops.catalog import CatalogError, load_catalog, parse_catalog
from intentops.config import DataConfig, RunConfig
from intentops.data.validate import validate_records
from intentops.io import read_json, read_jsonl
from intentops.training.uncertain import (
    RELABELLED_FROM,
    UncertainLabelError,
    gold_confidences,
    least_confident,
    relabel,
    relabel_uncertain,
    target_mean_logprobs,
    uncertain_report,
)


def test_target_mean_logprobs_by_hand() -> None:
    # vocab of 2, uniform logits except where set: log p = log(1/2) unless the logits favour one token.
    logits = torch.zeros(2, 3, 2)
    logits[0, 1] = torch.tensor([0.0, math.log(3.0)])  # position 1 predicts token 1 with p = 3/4
    input_ids = torch.tensor([[0, 0, 1], [1, 0, 0]])
    # row 0, target = last 2 tokens (0 then 1): log(1/2) and log(3/4); row 1, target = last token (0): log(1/2)
    means = target_mean_logprobs(logits, input_ids, [2, 1])
    assert means[0] == pytest.approx((math.log(0.5) + math.log(0.75)) / 2)
    assert means[1] == pytest.approx(math.log(0.5))


def test_least_confident_picks_the_lowest_share_ties_to_the_earlier() -> None:
    confidences = [-0.1, -2.0, -0.5, -2.0, -0.05, -3.0, -0.2, -0.3, -0.4, -0.6]
    assert least_confident(confidences, 0.1) == [5]  # 1 of 10
    assert least_confident(confidences, 0.2) == [1, 5]  # -3.0, then the first of the two -2.0
    assert least_confident(confidences, 0.3) == [1, 3, 5]
    assert least_confident(confidences, 0.0) == []
    with pytest.raises(UncertainLabelError, match="uncertain_share"):
        least_confident(confidences, 1.0)


def test_relabel_keeps_the_original_output_and_fills_fields() -> None:
    records = [
        {"id": "a", "text": "hi", "output": "weather_search(杭州)", "intent": "weather_search", "params": ["杭州"]},
        {"id": "b", "text": "yo", "output": "volume_down()", "intent": "volume_down", "params": []},
    ]
    out = relabel(records, [0])
    assert out[0]["output"] == "uncertain()" and out[0]["intent"] == "uncertain" and out[0]["params"] == []
    assert out[0][RELABELLED_FROM] == "weather_search(杭州)"
    assert out[1] == records[1] and records[0]["intent"] == "weather_search"  # inputs untouched


def test_uncertain_report_rate_and_precision() -> None:
    # 5 in-scope records + 1 gold-uncertain record; the model abstains on 1, 2, 5 (5 is gold uncertain: left out).
    predictions = [
        {"id": i, "intent": intent, "gold_intent": gold}
        for i, (intent, gold) in enumerate(
            [("a", "a"), ("uncertain", "b"), ("uncertain", "c"), ("d", "d"), ("x", "e"), ("uncertain", "uncertain")]
        )
    ]
    # the reference model (no relabelling) got record 1 wrong and record 2 right
    reference = [{"id": i, "intent_ok": ok} for i, ok in enumerate([True, False, True, True, False, False])]
    report = uncertain_report(predictions, reference)
    assert report == {"n": 5, "uncertain": 2, "uncertain_rate": 0.4, "uncertain_precision": 0.5}
    with pytest.raises(UncertainLabelError, match="same test split"):
        uncertain_report(predictions, reference[:1])


def test_validation_accepts_uncertain_only_when_the_prompt_offers_it(tmp_path: Path) -> None:
    catalog = parse_catalog({"intents": [{"name": "volume_down", "description": "lower the volume"}]})
    frame = pd.DataFrame(
        [{"id": f"r{i}", "text": f"quieter {i}", "output": "volume_down()"} for i in range(3)]
        + [{"id": "u", "text": "blah", "output": "uncertain()"}]
    )
    cfg = DataConfig(min_examples_per_intent=1)
    off = validate_records(frame, catalog, cfg, tmp_path / "off")
    assert "unknown_intent" in off.failed_checks
    on = validate_records(frame, catalog, cfg, tmp_path / "on", uncertain_label=True)
    assert on.passed, on.message
    with pytest.raises(CatalogError, match="reserved"):
        parse_catalog({"intents": [{"name": "uncertain", "description": "a user intent"}]})


@pytest.fixture(scope="module")
def uncertain_model(tmp_path_factory: pytest.TempPathFactory, small_dataset_dir: Path) -> tuple[Path, RunConfig]:
    """A random-init tiny model whose prompt offers `uncertain()` (confidences need no training to be checked)."""
    from intentops.config import load_config
    from intentops.tiny_model import create_tiny_model

    cfg = load_config(overrides={"prompt__uncertain_label": True, "sft__uncertain_share": 0.25})
    catalog = load_catalog(small_dataset_dir / CATALOG_FILE)
    out = tmp_path_factory.mktemp("uncertain") / "tiny"
    return create_tiny_model(small_dataset_dir, catalog, cfg.model, out, cfg.prompt), cfg


def _one_by_one(model_dir: Path, records: list[dict], cfg: RunConfig) -> list[float]:
    """The same confidence computed row by row without padding, straight from the model's log-softmax."""
    from intentops.evaluation.predictors import chat_prompts
    from intentops.models import load_model_and_tokenizer
    from intentops.prompting import PromptBuilder

    model, tokenizer = load_model_and_tokenizer(model_dir, cfg.model, for_training=False)
    builder = PromptBuilder.from_model_dir(model_dir)
    values = []
    for record in records:
        prompt = tokenizer(chat_prompts(tokenizer, builder, [record["text"]])[0], add_special_tokens=False)
        target = tokenizer(builder.target(record["output"]), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt["input_ids"] + target])
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        start = len(prompt["input_ids"])
        values.append(sum(float(logp[start + k - 1, tok]) for k, tok in enumerate(target)) / len(target))
    return values


def test_relabel_uncertain_turns_the_least_confident_quarter(
    uncertain_model: tuple[Path, RunConfig], small_dataset_dir: Path, tmp_path: Path
) -> None:
    model_dir, cfg = uncertain_model
    records = list(read_jsonl(small_dataset_dir / TRAIN_FILE))[:12]
    batched = gold_confidences(model_dir, records, cfg, batch_size=5)  # padded batches of uneven lengths
    assert batched == pytest.approx(_one_by_one(model_dir, records, cfg), abs=1e-4)

    train = tmp_path / TRAIN_FILE
    train.write_text("".join(pd.DataFrame(records).to_json(orient="records", lines=True, force_ascii=False)))
    path, report = relabel_uncertain(model_dir, train, cfg, tmp_path / "out")
    rows = list(read_jsonl(path))
    relabelled = [i for i, row in enumerate(rows) if row["output"] == "uncertain()"]
    assert relabelled == least_confident(batched, 0.25) and len(relabelled) == 3
    assert [rows[i][RELABELLED_FROM] for i in relabelled] == [records[i]["output"] for i in relabelled]
    assert report.threshold == pytest.approx(max(batched[i] for i in relabelled), abs=1e-4)
    assert read_json(tmp_path / "out" / "uncertain.json")["relabelled"] == 3

    # records already answering uncertain() are not candidates: the share is of the others
    records[0] = {**records[0], "output": "uncertain()", "intent": "uncertain", "params": [], "calls": []}
    train.write_text("".join(pd.DataFrame(records).to_json(orient="records", lines=True, force_ascii=False)))
    path, report = relabel_uncertain(model_dir, train, cfg, tmp_path / "out2")
    others = [c for i, c in enumerate(gold_confidences(model_dir, records, cfg)) if i > 0]
    expected = [i + 1 for i in least_confident(others, 0.25)]  # round(0.25 * 11) = 3 of the 11 others
    rows = list(read_jsonl(path))
    assert [i for i, row in enumerate(rows) if RELABELLED_FROM in row] == expected
    assert (report.candidates, report.relabelled) == (11, 3)


def test_relabel_uncertain_needs_the_label_in_the_prompt(
    tiny_model_dir: Path, small_dataset_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(UncertainLabelError, match=r"prompt\.uncertain_label"):
        relabel_uncertain(tiny_model_dir, small_dataset_dir / TRAIN_FILE, RunConfig(), tmp_path / "out")
