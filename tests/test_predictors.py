"""Predictors: label scoring equals brute-force scoring and scores what the model writes, batched generation equals
one-by-one, constrained generation only writes catalog calls, the factory falls back."""

from __future__ import annotations

import logging
import random
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from intentops.artifacts import CATALOG_FILE, RECORDS_FILE, TRAIN_FILE
from intentops.catalog import load_catalog
from intentops.config import EXAMPLE_DIR, ModelConfig, PromptConfig, RunConfig
from intentops.evaluation import UNCONSTRAINED_FIGURES, _unconstrained_figures, decoding, load_split
from intentops.evaluation.constrained import CallGrammar, TokenGrammar
from intentops.evaluation.decoding import (
    PrefixCache,
    assemble,
    assemble_tensors,
    common_prefix_length,
    greedy_continue,
    greedy_tails,
    plan_batches,
    shared_head,
    stop_token_ids,
    tokenize_prompts,
)
from intentops.evaluation.generation import GenerationPredictor
from intentops.evaluation.label_paths import LabelTrie, label_name_ids
from intentops.evaluation.label_scoring import LabelScoringPredictor
from intentops.evaluation.metrics import compute_metrics
from intentops.evaluation.predictors import chat_prompts, make_predictor, prediction_from_completion
from intentops.evaluation.vllm_predictor import VllmPredictor
from intentops.io import read_jsonl, write_jsonl
from intentops.models import load_model_and_tokenizer
from intentops.prompting import PromptBuilder
from intentops.serving.client import structured_outputs, valid_calls
from intentops.tiny_model import create_tiny_model

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


def _brute_force_scores(
    model, tokenizer, builder, predictor: LabelScoringPredictor, texts: list[str], normalization: str
) -> torch.Tensor:
    """Every (prompt, label) pair as its own unpadded forward pass: the definition label scoring must match.

    A label's score: its path's fixed tokens, then the mass of its opening tokens. `vocabulary` normalises over the
    whole vocabulary; `catalog` over what any label takes after the same prefix.
    """
    names = [list(path.tokens) for path in predictor.paths]
    openers = [path.openers for path in predictor.paths]

    def allowed_after(prefix: list[int]) -> set[int]:
        tokens = set()
        for ids, opener in zip(names, openers, strict=True):
            if ids[: len(prefix)] == prefix:
                tokens |= {ids[len(prefix)]} if len(ids) > len(prefix) else set(opener)
        return tokens

    rows = []
    with torch.inference_mode():
        for prompt in chat_prompts(tokenizer, builder, texts):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            row = []
            for ids, opener in zip(names, openers, strict=True):
                logits = model(torch.tensor([prompt_ids + ids])).logits[0].float()
                start, total = len(prompt_ids) - 1, 0.0
                for k, targets in enumerate([[t] for t in ids] + ([list(opener)] if opener else [])):
                    step = logits[start + k]
                    if normalization == "catalog":
                        allowed = torch.tensor(sorted(allowed_after(ids[:k])))
                        step = torch.full_like(step, float("-inf")).index_copy(0, allowed, step[allowed])
                    logp = torch.log_softmax(step, dim=-1)
                    total += torch.logsumexp(logp[torch.tensor(targets)], dim=0).item()
                row.append(total)
            rows.append(row)
    return torch.tensor(rows)


