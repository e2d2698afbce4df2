"""Predictors: label scoring equals brute-force scoring, batched generation equals one-by-one, the factory falls back."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest
import torch

from intentops.config import ModelConfig, PromptConfig, RunConfig
from intentops.evaluation import load_split
from intentops.evaluation.predictors import (
    GenerationPredictor,
    LabelScoringPredictor,
    LabelTrie,
    VllmPredictor,
    assemble,
    chat_prompts,
    common_prefix_length,
    make_predictor,
    plan_batches,
    prediction_from_completion,
    stop_token_ids,
)
from intentops.models import load_model_and_tokenizer
from intentops.prompting import PromptBuilder

N_TEXTS = 4


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread, and extra threads spin badly on a shared CI runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, ModelConfig(), for_training=False)
    return model, tokenizer, PromptBuilder.from_model_dir(tiny_model_dir)


@pytest.fixture(scope="module")
def texts(small_dataset_dir: Path) -> list[str]:
    records = load_split(small_dataset_dir, "test")
    # mixed languages and lengths, so padding actually differs inside a batch
    return [r["text"] for r in records[:: max(1, len(records) // N_TEXTS)]][:N_TEXTS]


def _brute_force_scores(model, tokenizer, builder, predictor: LabelScoringPredictor, texts: list[str]) -> torch.Tensor:
    """Every (prompt, label) pair as its own unpadded forward pass: the definition label scoring must match."""
    rows = []
    with torch.inference_mode():
        for prompt in chat_prompts(tokenizer, builder, texts):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            row = []
            for label_ids in predictor.label_ids:
                logits = model(torch.tensor([prompt_ids + label_ids])).logits[0].float()
                logp = torch.log_softmax(logits, dim=-1)
                start = len(prompt_ids) - 1
                row.append(sum(logp[start + k, token].item() for k, token in enumerate(label_ids)))
            rows.append(row)
    return torch.tensor(rows)


@pytest.mark.parametrize(("numeric_labels", "prefix_cache"), [(False, True), (True, False)])
def test_label_scoring_matches_brute_force(loaded, texts: list[str], numeric_labels: bool, prefix_cache: bool) -> None:
    model, tokenizer, trained_builder = loaded
    builder = PromptBuilder(trained_builder.catalog, PromptConfig(numeric_labels=numeric_labels))
    # batch_size 3 over 4 texts: two batches, prompts of different lengths padded inside the first
    predictor = LabelScoringPredictor(
        model, tokenizer, builder, batch_size=3, max_new_tokens=4, prefix_cache=prefix_cache, progress=False
    )
    assert any(len(ids) > 2 for ids in predictor.label_ids)  # the block-mask pass has work to do
    texts = texts if not numeric_labels else texts[:2]  # the brute force is slow: one variant sees all texts
    fast = torch.tensor(predictor.score(texts))
    slow = _brute_force_scores(model, tokenizer, builder, predictor, texts)
    assert fast.shape == (len(texts), len(builder.labels))
    torch.testing.assert_close(fast, slow, atol=2e-4, rtol=1e-4)
    assert fast.argmax(dim=1).tolist() == slow.argmax(dim=1).tolist()


def test_length_normalized_scores_are_mean_log_likelihoods(loaded, texts: list[str]) -> None:
    model, tokenizer, builder = loaded
    total = LabelScoringPredictor(model, tokenizer, builder, batch_size=8, progress=False)
    mean = LabelScoringPredictor(model, tokenizer, builder, batch_size=8, length_normalized=True, progress=False)
    lengths = torch.tensor([len(ids) for ids in total.label_ids], dtype=torch.float32)
    torch.testing.assert_close(
        torch.tensor(mean.score(texts[:2])), torch.tensor(total.score(texts[:2])) / lengths, atol=1e-5, rtol=1e-5
    )


def _plain_generate(model, tokenizer, ids: list[int], max_new_tokens: int) -> str:
    """One unpadded prompt, no cache, no mask: the seed 002 way."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop_token_ids(model, tokenizer),
        )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_label_scoring_predictions_follow_the_best_label(sft_model_dir: Path, texts: list[str]) -> None:
    model, tokenizer = load_model_and_tokenizer(sft_model_dir, ModelConfig(), for_training=False)
    builder = PromptBuilder.from_model_dir(sft_model_dir)
    predictor = LabelScoringPredictor(model, tokenizer, builder, batch_size=4, max_new_tokens=6, progress=False)
    scores = torch.tensor(predictor.score(texts))
    predictions = predictor.predict(texts)
    prompts = chat_prompts(tokenizer, builder, texts)
    with_arguments = 0
    for text, prompt, prediction, row in zip(texts, prompts, predictions, scores, strict=True):
        label = int(row.argmax())
        best = predictor.labels[label]
        assert prediction.text == text
        assert prediction.confidence == pytest.approx(float(torch.softmax(row, dim=0).max()), rel=1e-5)
        assert prediction.latency_s is not None and prediction.latency_s > 0
        if builder.catalog.get(best).parameters:
            # arguments: what plain greedy generation continues with after the prompt and the chosen label
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] + predictor.label_ids[label]
            assert prediction.raw == f"{best}(" + _plain_generate(model, tokenizer, ids, 6)
            with_arguments += 1
        else:
            # no arguments to fill: the answer is complete without generating
            assert (prediction.raw, prediction.call, prediction.intent) == (f"{best}()", f"{best}()", best)
    assert with_arguments > 0


