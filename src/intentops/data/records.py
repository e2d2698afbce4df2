"""Loading labelled records into one table, and the text/intent rules that validation and splitting share.

Records come from `convert-itag` (records.jsonl), from a PAI QuickStart file (train.json: `[{instruction,
output}]`) or from a split dataset folder (train/val/test.jsonl); all load into the same DataFrame so every
check sees the same columns whatever the source.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd

from intentops.artifacts import split_file
from intentops.catalog import Catalog, CatalogError
from intentops.config import DataConfig
from intentops.data.itag import detect_lang
from intentops.grammar import GrammarError, parse_calls, render_calls
from intentops.io import content_id, read_jsonl

SPLITS = ("train", "val", "test")
COLUMNS = ("id", "text", "output", "turns", "split")


@lru_cache(maxsize=1 << 16)
def normalise_text(text: str) -> str:
    """The form two utterances share when they are "the same": NFKC, casefolded, no punctuation or spaces.

    `我想听音乐！` and `我想听音乐` or `Play music.` and `play  music` collide, so duplicates, conflicting
    labels and train/test leakage are caught even when people typed them slightly differently.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if not ch.isspace() and unicodedata.category(ch)[0] not in "PZ")


@lru_cache(maxsize=1 << 16)
def output_calls(output: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    """(canonical call string, (intent, argument count) per call); GrammarError when it does not parse.

    The canonical form makes `f（x）` and `f(x)` the same label when looking for duplicates and conflicts.
    """
    calls = parse_calls(output)
    return render_calls(calls), tuple((call.name, len(call.args)) for call in calls)


def unseen_intents(catalog: Catalog, data_cfg: DataConfig) -> list[str]:
    """Intents held out of training: `data.unseen_intents` plus every intent of `data.unseen_domain`."""
    unknown = sorted(set(data_cfg.unseen_intents) - set(catalog.names))
    if unknown:
        raise CatalogError(f"data.unseen_intents names intents that are not in the catalog: {', '.join(unknown)}")
    held = set(data_cfg.unseen_intents)
    if data_cfg.unseen_domain:
        if data_cfg.unseen_domain not in catalog.domains:
            raise CatalogError(
                f"data.unseen_domain {data_cfg.unseen_domain!r} is not a catalog domain "
                f"(domains: {', '.join(catalog.domains) or 'none'})"
            )
        held.update(i.name for i in catalog.intents if i.domain == data_cfg.unseen_domain)
    return [name for name in catalog.names if name in held]


def complete_record(record: dict[str, Any]) -> dict[str, Any]:
    """Fill the convert-itag fields a record lacks (`intent, params, calls, lang`) from its text and output.

    Records from other tools (a PAI QuickStart file, a hand-made JSONL) then reach training in the same layout.
    Fields already present are kept; an output that does not parse is left for validation to report.
    """
    text, output = record.get("text"), record.get("output")
    if "lang" not in record and isinstance(text, str):
        record["lang"] = detect_lang(text)
    if all(key in record for key in ("intent", "params", "calls")) or not isinstance(output, str):
        return record
    try:
        calls = parse_calls(output)
    except GrammarError:
        return record
    record.setdefault("intent", calls[0].name)
    record.setdefault("params", list(calls[0].args))
    record.setdefault("calls", [{"name": call.name, "args": list(call.args)} for call in calls])
    return record


def _rows_from_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".json":
        try:
            items = msgspec.json.decode(path.read_bytes())
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid UTF-8 JSON: {exc}") from None
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON list of {{instruction, output}} objects")
        rows = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"{path}: item {index} is not an object")
            rows.append(complete_record({"text": item.get("instruction"), "output": item.get("output")}))
        return rows
    return list(read_jsonl(path))