@pytest.mark.parametrize(
    ("numeric_labels", "prefix_cache", "normalization"),
    [(False, True, "vocabulary"), (True, False, "vocabulary"), (False, True, "catalog"), (True, True, "catalog")],
)
def test_label_scoring_matches_brute_force(
    loaded, texts: list[str], numeric_labels: bool, prefix_cache: bool, normalization: str
) -> None:
    model, tokenizer, trained_builder = loaded
    builder = PromptBuilder(trained_builder.catalog, PromptConfig(numeric_labels=numeric_labels))
    # batch_size 3 over 4 texts: two batches, prompts of different lengths padded inside the first
    predictor = LabelScoringPredictor(
        model,
        tokenizer,
        builder,
        batch_size=3,
        max_new_tokens=4,
        prefix_cache=prefix_cache,
        normalization=normalization,
        progress=False,
    )
    assert any(len(path.tokens) > 1 for path in predictor.paths)  # the block-mask pass has work to do
    assert all(len(path.openers) > 1 for path in predictor.paths)  # `(` merges: a set of tokens, not one
    texts = texts if not numeric_labels else texts[:2]  # the brute force is slow: one variant sees all texts
    fast = torch.tensor(predictor.score(texts))
    slow = _brute_force_scores(model, tokenizer, builder, predictor, texts, normalization)
    assert fast.shape == (len(texts), len(builder.labels))
    torch.testing.assert_close(fast, slow, atol=2e-4, rtol=1e-4)
    assert fast.argmax(dim=1).tolist() == slow.argmax(dim=1).tolist()
    if normalization == "catalog":  # fewer nodes run and fewer output rows projected than the full trie
        assert len(predictor.trie.nodes) < len(predictor.full_trie.nodes)


@pytest.fixture(scope="module")
def copy_loaded(tmp_path_factory: pytest.TempPathFactory, small_dataset_dir: Path, training_config: RunConfig):
    """A random-init tiny model with the default profile's copy tokens (`name(` is one token)."""
    model_cfg = training_config.model.model_copy(update={"tiny_copy_tokens": True})
    catalog = load_catalog(small_dataset_dir / CATALOG_FILE)
    model_dir = create_tiny_model(small_dataset_dir, catalog, model_cfg, tmp_path_factory.mktemp("copy") / "m")
    model, tokenizer = load_model_and_tokenizer(model_dir, model_cfg, for_training=False)
    return model, tokenizer, PromptBuilder.from_model_dir(model_dir)


@pytest.mark.parametrize("normalization", ["vocabulary", "catalog"])
def test_copy_token_label_scoring_matches_brute_force_and_continues_after_the_merged_token(
    copy_loaded, texts: list[str], normalization: str
) -> None:
    model, tokenizer, builder = copy_loaded
    predictor = LabelScoringPredictor(
        model, tokenizer, builder, batch_size=3, max_new_tokens=4, normalization=normalization, progress=False
    )
    assert all(path.tokens[0] == tokenizer.convert_tokens_to_ids(f"{path.label}(") for path in predictor.paths)
    fast = torch.tensor(predictor.score(texts))
    torch.testing.assert_close(
        fast, _brute_force_scores(model, tokenizer, builder, predictor, texts, normalization), atol=2e-4, rtol=1e-4
    )
    # a label with arguments, forced on every row: they continue greedily right after `name(`, no opening set
    prompts = chat_prompts(tokenizer, builder, texts)
    for label, path in enumerate(predictor.paths):
        if not predictor.takes_arguments[label]:
            continue
        scored = predictor._score(tokenize_prompts(tokenizer, builder, texts), None)
        completions = predictor._complete(scored, [label] * len(texts), texts)
        for prompt, completion in zip(prompts, completions, strict=True):
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] + list(path.tokens)
            assert completion == f"{path.label}(" + _plain_generate(model, tokenizer, ids, 4)
        break