def test_batched_generation_equals_one_by_one(loaded, texts: list[str]) -> None:
    model, tokenizer, builder = loaded
    sequences = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in chat_prompts(tokenizer, builder, texts)]
    one_by_one = [_plain_generate(model, tokenizer, ids, 6) for ids in sequences]
    for prefix_cache in (True, False):
        batched = GenerationPredictor(
            model, tokenizer, builder, batch_size=3, max_new_tokens=6, prefix_cache=prefix_cache, progress=False
        ).predict(texts)
        assert [p.text for p in batched] == texts
        assert [p.raw for p in batched] == one_by_one


def test_plan_batches_is_a_length_sorted_partition() -> None:
    lengths = [5, 9, 1, 9, 3, 7, 2]
    batches = plan_batches(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    assert plan_batches(lengths, 3, sort_by_length=False) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches(lengths, 0)


def test_label_trie_shares_prefixes() -> None:
    trie = LabelTrie.build([[1, 2, 3], [1, 2, 4], [5]])
    assert trie.prefixes == ((1,), (1, 2))  # labels 0 and 1 share both nodes; label 2 has one token, no node
    assert trie.first == (1, 1, 5)
    assert trie.steps == ((0, 2, 0), (1, 3, 0), (0, 2, 1), (1, 4, 1))
    assert (trie.tokens(), trie.depths()) == ([1, 2], [0, 1])
    assert trie.ancestry() == [[True, False], [True, True]]


def test_shared_prefix_layout() -> None:
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 9]]) == 2
    # every row keeps at least one token of its own
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert common_prefix_length([]) == 0
    ids, mask = assemble([[1, 2, 3, 4], [1, 2, 5]], [1, 2], pad_id=0)
    assert ids == [[1, 2, 3, 4], [1, 2, 0, 5]]
    assert mask == [[1, 1, 1, 1], [1, 1, 0, 1]]
    with pytest.raises(ValueError, match="sequence 1 does not extend"):
        assemble([[1, 2, 3], [7, 2, 3]], [1, 2], pad_id=0)


def test_prediction_from_completion_reads_the_call(loaded) -> None:
    _, _, builder = loaded
    good = prediction_from_completion(builder, "t", " weather_search（杭州） ")
    assert (good.call, good.intent, good.params) == ("weather_search(杭州)", "weather_search", ["杭州"])
    bad = prediction_from_completion(builder, "t", "weather_search(杭州")
    assert (bad.call, bad.intent, bad.params, bad.raw) == (None, None, None, "weather_search(杭州")


def test_make_predictor_falls_back_without_vllm(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("intentops.evaluation.predictors.vllm_available", lambda: False)
    cfg = RunConfig()
    with caplog.at_level(logging.INFO, logger="intentops.evaluation.predictors"):
        predictor = make_predictor("auto", tiny_model_dir, cfg, progress=False)
    assert isinstance(predictor, GenerationPredictor)
    assert "vllm is not importable" in caplog.text
    assert predictor.batch_size == cfg.evaluation.batch_size
    assert isinstance(make_predictor("label_scoring", tiny_model_dir, cfg), LabelScoringPredictor)
    with pytest.raises(ValueError, match="beam"):
        make_predictor("beam", tiny_model_dir, cfg)


def test_vllm_predictor_uses_greedy_offline_generation(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM needs a GPU; a stand-in module checks our side: prompts, greedy sampling params, answer parsing."""
    calls: dict = {}

    class SamplingParams:
        def __init__(self, **kwargs) -> None:
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs) -> None:
            calls["init"] = kwargs

        def generate(self, prompts, sampling, use_tqdm=True):
            calls["prompts"], calls["sampling"] = prompts, sampling.kwargs
            answers = ["weather_search(杭州)", "not a call"]
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=a)]) for a in answers]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    monkeypatch.setattr("intentops.evaluation.predictors.vllm_available", lambda: True)
    cfg = RunConfig()
    predictor = make_predictor("vllm", tiny_model_dir, cfg, progress=False)
    assert isinstance(predictor, VllmPredictor)
    predictions = predictor.predict(["杭州天气", "hello"])
    assert calls["init"]["model"] == str(tiny_model_dir)
    assert calls["sampling"] == {"temperature": 0.0, "max_tokens": cfg.evaluation.max_new_tokens}
    assert calls["prompts"][0].endswith("<|im_start|>assistant\n") and "杭州天气" in calls["prompts"][0]
    assert [p.call for p in predictions] == ["weather_search(杭州)", None]
