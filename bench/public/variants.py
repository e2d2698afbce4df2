"""Dataset variants for the seed protocols: a cross-lingual split of the bundled example, and catalog changes.

- `prepare_bundled`: the bundled zh + en example (examples/assistant/) as two dataset folders sharing one training
  split in `train_lang`: `cross/` tests on the other language, `same/` on held-out records of the training language.
  CLINC150 and BANKING77 are English-only, so the cross-lingual protocol runs on this example alone.
- `merge_intents`: a dataset whose catalog merges a group of parameterless intents into one new intent that
  `replaces` them (records relabelled); read the other way round, the original dataset is the same group split out
  of the merged intent, so `with_replaces` marks the originals as replacing the merged one.
"""

from __future__ import annotations

import random
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prepare import SPLITS, PrepareError, _manifest

from intentops.artifacts import CATALOG_FILE, DATASET_MANIFEST, split_file
from intentops.catalog import Catalog, Intent, load_catalog
from intentops.grammar import Call, parse_calls, render_calls
from intentops.io import atomic_path, read_json, read_jsonl, write_json, write_jsonl


def replaced_groups(catalog: Catalog) -> dict[str, list[str]]:
    """old intent -> the catalog intents that replace it (two or more: the old one was split into them)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for intent in catalog.intents:
        for old in intent.replaces:
            groups[old].append(intent.name)
    return {old: names for old, names in groups.items() if len(names) >= 2}


def _write(folder: Path, rows: dict[str, list[dict[str, Any]]], catalog: Catalog, source: dict[str, Any]) -> None:
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        for split in SPLITS:
            write_jsonl(tmp / split_file(split), rows[split])
        catalog.to_yaml(tmp / CATALOG_FILE)
        write_json(tmp / DATASET_MANIFEST, _manifest(tmp, rows, catalog, [], source))


def prepare_bundled(
    records_path: Path,
    catalog_path: Path,
    out_dir: Path,
    *,
    train_lang: str = "zh",
    max_intents: int | None = None,
    max_train_per_intent: int | None = None,
    max_test_per_intent: int | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """Write `out_dir/cross` and `out_dir/same` (see the module docstring); single-intent records only, so every
    record has one gold intent. Intents kept by `max_intents` always include a `replaces` group, so the catalog
    change protocol has one. Returns what was written."""
    catalog = load_catalog(catalog_path)
    records = [r for r in read_jsonl(records_path) if len(parse_calls(r["output"])) == 1]
    langs = sorted({r["lang"] for r in records})
    if train_lang not in langs or len(langs) != 2:
        raise PrepareError(f"{records_path}: cross-lingual needs two languages including {train_lang!r}, has {langs}")
    test_lang = next(lang for lang in langs if lang != train_lang)
    names = list(catalog.names)
    if max_intents is not None and max_intents < len(names):
        keep = sorted({n for group in replaced_groups(catalog).values() for n in group})[:max_intents]
        rest = sorted(set(names) - set(keep))
        names = keep + random.Random(f"{seed}:bundled").sample(rest, max(0, max_intents - len(keep)))
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_key[record["intent"], record["lang"]].append(record)
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {"cross": defaultdict(list), "same": defaultdict(list)}
    for name in sorted(names):
        own = list(by_key[name, train_lang])
        random.Random(f"{seed}:{name}").shuffle(own)
        n_test = min(max_test_per_intent or len(own) // 5, len(own) // 5)
        held, train = own[:n_test], own[n_test:]
        train = train[: max_train_per_intent or len(train)]
        val, train = train[:1], train[1:]
        other = list(by_key[name, test_lang])
        random.Random(f"{seed}:{name}:other").shuffle(other)
        for folder, test in (("same", held), ("cross", other[: max(n_test, 1)])):
            rows[folder]["train"] += [{**r, "seen": True} for r in train]
            rows[folder]["val"] += [{**r, "seen": True} for r in val]
            rows[folder]["test"] += [{**r, "seen": True} for r in test]
    subset = catalog.subset(sorted(names))
    source = {"path": str(records_path), "seed": seed, "train_lang": train_lang}
    for folder, split_rows in rows.items():
        _write(
            out_dir / folder,
            split_rows,
            subset,
            {**source, "test_lang": test_lang if folder == "cross" else train_lang},
        )
    return {
        "intents": len(names),
        "train_lang": train_lang,
        "test_lang": test_lang,
        "counts": {folder: {s: len(rows[folder][s]) for s in SPLITS} for folder in rows},
    }


def _renamed(record: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    calls = [Call(mapping.get(c.name, c.name), c.args) for c in parse_calls(record["output"])]
    output = render_calls(calls)
    return {
        **record,
        "output": output,
        "intent": calls[0].name,
        "calls": [{"name": c.name, "args": list(c.args)} for c in calls],
    }


def merge_intents(dataset_dir: Path, group: Sequence[str], merged: str, out_dir: Path) -> Catalog:
    """`dataset_dir` with the intents of `group` merged into `merged` (which `replaces` them); returns its catalog."""
    catalog = load_catalog(dataset_dir / CATALOG_FILE)
    members = [catalog.get(name) for name in group]
    if len(group) < 2 or any(m is None or m.parameters for m in members):
        raise PrepareError(f"{dataset_dir}: merge needs two or more parameterless catalog intents, got {list(group)}")
    descriptions = "; or ".join(m.description for m in members if m is not None)
    new = Intent(name=merged, description=descriptions, domain=members[0].domain, replaces=tuple(group))
    intents = [i for i in catalog.intents if i.name not in group]
    new_catalog = Catalog(name=catalog.name, intents=(*intents, new))
    mapping = dict.fromkeys(group, merged)
    rows = {s: [_renamed(r, mapping) for r in read_jsonl(dataset_dir / split_file(s))] for s in SPLITS}
    source = {**read_json(dataset_dir / DATASET_MANIFEST).get("source", {}), "merged": {merged: list(group)}}
    _write(out_dir, rows, new_catalog, source)
    return new_catalog


def with_replaces(dataset_dir: Path, group: Sequence[str], old: str, out_dir: Path) -> Catalog:
    """A copy of `dataset_dir` whose intents in `group` say they replace `old` (split out of it)."""
    catalog = load_catalog(dataset_dir / CATALOG_FILE)
    intents = tuple(
        i.model_copy(update={"replaces": (old,)}) if i.name in group and old not in i.replaces else i
        for i in catalog.intents
    )
    new_catalog = Catalog(name=catalog.name, intents=intents)
    with atomic_path(out_dir) as tmp:
        shutil.copytree(dataset_dir, tmp)
        new_catalog.to_yaml(tmp / CATALOG_FILE)
    return new_catalog


def pick_merge_group(catalog: Catalog, seed: int) -> tuple[list[str], str]:
    """The intents to merge and the merged name: a `replaces` group of the catalog when it has one (the old intent
    it names), else two parameterless intents drawn with the seed."""
    groups = replaced_groups(catalog)
    for old, names in sorted(groups.items()):
        if all(catalog.get(n) is not None and not catalog.get(n).parameters for n in names):
            return sorted(names), old
    plain = sorted(i.name for i in catalog.intents if not i.parameters)
    if len(plain) < 2:
        raise PrepareError(f"catalog {catalog.name!r}: fewer than two parameterless intents to merge")
    pair = sorted(random.Random(f"{seed}:merge").sample(plain, 2))
    return pair, f"{pair[0]}_or_{pair[1]}"


def replaced_accuracy(
    predictions: Sequence[dict[str, Any]], catalog: Catalog, names: Sequence[str], mapped: bool
) -> float | None:
    """Intent accuracy on the records whose gold intent is in `names`; with `mapped`, an answer naming an intent
    that the gold intent `replaces` counts as right: what an old-catalog model is worth once its answers are
    mapped forward."""
    rows = [row for row in predictions if row.get("gold_intent") in names]
    if not rows:
        return None
    right = 0
    for row in rows:
        gold = catalog.get(row["gold_intent"])
        forward = mapped and gold is not None and row.get("intent") in gold.replaces
        right += row.get("intent") == row["gold_intent"] or forward
    return right / len(rows)