def test_length_normalized_scores_are_mean_log_likelihoods(loaded, texts: list[str]) -> None:
    model, tokenizer, builder = loaded
    total = LabelScoringPredictor(model, tokenizer, builder, batch_size=8, progress=False)
    mean = LabelScoringPredictor(model, tokenizer, builder, batch_size=8, length_normalized=True, progress=False)
    lengths = torch.tensor([len(p.tokens) + 1 for p in total.paths], dtype=torch.float32)  # name + opening token
    torch.testing.assert_close(
        torch.tensor(mean.score(texts[:2])), torch.tensor(total.score(texts[:2])) / lengths, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize(
    ("copy_tokens", "numeric_labels"), [(False, False), (False, True), (True, False), (True, True)]
)
def test_every_gold_target_begins_with_its_labels_scored_tokens(
    tmp_path: Path, copy_tokens: bool, numeric_labels: bool
) -> None:
    """On the bundled example, with the tokenizers the tiny profile trains (plain byte-level BPE, and the copy tokens
    that make `name(` one token): what label scoring scores for a label is what the model is trained to write first
    (the path's fixed tokens, then a token of the label's opening set where it has one), after each record's prompt."""
    catalog = load_catalog(EXAMPLE_DIR / CATALOG_FILE)
    records = list(read_jsonl(EXAMPLE_DIR / RECORDS_FILE))
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    write_jsonl(dataset / TRAIN_FILE, records)
    prompt_cfg = PromptConfig(numeric_labels=numeric_labels)
    model_cfg = ModelConfig(
        tiny_hidden_size=16, tiny_num_heads=2, tiny_num_kv_heads=1, tiny_num_layers=1, tiny_copy_tokens=copy_tokens
    )
    model_dir = create_tiny_model(dataset, catalog, model_cfg, tmp_path / "model", prompt_cfg)
    model, tokenizer = load_model_and_tokenizer(model_dir, model_cfg, for_training=False)
    builder = PromptBuilder(catalog, prompt_cfg)
    predictor = LabelScoringPredictor(model, tokenizer, builder, progress=False)
    paths = {path.label: path for path in predictor.paths}
    token = tokenizer.convert_tokens_to_ids
    if copy_tokens and not numeric_labels:  # hand-checked: `name(` is one token, `)` another, nothing left to sum
        assert (paths["weather_search"].tokens, paths["weather_search"].openers) == ((token("weather_search("),), ())
        assert paths["volume_down"].tokens == (token("volume_down("), token(")")) and not paths["volume_down"].openers
    if not copy_tokens and not numeric_labels:  # hand-checked: the bare name's tokens, then the `(`-token mass
        assert paths["weather_search"].text == "weather_search" and paths["weather_search"].rest == "("
        assert token("(") in paths["weather_search"].openers and token("()") in paths["volume_down"].openers
        assert tokenizer.decode(paths["weather_search"].tokens) == "weather_search"
    old_style = label_name_ids(tokenizer, builder, [f"{name}(" for name in predictor.names])  # `name(` scoring
    index = {label: i for i, label in enumerate(predictor.labels)}
    prompts = chat_prompts(tokenizer, builder, [record["text"] for record in records])
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    golds = tokenizer(
        [p + builder.target(r["output"]) for p, r in zip(prompts, records, strict=True)], add_special_tokens=False
    )["input_ids"]
    old_misses = 0
    for record, own_prompt, gold in zip(records, prompt_ids, golds, strict=True):
        assert gold[: len(own_prompt)] == own_prompt
        answer = gold[len(own_prompt) :]
        path = paths[record["calls"][0]["name"]]
        assert tuple(answer[: len(path.tokens)]) == path.tokens, record["output"]
        if path.openers:
            assert answer[len(path.tokens)] in path.openers, record["output"]
        old_misses += answer[: len(old_style[index[path.label]])] != old_style[index[path.label]]
    if not copy_tokens and not numeric_labels:
        assert old_misses > len(records) / 2  # the defect this replaced: most golds did not begin with `name(` tokens


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


@pytest.mark.parametrize("batch_size", [4, 1])
def test_label_scoring_predictions_follow_the_best_label(
    sft_model_dir: Path, texts: list[str], batch_size: int
) -> None:
    """batch_size 1: each text is its own scored batch, of its own width, and the rows that need arguments are
    completed together in one pass (`ScoredBatch.concat` pads the narrower ones)."""
    model, tokenizer = load_model_and_tokenizer(sft_model_dir, ModelConfig(), for_training=False)
    builder = PromptBuilder.from_model_dir(sft_model_dir)
    predictor = LabelScoringPredictor(
        model, tokenizer, builder, batch_size=batch_size, max_new_tokens=6, progress=False
    )
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
            # arguments: the likeliest opening token after the prompt and the chosen name, then plain greedy
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] + list(predictor.paths[label].tokens)
            with torch.inference_mode():
                logits = model(torch.tensor([ids])).logits[0, -1]
            openers = torch.tensor(predictor.paths[label].openers)
            first = int(openers[logits[openers].argmax()])
            rest = _plain_generate(model, tokenizer, [*ids, first], 5)
            assert prediction.raw == best + tokenizer.decode([first]) + rest
            assert prediction.raw.startswith(best + "(")
            with_arguments += 1
        else:
            # no arguments to fill: the answer is complete without generating
            assert (prediction.raw, prediction.call, prediction.intent) == (f"{best}()", f"{best}()", best)
    assert with_arguments > (1 if batch_size == 1 else 0)  # batch 1: rows of several batches completed together