def load_records(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Records as a DataFrame with at least `id, text, output, turns, split` (split None when unsplit).

    `source` is a records.jsonl file, a PAI train.json list, a dataset folder with train/val/test.jsonl, or a
    DataFrame. Extra columns (lang, seen, source_line, ...) are kept.
    """
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
    else:
        path = Path(source)
        if path.is_dir():
            parts = []
            for split in SPLITS:
                if (path / split_file(split)).exists():
                    part = pd.DataFrame(list(read_jsonl(path / split_file(split))))
                    part["split"] = split
                    parts.append(part)
            if not parts:
                raise FileNotFoundError(f"{path}: no train.jsonl, val.jsonl or test.jsonl in this dataset folder")
            frame = pd.concat(parts, ignore_index=True)
        elif path.is_file():
            frame = pd.DataFrame(_rows_from_file(path))
        else:
            raise FileNotFoundError(f"{path}: no such records file or dataset folder")
    if "text" not in frame.columns and "instruction" in frame.columns:
        frame["text"] = frame["instruction"]
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    if frame.empty:
        raise ValueError(f"{source if not isinstance(source, pd.DataFrame) else 'DataFrame'}: no records")
    frame["id"] = [
        str(v) if v is not None and v == v else _content_id(text, output)
        for v, text, output in zip(frame["id"], frame["text"], frame["output"], strict=True)
    ]
    _check_unique_ids(frame, source)
    frame["turns"] = [int(v) if isinstance(v, int | float) and v == v else 1 for v in frame["turns"]]
    frame["text"] = [v if isinstance(v, str) else "" for v in frame["text"]]
    frame["split"] = [v if isinstance(v, str) else None for v in frame["split"]]
    return frame.reset_index(drop=True)


def _content_id(text: Any, output: Any) -> str:
    text = text if isinstance(text, str) else ""
    if not isinstance(output, str):
        return content_id(text, "")
    try:
        return content_id(text, output_calls(output)[0])
    except GrammarError:
        return content_id(text, output)


def _check_unique_ids(frame: pd.DataFrame, source: Any) -> None:
    """Two different records under one id would be joined with each other's rollouts and reports."""
    repeated = frame[frame["id"].duplicated(keep=False)]
    if repeated.empty:
        return
    distinct = repeated.assign(label=repeated["output"].astype(str)).drop_duplicates(["id", "text", "label"])
    kinds = distinct["id"].value_counts()
    clashing = kinds[kinds > 1]
    if not clashing.empty:
        name = "DataFrame" if isinstance(source, pd.DataFrame) else str(source)
        record_id = clashing.index[0]
        raise ValueError(
            f"{name}: record id {record_id!r} is used by {int(clashing.iloc[0])} different records "
            f"({len(clashing)} ids clash in all); give every record its own id"
        )


def annotate(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the derived columns checks and splits need: `norm` (normalised text), `canonical` (canonical
    output, the raw one when it does not parse), `calls_parsed` ((intent, arg count) per call), `parse_error`,
    `intents`, `first_intent` and `multi` (multi-intent or multi-turn)."""
    canonical: list[Any] = []
    calls: list[tuple[tuple[str, int], ...]] = []
    errors: list[str | None] = []
    for output in frame["output"]:
        if not isinstance(output, str):
            canonical.append(None)
            calls.append(())
            errors.append("no output")
            continue
        try:
            rendered, parsed = output_calls(output)
        except GrammarError as exc:
            rendered, parsed = output, ()
            errors.append(exc.reason)
        else:
            errors.append(None)
        canonical.append(rendered)
        calls.append(parsed)
    frame = frame.copy()
    frame["norm"] = [normalise_text(text) for text in frame["text"]]
    frame["canonical"] = canonical
    frame["calls_parsed"] = calls
    frame["parse_error"] = errors
    frame["intents"] = [tuple(name for name, _ in parsed) for parsed in calls]
    frame["first_intent"] = [parsed[0][0] if parsed else None for parsed in calls]
    frame["multi"] = [len(parsed) > 1 or turns > 1 for parsed, turns in zip(calls, frame["turns"], strict=True)]
    return frame
