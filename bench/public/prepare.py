"""Turn a normalised public intent dataset (CLINC150, BANKING77) into an IntentOps dataset folder.

    python bench/public/prepare.py --source ../shared/datasets/clinc150.jsonl --protocol unseen --out /tmp/clinc-unseen

Input: JSONL records `{"text", "intent", "split": train|val|test, "lang", ["is_oos"]}` (the official splits).
Output: the dataset artifact of docs/architecture.md (`train/val/test.jsonl` with `seen` flags, `catalog.yaml`,
`manifest.json`, `validation/`) plus `rejects.jsonl` (input lines that could not be used, with the reason) and
`prepare.json` (what was kept, renamed, held out and flagged).

Every intent becomes a parameterless call `intent_name()`. The catalog entry's description is generated, so the same
prompt strategies (category definitions) apply as for a hand-written catalog: the intent name's words, then the
training n-grams that are most distinctive of that intent (class-level TF-IDF: counts summed per intent, IDF over
intents), e.g. `transfer money between accounts; typical requests mention: transfer, send, account`.

Protocols (the same seed gives the same records in every protocol, so rows are comparable):
- `in_domain`: official splits; each intent subsampled to at most N train / val / test records.
- `unseen`: 10% of the intents (seeded) are left out of train and val entirely but stay in the catalog; their test
  records carry `seen: false`. (Their generated descriptions use the official train split, which is otherwise unused:
  the stand-in for a catalog author who wrote the description.)
- `oos` (datasets with out-of-scope records, i.e. CLINC150): in_domain plus the explicit uncertain label of GenCLS++.
  Out-of-scope test utterances are labelled `uncertain()`, and a few out-of-scope train examples (the same per-intent
  cap) teach it. In the other protocols out-of-scope records are excluded.
A dataset without an official val split gets one carved out of train per intent (seeded, before train subsampling).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from intentops.artifacts import CATALOG_FILE, DATASET_MANIFEST, REJECTS_FILE, split_file
from intentops.catalog import UNCERTAIN_INTENT, Catalog, Intent
from intentops.config import DataConfig
from intentops.data.itag import detect_lang
from intentops.data.records import complete_record
from intentops.data.validate import CHECKS, validate_records
from intentops.grammar import Call, render_call
from intentops.io import atomic_path, sha256_file, sha256_text, write_json, write_jsonl

log = logging.getLogger("bench.public.prepare")

PROTOCOLS = ("in_domain", "unseen", "oos")
SPLITS = ("train", "val", "test")
OOS_INTENTS = frozenset({"oos", "out_of_scope"})
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]+")


class PrepareError(ValueError):
    """A source file or option that cannot produce a dataset; the message names the file or option."""


@dataclass(frozen=True)
class SourceRecord:
    """One usable line of the normalised file."""

    line: int
    text: str
    intent: str  # the catalog name (sanitised); UNCERTAIN_INTENT for out-of-scope
    split: str
    lang: str


@dataclass
class PrepareReport:
    """What prepare() wrote and why: counts, the held-out intents, renamed labels, rejected lines."""

    dataset: str
    protocol: str
    source: str
    out_dir: str
    seed: int
    oos: str  # "uncertain" | "excluded" | "none"
    intents: int
    unseen_intents: list[str]
    counts: dict[str, int]
    oos_counts: dict[str, int]
    val_source: str  # "official" | "carved from train"
    renamed: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    limits: dict[str, int | None] = field(default_factory=dict)
    validation: dict[str, int] = field(default_factory=dict)  # data-library check -> flagged records

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def catalog_name(label: str) -> str:
    """A label as a catalog identifier: runs of other characters become `_` (BANKING77 has `reverted_card_payment?`)."""
    name = _NOT_IDENTIFIER.sub("_", label.strip()).strip("_")
    if not name:
        raise PrepareError(f"intent label {label!r} has no identifier characters")
    return f"i_{name}" if name[0].isdigit() else name


def _lines(path: Path) -> Iterator[tuple[int, Any, str]]:
    """(line number, parsed value or the raw line, why it is unusable or "") per non-blank line of a JSONL file."""
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                yield number, line[:500], "not_json"
                continue
            yield number, value, "" if isinstance(value, dict) else "not_an_object"


def _problem(raw: dict[str, Any]) -> str:
    """Why a parsed line cannot become a record ("" when it can)."""
    if not isinstance(raw.get("text"), str) or not raw["text"].strip():
        return "empty_text"
    if not isinstance(raw.get("intent"), str) or not raw["intent"].strip():
        return "missing_intent"
    if raw.get("split") not in SPLITS:
        return "unknown_split"
    return ""


def load_source(path: Path) -> tuple[list[SourceRecord], list[dict[str, Any]], dict[str, str]]:
    """Read a normalised file: (usable records, rejects with reasons, renamed labels original -> catalog name)."""
    if not path.exists():
        raise PrepareError(f"{path}: normalised dataset not found")
    records: list[SourceRecord] = []
    rejects: list[dict[str, Any]] = []
    renamed: dict[str, str] = {}
    owner: dict[str, str] = {}
    for line, raw, unreadable in _lines(path):
        reason = unreadable or _problem(raw)
        if reason:
            rejects.append({"line": line, "reason": reason, "raw": raw})
            continue
        text, label = raw["text"].strip(), raw["intent"]
        if raw.get("is_oos") or label in OOS_INTENTS:
            name = UNCERTAIN_INTENT
        else:
            name = catalog_name(label)
            if name == UNCERTAIN_INTENT:
                raise PrepareError(f"{path}:{line}: intent {label!r} collides with the reserved uncertain label")
            if owner.setdefault(name, label) != label:
                raise PrepareError(f"{path}:{line}: intents {owner[name]!r} and {label!r} both map to {name!r}")
            if name != label:
                renamed[label] = name
        lang = raw["lang"] if isinstance(raw.get("lang"), str) else detect_lang(text)
        records.append(SourceRecord(line=line, text=text, intent=name, split=raw["split"], lang=lang))
    if not records:
        raise PrepareError(f"{path}: no usable records ({len(rejects)} rejected)")
    return records, rejects, renamed


def distinctive_terms(texts_by_intent: dict[str, list[str]], top_k: int = 3) -> dict[str, list[str]]:
    """The `top_k` n-grams most specific to each intent: class-level TF-IDF over its training utterances.

    Counts come per utterance (no n-gram spans two utterances), are summed per intent, and weighted by an IDF over
    intents, so words every intent shares (`my`, `card`) lose to the ones that set an intent apart. Ties break by
    term, so the result is deterministic. A term sharing a word with one already chosen is skipped, so the few terms
    shown say different things.
    """
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    names = sorted(name for name, texts in texts_by_intent.items() if texts)
    utterances = [text for name in names for text in texts_by_intent[name]]
    owners = np.repeat(np.arange(len(names)), [len(texts_by_intent[name]) for name in names])
    vectorizer = CountVectorizer(ngram_range=(1, 2), stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
    try:
        counts = vectorizer.fit_transform(utterances)
    except ValueError:  # nothing but stop words
        return {name: [] for name in texts_by_intent}
    per_intent = np.vstack([np.asarray(counts[owners == row].sum(axis=0)).ravel() for row in range(len(names))])
    weights = TfidfTransformer(sublinear_tf=True).fit_transform(per_intent).toarray()
    vocabulary = vectorizer.get_feature_names_out()
    result: dict[str, list[str]] = {name: [] for name in texts_by_intent}
    for row, name in enumerate(names):
        ranked = sorted((-weight, term) for weight, term in zip(weights[row], vocabulary, strict=True) if weight > 0)
        chosen: list[str] = []
        for _, term in ranked:
            if any(set(term.split()) & set(other.split()) for other in chosen):
                continue
            chosen.append(term)
            if len(chosen) == top_k:
                break
        result[name] = chosen
    return result


def describe(name: str, terms: Sequence[str]) -> str:
    """`refund not showing up; typical requests mention: refund, arrived, yet` (name words, then distinctive n-grams)."""
    words = " ".join(part for part in name.lower().split("_") if part)
    return f"{words}; typical requests mention: {', '.join(terms)}" if terms else words


def build_catalog(dataset: str, records: Iterable[SourceRecord], names: Sequence[str], top_k: int = 3) -> Catalog:
    """One parameterless intent per name, described from its name and its official training utterances."""
    texts: dict[str, list[str]] = {name: [] for name in names}
    for record in records:
        if record.split == "train" and record.intent in texts:
            texts[record.intent].append(record.text)
    terms = distinctive_terms(texts, top_k)
    return Catalog(name=dataset, intents=tuple(Intent(name=n, description=describe(n, terms[n])) for n in names))


def pick_unseen(names: Sequence[str], fraction: float, seed: int) -> list[str]:
    """`fraction` of the intents (at least one, never all), chosen reproducibly from the sorted names."""
    if not 0 < fraction < 1:
        raise PrepareError(f"--unseen-fraction must be between 0 and 1, got {fraction}")
    if len(names) < 2:
        raise PrepareError("the unseen protocol needs at least two intents")
    count = min(len(names) - 1, max(1, round(fraction * len(names))))
    return sorted(random.Random(f"{seed}:unseen").sample(sorted(names), count))


def _sample(items: list[SourceRecord], limit: int | None, key: str) -> list[SourceRecord]:
    """A seeded subsample in source order; the key ties the draw to (seed, intent, split), not to the protocol."""
    if limit is None or len(items) <= limit:
        return list(items)
    picked = random.Random(key).sample(range(len(items)), limit)
    return [items[i] for i in sorted(picked)]


def _carve(train: list[SourceRecord], per_intent: int, seed: int, label: str) -> tuple[list, list]:
    """(val, rest): up to `per_intent` records, never more than a fifth of the intent's training records."""
    held = set(random.Random(f"{seed}:{label}:carve").sample(range(len(train)), min(per_intent, len(train) // 5)))
    return [r for i, r in enumerate(train) if i in held], [r for i, r in enumerate(train) if i not in held]


def _row(dataset: str, record: SourceRecord, seen: bool) -> dict[str, Any]:
    """A dataset record: the convert-itag fields (filled by the data library from the output) plus `seen`."""
    row = complete_record(
        {
            "id": f"{dataset}-{record.split}-{record.line}",
            "text": record.text,
            "output": render_call(Call(record.intent)),
            "lang": record.lang,
            "source_line": record.line,
        }
    )
    row["seen"] = seen
    return row


def _manifest(
    folder: Path, rows: dict[str, list[dict[str, Any]]], catalog: Catalog, unseen: list[str], source: dict[str, Any]
) -> dict[str, Any]:
    """manifest.json in the layout `intentops.data.split` writes, so every stage reads a prepared public dataset
    exactly like a split one (same counts block, same dataset hash over the split files)."""
    counts: dict[str, Any] = {}
    for split in SPLITS:
        part = rows[split]
        by_intent = Counter(r["intent"] for r in part)
        counts[split] = {
            "total": len(part),
            "seen": sum(r["seen"] for r in part),
            "unseen": sum(not r["seen"] for r in part),
            "by_intent": {name: by_intent[name] for name in [*catalog.names, UNCERTAIN_INTENT] if by_intent[name]},
            "by_lang": dict(sorted(Counter(r["lang"] for r in part).items())),
        }
    files = {split_file(split): sha256_file(folder / split_file(split)) for split in SPLITS}
    return {
        "counts": counts,
        "dataset_hash": sha256_text("".join(files[split_file(split)] for split in SPLITS))[:16],
        "catalog_hash": catalog.content_hash,
        "unseen_intents": unseen,
        "seen_intents": [name for name in catalog.names if name not in unseen],
        "unseen_domain": "",
        "seed": source["seed"],
        "val_fraction": None,
        "test_fraction": None,
        "files": files,
        "source": source,
    }


def _validate(folder: Path, catalog: Catalog) -> dict[str, int]:
    """The data library's checks on the prepared folder, every one as a warning: public data is what it is
    (CLINC150 has near-duplicate utterances across its official splits, for one), but the report says so."""
    data_cfg = DataConfig(min_examples_per_intent=1, severities=dict.fromkeys(CHECKS, "warning"))
    report = validate_records(folder, catalog, data_cfg, folder / "validation")
    return {finding.check: finding.count for finding in report.warnings}


def prepare(
    source: str | Path,
    out_dir: str | Path,
    protocol: str = "in_domain",
    *,
    dataset: str | None = None,
    max_train_per_intent: int | None = None,
    max_val_per_intent: int | None = None,
    max_test_per_intent: int | None = None,
    max_intents: int | None = None,
    unseen_fraction: float = 0.1,
    carve_val_per_intent: int = 10,
    seed: int = 42,
) -> PrepareReport:
    """Write an IntentOps dataset folder for one protocol; see the module docstring for what each protocol means."""
    if protocol not in PROTOCOLS:
        raise PrepareError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    source = Path(source)
    dataset = dataset or source.name.split(".")[0]
    records, rejects, renamed = load_source(source)
    has_oos = any(r.intent == UNCERTAIN_INTENT for r in records)
    if protocol == "oos" and not has_oos:
        raise PrepareError(
            f"{source}: the oos protocol needs out-of-scope records (is_oos or intent 'oos'); none found"
        )
    names = sorted({r.intent for r in records} - {UNCERTAIN_INTENT})
    if max_intents is not None and max_intents < len(names):
        names = sorted(random.Random(f"{seed}:intents").sample(names, max_intents))
    catalog = build_catalog(dataset, records, names)
    unseen = pick_unseen(names, unseen_fraction, seed) if protocol == "unseen" else []

    labels = [*names, UNCERTAIN_INTENT] if protocol == "oos" else list(names)
    pools: dict[tuple[str, str], list[SourceRecord]] = defaultdict(list)
    for record in records:
        if record.intent in labels:
            pools[record.intent, record.split].append(record)
    official_val = any(split == "val" for _, split in pools)
    if not official_val:  # carve val out of train before subsampling, so train and val never share a record
        for label in labels:
            pools[label, "val"], pools[label, "train"] = _carve(
                pools[label, "train"], carve_val_per_intent, seed, label
            )
    limits = {"train": max_train_per_intent, "val": max_val_per_intent, "test": max_test_per_intent}

    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    oos_counts = dict.fromkeys(SPLITS, 0)
    for split in SPLITS:
        for label in labels:
            if split != "test" and label in unseen:
                continue
            pool = pools[label, split]
            limit = limits[split]
            if label == UNCERTAIN_INTENT and split == "test":  # the last label: every in-scope test row is in
                limit = _oos_test_limit(records, len(rows["test"]), len(pool))
            picked = _sample(pool, limit, f"{seed}:{label}:{split}")
            rows[split].extend(_row(dataset, r, seen=label not in unseen) for r in picked)
            if label == UNCERTAIN_INTENT:
                oos_counts[split] = len(picked)
    trained = {r["intent"] for r in rows["train"]}
    missing = [name for name in names if name not in unseen and name not in trained]
    if missing:
        raise PrepareError(f"{source}: intents without training records: {', '.join(missing[:10])}")

    out = Path(out_dir)
    limits_used = {**{f"max_{k}_per_intent": v for k, v in limits.items()}, "max_intents": max_intents}
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for split in SPLITS:
            write_jsonl(tmp / split_file(split), rows[split])
        catalog.to_yaml(tmp / CATALOG_FILE)
        write_jsonl(tmp / REJECTS_FILE, rejects)
        origin = {"path": str(source), "sha256": sha256_file(source), "protocol": protocol, "seed": seed, **limits_used}
        write_json(tmp / DATASET_MANIFEST, _manifest(tmp, rows, catalog, unseen, origin))
        findings = _validate(tmp, catalog)
        report = PrepareReport(
            dataset=dataset,
            protocol=protocol,
            source=str(source),
            out_dir=str(out),
            seed=seed,
            oos="uncertain" if protocol == "oos" else ("excluded" if has_oos else "none"),
            intents=len(names),
            unseen_intents=unseen,
            counts={split: len(rows[split]) for split in SPLITS},
            oos_counts=oos_counts,
            val_source="official" if official_val else "carved from train",
            renamed=renamed,
            rejected=dict(Counter(r["reason"] for r in rejects)),
            limits=limits_used,
            validation=findings,
        )
        write_json(tmp / "prepare.json", report.to_dict())
    log.info(
        "%s/%s: %d intents (%d unseen), train %d, val %d, test %d, oos %s, %d lines rejected",
        dataset, protocol, len(names), len(unseen), *report.counts.values(), report.oos, len(rejects),
    )  # fmt: skip
    return report


def _oos_test_limit(records: Sequence[SourceRecord], kept_in_scope: int, available: int) -> int:
    """How many out-of-scope test records keep the official in-scope : out-of-scope test ratio (CLINC150: 4500 :
    1000) whatever intents and per-intent caps were applied to the in-scope side."""
    official = sum(r.split == "test" and r.intent != UNCERTAIN_INTENT for r in records)
    return available if official == 0 else min(available, max(1, round(available * kept_in_scope / official)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", required=True, help="Normalised dataset JSONL (text, intent, split, lang).")
    parser.add_argument("--out", required=True, help="Dataset folder to write (replaced atomically).")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="in_domain", help="Evaluation protocol.")
    parser.add_argument("--dataset", help="Dataset name (default: the source file's stem).")
    parser.add_argument("--max-train-per-intent", type=int, help="Subsample training records per intent.")
    parser.add_argument("--max-val-per-intent", type=int, help="Subsample validation records per intent.")
    parser.add_argument("--max-test-per-intent", type=int, help="Subsample test records per intent.")
    parser.add_argument("--max-intents", type=int, help="Keep only N intents (seeded): smoke runs.")
    parser.add_argument("--unseen-fraction", type=float, default=0.1, help="Share of intents held out (unseen).")
    parser.add_argument("--seed", type=int, default=42, help="Seed for every sampling decision.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        prepare(
            args.source,
            args.out,
            args.protocol,
            dataset=args.dataset,
            max_train_per_intent=args.max_train_per_intent,
            max_val_per_intent=args.max_val_per_intent,
            max_test_per_intent=args.max_test_per_intent,
            max_intents=args.max_intents,
            unseen_fraction=args.unseen_fraction,
            seed=args.seed,
        )
    except PrepareError as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