@pytest.mark.parametrize("compact_share", [4, 1])
def test_greedy_tails_equal_generate_while_stopped_rows_leave_the_batch(
    sft_model_dir: Path, texts: list[str], compact_share: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compact_share 4: a row that stops leaves the batch at once (1 of 4 rows); 1: stopped rows stay until all stop,
    their further tokens ignored."""
    monkeypatch.setattr(decoding, "COMPACT_SHARE", compact_share)
    model, tokenizer = load_model_and_tokenizer(sft_model_dir, ModelConfig(), for_training=False)
    builder = PromptBuilder.from_model_dir(sft_model_dir)
    sequences = tokenize_prompts(tokenizer, builder, texts)
    prefix = PrefixCache.shared_by(model, sequences)
    assert prefix is not None
    ids, mask = assemble(sequences, prefix.ids, tokenizer.pad_token_id)
    ids_t, mask_t = torch.tensor(ids), torch.tensor(mask)
    eos = stop_token_ids(model, tokenizer)
    reference = greedy_continue(model, ids_t, mask_t, 12, tokenizer.pad_token_id, eos, prefix.expand(len(texts)))
    expanded = [(k.expand(len(texts), -1, -1, -1), v.expand(len(texts), -1, -1, -1)) for k, v in prefix.layers]
    tails = greedy_tails(model, ids_t, mask_t, 12, eos, expanded)
    expected = []
    for row in reference.tolist():
        stops = [i for i, t in enumerate(row) if t in eos]
        expected.append(row[: stops[0] + 1] if stops else row)
    assert tails == expected
    assert len({len(t) for t in tails}) > 1  # rows stopped at different steps: the batch did shrink
    # the first token restricted per row (an empty set leaves a row free)
    first = [[], [tokenizer.convert_tokens_to_ids("(")], [], []][: len(texts)]
    restricted = greedy_tails(model, ids_t, mask_t, 3, eos, expanded, first)
    assert greedy_tails(model, ids_t, mask_t, 12, eos, []) == expected  # nothing cached: every token is fed
    assert restricted[1][0] == first[1][0] and restricted[0] == expected[0][:3]


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


@pytest.mark.parametrize("few_shot", ["none", "similar"])
def test_prompts_tokenized_with_a_shared_head_equal_plain_tokenization(
    loaded, small_dataset_dir: Path, few_shot: str
) -> None:
    _, tokenizer, trained = loaded
    examples = load_split(small_dataset_dir, "train")
    builder = PromptBuilder(trained.catalog, PromptConfig(few_shot=few_shot, few_shot_k=2), examples)
    texts = [r["text"] for r in load_split(small_dataset_dir, "test")]
    plain = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in chat_prompts(tokenizer, builder, texts)]
    assert tokenize_prompts(tokenizer, builder, texts) == plain
    assert shared_head(tokenizer, chat_prompts(tokenizer, builder, texts)).endswith("<|im_start|>")
    assert tokenize_prompts(tokenizer, builder, texts[:1]) == plain[:1]


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
    # labels [1,2,3] and [1,2,4] share nodes (1,) and (1,2); [1,2] ends where the other two continue; [5] is one token
    trie = LabelTrie.build([[1, 2, 3], [1, 2, 4], [1, 2], [5]], [[7], [8, 9], [9, 7], [7]])
    assert trie.nodes == ((1,), (1, 2), (1, 2, 3), (1, 2, 4), (5,))
    assert trie.tokens() == [1, 2, 3, 4, 5] and trie.depths() == [0, 1, 2, 2, 0]
    assert trie.edges == (
        (0, (1,)),
        (1, (2,)),
        (2, (3,)),
        (3, (7,)),
        (2, (4,)),
        (4, (8, 9)),
        (2, (7, 9)),
        (0, (5,)),
        (5, (7,)),
    )
    assert trie.paths == ((0, 1, 2, 3), (0, 1, 4, 5), (0, 1, 6), (7, 8))
    assert trie.lengths() == [4, 4, 3, 2]
    assert trie.allowed(0) == [1, 5] and trie.allowed(2) == [3, 4, 7, 9]
    assert trie.ancestry()[2] == [True, True, True, False, False]
    # catalog normalisation: only positions with a choice score; only nodes leading to them run
    catalog = trie.for_catalog()
    assert catalog.nodes == ((1,), (1, 2))
    assert catalog.edges == ((0, (1,)), (2, (3,)), (2, (4,)), (2, (7, 9)), (0, (5,)))
    assert catalog.paths == ((0, 1), (0, 2), (0, 3), (4,))


def test_shared_prefix_layout() -> None:
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 9]]) == 2
    # every row keeps at least one token of its own
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert common_prefix_length([]) == 0
    ids, mask = assemble([[1, 2, 3, 4], [1, 2, 5]], [1, 2], pad_id=0)
    assert ids == [[1, 2, 3, 4], [1, 2, 0, 5]]
    assert mask == [[1, 1, 1, 1], [1, 1, 0, 1]]
    ids_t, mask_t = assemble_tensors([[1, 2, 3, 4], [1, 2, 5]], [1, 2], 0, "cpu")
    assert ids_t.tolist() == ids and mask_t.tolist() == mask
    with pytest.raises(ValueError, match="sequence 1 does not extend"):
        assemble_tensors([[1, 2, 3], [7, 2, 3]], [1, 2], 0, "cpu")
    assert common_prefix_length([[5, 1, 2, 9], [5, 1, 2, 7, 7], [5, 1, 3, 0], [5, 1, 2, 0]]) == 2  # not in order
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
    monkeypatch.setattr("intentops.evaluation.vllm_predictor.vllm_available", lambda: False)
    cfg = RunConfig()
    with caplog.at_level(logging.INFO, logger="intentops.evaluation.predictors"):
        predictor = make_predictor("auto", tiny_model_dir, cfg, progress=False)
    assert isinstance(predictor, GenerationPredictor)
    assert "vllm is not importable" in caplog.text
    assert predictor.batch_size == cfg.evaluation.batch_size
    assert isinstance(make_predictor("label_scoring", tiny_model_dir, cfg), LabelScoringPredictor)
    knobs = cfg.model_copy(deep=True)
    knobs.evaluation.constrained = True
    knobs.evaluation.label_score = "mean"
    knobs.evaluation.label_normalization = "catalog"
    scoring = make_predictor("label_scoring", tiny_model_dir, knobs, progress=False)
    assert scoring.constrained and scoring.length_normalized and scoring.normalization == "catalog"
    assert make_predictor("generate", tiny_model_dir, knobs, progress=False).constrained
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

    class StructuredOutputsParams:
        def __init__(self, **kwargs) -> None:
            self.kwargs = kwargs

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    monkeypatch.setitem(
        sys.modules, "vllm.sampling_params", types.SimpleNamespace(StructuredOutputsParams=StructuredOutputsParams)
    )
    monkeypatch.setattr("intentops.evaluation.vllm_predictor.vllm_available", lambda: True)
    cfg = RunConfig()
    predictor = make_predictor("vllm", tiny_model_dir, cfg, progress=False)
    assert isinstance(predictor, VllmPredictor) and not predictor.constrained
    predictions = predictor.predict(["杭州天气", "hello"])
    assert calls["init"]["model"] == str(tiny_model_dir)
    assert calls["sampling"] == {"temperature": 0.0, "max_tokens": cfg.evaluation.max_new_tokens}
    assert calls["prompts"][0].endswith("<|im_start|>assistant\n") and "杭州天气" in calls["prompts"][0]
    assert [p.call for p in predictions] == ["weather_search(杭州)", None]
    # constrained: the request carries exactly the constraint the serving client sends
    constrained = make_predictor("vllm", tiny_model_dir, cfg, constrained=True, progress=False)
    constrained.predict(["杭州天气", "hello"])
    expected = structured_outputs(PromptBuilder.from_model_dir(tiny_model_dir))
    assert calls["sampling"]["structured_outputs"].kwargs == expected and constrained.constrained
    constrained.unconstrained().predict(["杭州天气", "hello"])
    assert "structured_outputs" not in calls["sampling"]


# ---- constrained decoding ---------------------------------------------------------------------------------------


def _random_answer(rng: random.Random, labels: list[str]) -> str:
    """Strings near the call language: mostly well-formed pieces, sometimes broken ones."""
    pieces = [*labels, "(", ")", ",", ";", '"', "\\", " ", "\t", "x", "杭州", "（", "'", "<", "\n"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))


@pytest.mark.parametrize("prompt_cfg", [PromptConfig(), PromptConfig(numeric_labels=True)])
def test_call_grammar_accepts_exactly_what_serving_enforces(prompt_cfg: PromptConfig) -> None:
    """The transformers-side automaton and the regex the vLLM server gets agree on targets, near-misses and noise."""
    builder = PromptBuilder(load_catalog(EXAMPLE_DIR / CATALOG_FILE), prompt_cfg)
    grammar = CallGrammar.for_builder(builder)
    pattern = re.compile(structured_outputs(builder)["regex"])
    records = list(read_jsonl(EXAMPLE_DIR / RECORDS_FILE))
    candidates = [builder.target(r["output"]) for r in records[:200]]
    rng = random.Random(0)
    labels = list(grammar.labels)
    candidates += [_random_answer(rng, labels) for _ in range(3000)]
    candidates += [f"{rng.choice(labels)}({_random_answer(rng, ['a', 'b'])})" for _ in range(2000)]
    accepted = [grammar.matches(text) for text in candidates]
    assert accepted == [bool(pattern.fullmatch(text)) for text in candidates]
    assert all(accepted[:200]) and 50 < sum(accepted[200:]) < len(accepted) - 250  # both outcomes exercised


def test_token_grammar_follows_the_bytes_of_split_characters(loaded) -> None:
    model, tokenizer, builder = loaded
    grammar = TokenGrammar(CallGrammar.for_builder(builder), tokenizer, stop_token_ids(model, tokenizer))
    ids = tokenizer("weather_search(杭州)", add_special_tokens=False)["input_ids"]
    state = grammar.start
    for token in ids:
        state = grammar.advance(state, token)
        assert state is not None
    assert grammar.accepting(state) and grammar.min_close(state) == 0
    # a full-width bracket is not allowed inside a bare argument, even when it arrives byte by byte
    byte_ids = {data: i for i, data in grammar.bytes_of.items() if len(data) == 1}
    inside = grammar.advance(grammar.start, tokenizer.convert_tokens_to_ids("weather"))
    for data in (b"_search", b"(", b"x"):
        for byte in data:
            inside = grammar.advance(inside, byte_ids[bytes([byte])])
    pending = grammar.advance(grammar.advance(inside, byte_ids[b"\xef"]), byte_ids[b"\xbc"])
    assert pending is not None and pending[1] == b"\xef\xbc" and grammar.min_close(pending) == 2
    assert grammar.advance(pending, byte_ids[b"\x88"]) is None  # U+FF08 （
    assert grammar.advance(pending, byte_ids[b"\x81"]) is not None  # U+FF01 ！
    eos = stop_token_ids(model, tokenizer)[0]
    assert eos in grammar.options(state)[0].tolist() and eos not in grammar.options(inside)[0].tolist()


@pytest.mark.parametrize("max_new_tokens", [12, 40])
def test_constrained_generation_only_writes_catalog_calls(loaded, texts: list[str], max_new_tokens: int) -> None:
    """A random-init model writes noise when free; constrained, every answer is a valid call within the budget."""
    model, tokenizer, builder = loaded
    free = GenerationPredictor(model, tokenizer, builder, batch_size=3, max_new_tokens=max_new_tokens, progress=False)
    constrained = GenerationPredictor(
        model, tokenizer, builder, batch_size=3, max_new_tokens=max_new_tokens, constrained=True, progress=False
    )
    assert constrained.constrained and not constrained.unconstrained().constrained and not free.constrained
    pattern = re.compile(structured_outputs(builder)["regex"])
    many = texts * 3
    answers = constrained.predict(many)
    assert all(pattern.fullmatch(p.raw) for p in answers), [p.raw for p in answers]
    assert all(valid_calls(builder, builder.extract_calls(p.raw)) for p in answers)
    assert sum(p.call is None for p in free.predict(texts)) > 0  # the model really is unconstrained noise
    with pytest.raises(ValueError, match="cannot hold a complete call"):
        GenerationPredictor(model, tokenizer, builder, max_new_tokens=2, constrained=True, progress=False).predict(
            texts[:1]
        )


def test_constrained_label_scoring_completes_valid_arguments(loaded, texts: list[str]) -> None:
    model, tokenizer, builder = loaded
    predictor = LabelScoringPredictor(
        model, tokenizer, builder, batch_size=4, max_new_tokens=10, constrained=True, progress=False
    )
    pattern = re.compile(structured_outputs(builder)["regex"])
    answers = predictor.predict(texts * 2)
    assert all(pattern.fullmatch(p.raw) for p in answers), [p.raw for p in answers]


def test_unconstrained_figures_come_from_the_same_model_decoding_freely(loaded, small_dataset_dir: Path) -> None:
    model, tokenizer, builder = loaded
    records = load_split(small_dataset_dir, "test")[:4]
    predictor = GenerationPredictor(model, tokenizer, builder, max_new_tokens=12, constrained=True, progress=False)
    figures = _unconstrained_figures(predictor, records, builder.labels)
    free = compute_metrics(records, [p.call for p in predictor.unconstrained().predict([r["text"] for r in records])])
    assert figures == {key: free[key] for key in UNCONSTRAINED_FIGURES}
    assert figures["format_error_rate"] > 0  # a random-init model decoding freely breaks the format


def test_evaluate_model_reports_constrained_and_unconstrained_figures(
    tiny_model_dir: Path, small_dataset_dir: Path, tmp_path: Path, mlflow_server: str
) -> None:
    """The evaluation artifact says which decoding produced its figures and carries the free figures beside."""
    from intentops.config import load_config
    from intentops.evaluation import evaluate_model

    cfg = load_config(
        overrides={
            "registry__tracking_uri": mlflow_server,
            "registry__experiment": "predictors-constrained",
            "evaluation__decoding": "generate",
            "evaluation__constrained": True,
            "evaluation__max_samples": 4,
            "evaluation__max_new_tokens": 16,
            "evaluation__baselines": False,
        }
    )
    metrics = evaluate_model(tiny_model_dir, small_dataset_dir, cfg, tmp_path / "eval")
    assert metrics["decoding"] == "generate" and metrics["constrained"] is True
    assert metrics["format_error_rate"] == 0.0  # every constrained answer is a catalog call
    assert set(metrics["unconstrained"]) == set(UNCONSTRAINED_FIGURES)
    assert metrics["unconstrained"]["format_error_rate"] > 0.0  # the random-init model, free, breaks the format


THOUGHT_GRAMMAR_CASES = {
    "think_answer": (
        [
            "<think></think><answer>volume_down()</answer>",  # empty reasoning: the SFT target
            "<think>turn it down; 杭州 is noise</think><answer>volume_down();weather_search(杭州)</answer>",
        ],
        [
            "<think>a<b</think><answer>volume_down()</answer>",  # '<' inside the reasoning
            "<think>ok</think><answer>volume_down()",  # unclosed answer
            "<think>ok</think><answer>volume_down()</answer> ",  # trailing text
            "Thought:\nAction: volume_down()\nFinish!",  # the other template
            "volume_down()",  # no template
        ],
    ),
    "react": (
        [
            "Thought:\nAction: volume_down()\nFinish!",  # empty reasoning: the SFT target
            "Thought: <loud> 杭州\nAction: volume_down();weather_search(杭州)\nFinish!",
        ],
        [
            "Thought: two\nlines\nAction: volume_down()\nFinish!",  # a newline inside the reasoning
            "Thought: ok\nAction: volume_down()",  # no Finish!
            "Thought: ok\nAction: volume_down()\nFinish! ",  # trailing text
            "Thought: ok\nAction:volume_down()\nFinish!",  # the space after Action: is part of the template
            "Thought: ok\nAction: play_music(a,b,c)\nFinish!",  # too many arguments
            "<think></think><answer>volume_down()</answer>",  # the other template
        ],
    ),
}


@pytest.mark.parametrize("template", sorted(THOUGHT_GRAMMAR_CASES))
def test_call_grammar_in_thought_mode_matches_the_served_template(template: str) -> None:
    cfg = PromptConfig(output_mode="thought", thought_template=template)
    builder = PromptBuilder(load_catalog(EXAMPLE_DIR / CATALOG_FILE), cfg)
    grammar = CallGrammar.for_builder(builder)
    pattern = re.compile(structured_outputs(builder)["regex"])
    targets = [builder.target(r["output"]) for r in list(read_jsonl(EXAMPLE_DIR / RECORDS_FILE))[:100]]
    good, broken = THOUGHT_GRAMMAR_CASES[template]
    for text in targets + good + broken:
        assert grammar.matches(text) == bool(pattern.fullmatch(text)), text
    assert all(grammar.matches(t) for t in targets + good) and not any(grammar.matches(t) for t in broken)


def test_decoding_passes_the_key_value_cache_under_its_current_name(loaded, texts: list[str]) -> None:
    """transformers 5 renamed `past_key_values` to `cache`: the old name warns once per process (issue 14's log)."""
    import warnings

    from transformers.utils import logging as hf_logging

    model, tokenizer, builder = loaded
    hf_logging.warning_once.cache_clear()  # an earlier test may have had its one warning already
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            GenerationPredictor(
                model, tokenizer, builder, batch_size=3, max_new_tokens=4, prefix_cache=True, progress=False
            ).predict(texts)
            LabelScoringPredictor(model, tokenizer, builder, batch_size=8, progress=False).predict(texts[:2])
    finally:
        hf_logger.removeHandler(handler)
    old_name = [str(w.message) for w in caught if "past_key_values" in str(w.message)]
    old_name += [r.getMessage() for r in records if "past_key_values" in r.getMessage()]
    assert old_name == []
