"""Convert a PAI iTAG export manifest into IntentOps records, accounting for every line.

The usual throwaway script loads the whole file, takes the first `label-*` key it meets
(often the machine pre-label), prints and drops anything odd and dumps one big list at the end. Here the
manifest is streamed in chunks (local or s3://), the reviewed label `label-<id>` wins over the pre-label
`label-<id>-system`, every excluded line is written to rejects.jsonl with a reason id, and all outputs are
written as they go into a temporary folder that only becomes DIR when the run completes.

Manifest line (one JSON object per line):

    {"data": {"instruction": "我想聽音樂"},
     "label-194...-system": {"results": [{"MarkResult": "<JSON string>"}], "abandonFlag": 0},
     "label-194...": {"results": [{"MarkResult": "<JSON string>"}]},
     "abandonFlag": 0}

where the MarkResult string holds `{"annotations": [{"labels": {"output": "play_music()"}}], ...}`.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, NamedTuple

import msgspec
from tqdm import tqdm

from intentops.artifacts import CONVERT_REPORT_FILE, QUICKSTART_FILE, RECORDS_FILE, REJECTS_FILE
from intentops.grammar import GrammarError, parse_calls, render_calls
from intentops.io import atomic_path, content_id, write_json
from intentops.storage import is_s3, open_uri

log = logging.getLogger(__name__)

REJECT_REASONS: dict[str, str] = {
    "not_utf8": "the line is not valid UTF-8",
    "not_json": "the line is not valid JSON",
    "not_object": "the line is JSON but not an object",
    "missing_instruction": "no data.instruction (nor user turns) with text",
    "missing_output": "no label carries an annotation output",
    "unparseable_output": "the annotation output does not parse as a call string",
}
RAW_CHARS = 500
_CHUNK = 4 << 20
_PARALLEL_FROM_BYTES = 64 << 20
_decode = msgspec.json.decode
_encode = msgspec.json.encode
_BOM = b"\xef\xbb\xbf"
_ABANDON = (1, "1")
_DECODED_KEYS = ("data", "abandonFlag")
_MAX_OTHER_KEYS = 16
_TURN_KEYS = ("turns", "messages")
_USER_ROLES = ("user", "human")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_CJK_END = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]$")


class RejectRateError(ValueError):
    """More manifest lines were rejected than the configured maximum allows."""


@dataclass
class ConvertReport:
    """What happened to every line of a manifest; written to DIR/report.json."""

    manifest_uri: str
    manifest_sha256: str
    manifest_bytes: int
    out_dir: str
    max_reject_rate: float
    total_lines: int = 0
    empty_lines: int = 0
    converted: int = 0
    abandoned: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    human_overrides: int = 0
    reviewed: int = 0
    system_only: int = 0
    multi_intent: int = 0
    multi_turn: int = 0
    languages: dict[str, int] = field(default_factory=dict)
    intents: dict[str, int] = field(default_factory=dict)
    workers: int = 1
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def reject_rate(self) -> float:
        """Rejected share of the non-empty lines."""
        lines = self.total_lines - self.empty_lines
        return self.rejected_total / lines if lines else 0.0

    @property
    def passed(self) -> bool:
        return self.converted > 0 and self.reject_rate <= self.max_reject_rate

    @property
    def message(self) -> str:
        summary = (
            f"{self.converted} converted, {self.abandoned} abandoned, {self.rejected_total} rejected, "
            f"{self.empty_lines} empty of {self.total_lines} lines; {self.human_overrides} human overrides"
        )
        if self.converted == 0:
            return f"no usable record in {self.manifest_uri} ({summary})"
        if self.reject_rate > self.max_reject_rate:
            reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.rejected.items()))
            return (
                f"reject rate {self.reject_rate:.2%} exceeds the maximum {self.max_reject_rate:.2%} "
                f"({reasons}; see {Path(self.out_dir) / 'rejects.jsonl'}) - {summary}"
            )
        return summary

    def raise_for_status(self) -> None:
        """Raise RejectRateError when the conversion should stop the pipeline."""
        if not self.passed:
            raise RejectRateError(self.message)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        manifest = {
            "uri": data.pop("manifest_uri"),
            "sha256": data.pop("manifest_sha256"),
            "bytes": data.pop("manifest_bytes"),
        }
        return {
            "passed": self.passed,
            "message": self.message,
            "manifest": manifest,
            **data,
            "rejected_total": self.rejected_total,
            "reject_rate": round(self.reject_rate, 6),
            "outputs": {
                RECORDS_FILE: self.converted,
                QUICKSTART_FILE: self.converted,
                REJECTS_FILE: self.rejected_total,
            },
        }


def detect_lang(text: str) -> str:
    """`zh` when the text has any Han character, else `en` (the catalog is bilingual zh + en)."""
    return "zh" if _HAN.search(text) else "en"


def join_turns(turns: list[str]) -> str:
    """Concatenate user turns as the reference conversion script does (`我想聽音樂。給我放個X的音樂吧。`).

    A space separates turns that do not end in CJK text or punctuation, so English turns stay readable.
    """
    text = ""
    for turn in turns:
        piece = turn.strip()
        if not piece:
            continue
        if text and not _CJK_END.search(text):
            text += " "
        text += piece
    return text


def _user_turns(value: list[Any]) -> list[str]:
    turns: list[str] = []
    for turn in value:
        if isinstance(turn, str):
            turns.append(turn)
        elif isinstance(turn, dict) and str(turn.get("role", "user")).lower() in _USER_ROLES:
            content = turn.get("content", turn.get("text"))
            if isinstance(content, str):
                turns.append(content)
    return turns


def _instruction(data: Any) -> tuple[str, int]:
    """The utterance and how many user turns it joins (0 when there is none)."""
    if type(data) is not dict:
        return "", 0
    value = data.get("instruction")
    if value is None:
        value = next((data[key] for key in _TURN_KEYS if isinstance(data.get(key), list)), None)
    if type(value) is str:
        return value.strip(), 1
    if type(value) is list:
        turns = [turn for turn in _user_turns(value) if turn.strip()]
        return join_turns(turns), len(turns)
    return "", 0


def _is_utf8(line: bytes) -> bool:
    """Whether a line that failed to decode is valid UTF-8 (msgspec >= 0.19 reports bad UTF-8 as a DecodeError)."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_abandoned(holder: Any) -> bool:
    return type(holder) is dict and holder.get("abandonFlag") in _ABANDON


def _first_mark(label: Any) -> Any:
    """The raw MarkResult of a label's first result (equal strings need no parse to compare)."""
    try:
        return label["results"][0]["MarkResult"]
    except (KeyError, IndexError, TypeError):
        return None


def _mark_output(mark: Any) -> tuple[str | None, str]:
    """(output, why not) for one MarkResult: the first annotation with a non-empty `labels.output`."""
    if type(mark) is str:
        return _mark_text_output(mark)
    annotations = mark.get("annotations") if type(mark) is dict else None
    why = "no annotation with labels.output"
    for annotation in annotations if type(annotations) is list else ():
        labels = annotation.get("labels") if type(annotation) is dict else None
        output = labels.get("output") if type(labels) is dict else None
        if type(output) is str:
            if output.strip():
                return output, ""
            why = "labels.output is empty"
        elif output is not None:
            why = f"labels.output is a {type(output).__name__}, not a string"
    return None, why


@lru_cache(maxsize=1 << 14)
def _mark_text_output(mark: str) -> tuple[str | None, str]:
    """MarkResult strings carry no per-line ids, so equal labels give equal strings: parse each once."""
    try:
        parsed = _decode(mark)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None, "MarkResult is not valid JSON"
    return _mark_output(parsed) if type(parsed) is not str else (None, "MarkResult is a JSON string")


def _label_output(label: Any) -> tuple[str | None, str]:
    """(output, why not) for one `label-*` object: the first result with an annotation output."""
    results = label.get("results") if type(label) is dict else None
    if type(results) is not list or not results:
        return None, "the label has no results"
    why = ""
    for result in results:
        output, why = _mark_output(result.get("MarkResult") if type(result) is dict else None)
        if output is not None:
            return output, ""
    return None, why


def _reviewed_key(item: dict[str, Any]) -> str | None:
    """The first `label-*` key without the `-system` suffix: the reviewed (human) label."""
    for key in item:
        if key.startswith("label-") and not key.endswith("-system"):
            return key
    return None


def _pick_labels(item: dict[str, Any]) -> tuple[Any, Any]:
    """(reviewed, system pre-label): `label-<id>` and its `label-<id>-system` twin, else whichever exists."""
    reviewed_key = _reviewed_key(item)
    system_key = f"{reviewed_key}-system" if reviewed_key is not None else None
    if system_key not in item:
        system_key = next((key for key in item if key.startswith("label-") and key.endswith("-system")), None)
    return (item[reviewed_key] if reviewed_key else None), (item[system_key] if system_key else None)


@dataclass(frozen=True)
class _Output:
    """A parsed label output with its JSON fragments serialised once (outputs repeat heavily)."""

    canonical: str
    intent: str
    calls: int
    record_fields: bytes
    train_output: bytes


@lru_cache(maxsize=1 << 14)
def _parse_output(output: str) -> _Output:
    calls = parse_calls(output)
    canonical = render_calls(calls)
    fields = _encode(
        {
            "output": canonical,
            "intent": calls[0].name,
            "params": list(calls[0].args),
            "calls": [{"name": call.name, "args": list(call.args)} for call in calls],
        }
    )
    return _Output(canonical, calls[0].name, len(calls), fields[1:-1], _encode(canonical))


def _same_output(reviewed: str, system: str | None) -> bool:
    if system is None:
        return False
    try:
        return _parse_output(reviewed).canonical == _parse_output(system).canonical
    except GrammarError:
        return reviewed.strip() == system.strip()


@dataclass
class _Batch:
    """The converted form of a run of manifest lines: serialised outputs plus counts, merged in line order."""

    records: bytes = b""
    train: bytes = b""
    rejects: list[bytes] = field(default_factory=list)
    converted: int = 0
    empty: int = 0
    abandoned: int = 0
    human_overrides: int = 0
    reviewed: int = 0
    multi_intent: int = 0
    multi_turn: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    intents: dict[str, int] = field(default_factory=dict)

    def reject(self, line: int, reason: str, raw: bytes, detail: str = "") -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        text = raw.decode("utf-8", "replace")
        row: dict[str, Any] = {"line": line, "reason": reason, "detail": detail or REJECT_REASONS[reason]}
        row["raw"] = text[:RAW_CHARS]
        if len(text) > RAW_CHARS:
            row["raw_chars"] = len(text)
        self.rejects.append(_encode(row) + b"\n")


class _Labelled(NamedTuple):
    """What a usable line contributes: the utterance, its user turns and the winning label's output."""

    text: str
    turns: int
    output: str
    reviewed: bool
    overridden: bool


class _Excluded(NamedTuple):
    """Why a line contributes nothing: `abandoned` or a reject reason id, with a human-readable detail."""

    reason: str
    detail: str = ""


def _override(output: str, reviewed: Any, system: Any) -> bool:
    """Whether the reviewer changed the pre-label (identical MarkResult strings need no parsing)."""
    if system is None or _first_mark(system) == _first_mark(reviewed):
        return False
    return not _same_output(output, _label_output(system)[0])


def _careful(item: Any) -> _Labelled | _Excluded:
    """Apply every rule to one parsed line, in order: abandoned, instruction, label output."""
    if type(item) is not dict:
        return _Excluded("not_object", f"JSON {type(item).__name__}, expected an object")
    reviewed, system = _pick_labels(item)
    label = reviewed if reviewed is not None else system
    if _is_abandoned(item) or _is_abandoned(label):
        return _Excluded("abandoned")
    text, turns = _instruction(item.get("data"))
    if not text:
        return _Excluded("missing_instruction")
    if label is None:
        return _Excluded("missing_output", "no label-* key")
    output, why = _label_output(label)
    if output is None:
        return _Excluded("missing_output", why)
    overridden = reviewed is not None and _override(output, reviewed, system)
    return _Labelled(text, turns, output, reviewed is not None, overridden)


# gc=False: these hold only decoded JSON values, never cycles, so the collector need not track millions of them.
class _Data(msgspec.Struct, gc=False):
    instruction: Any = None


class _Result(msgspec.Struct, gc=False):
    MarkResult: Any = None


class _Label(msgspec.Struct, gc=False):
    results: list[_Result] = []
    abandonFlag: Any = None


@lru_cache(maxsize=16)
def _line_decoder(reviewed_key: str, other_keys: tuple[str, ...]) -> msgspec.json.Decoder:
    """A typed decoder for lines of one labelling task (`label-<id>`, `label-<id>-system`).

    It materialises only the fields conversion reads and skips the rest (ids, timestamps, titles) without
    building Python objects, which is most of the cost of parsing an iTAG line. Any top-level key it was not
    built for (another task's `label-*` key, say) fails the decode, so such lines take the careful path.
    """
    fields: list[tuple[str, Any, Any]] = [
        ("data", _Data | None, None),
        ("reviewed", _Label | None, None),
        ("system", _Label | None, None),
        ("abandonFlag", Any, None),
    ]
    rename = {"reviewed": reviewed_key, "system": f"{reviewed_key}-system"}
    for index, key in enumerate(other_keys):
        fields.append((f"other{index}", msgspec.Raw, msgspec.Raw()))
        rename[f"other{index}"] = key
    line_type = msgspec.defstruct("ItagLine", fields, rename=rename, forbid_unknown_fields=True, gc=False)
    return msgspec.json.Decoder(line_type)


def _regular(line: bytes, decoder: msgspec.json.Decoder) -> tuple[str, str] | None:
    """(text, output) by the fast path for the shape iTAG exports; None sends the line to `_careful`.

    Nearly every line is one reviewed label, optionally next to an identical pre-label, with a string
    instruction. This path accepts only such lines, with no top-level key the decoder was not built for, so
    `_careful` would return the same record with no human override (tests/test_itag.py checks the agreement).
    """
    try:
        item = decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    reviewed, system = item.reviewed, item.system
    if reviewed is None or not reviewed.results or item.data is None:
        return None
    if item.abandonFlag in _ABANDON or reviewed.abandonFlag in _ABANDON:
        return None
    text = item.data.instruction
    mark = reviewed.results[0].MarkResult
    if type(text) is not str or not (text := text.strip()):
        return None
    if system is not None and (not system.results or system.results[0].MarkResult != mark):
        return None  # the reviewer may have changed the pre-label: let _careful compare them
    output = _mark_output(mark)[0]
    return (text, output) if output is not None else None


def _decoder_for(item: dict[str, Any], current: tuple[str, tuple[str, ...]] | None) -> tuple[str, tuple[str, ...]]:
    """The (reviewed key, other top-level keys) a fast decoder should know after seeing `item`.

    Other keys accumulate (lines may carry optional keys such as abandonRemark), up to a bound.
    """
    reviewed_key = _reviewed_key(item)
    if reviewed_key is None:
        return current or ("", ())
    others = {key for key in item if not key.startswith("label-") and key not in _DECODED_KEYS}
    if current is not None and current[0] == reviewed_key:
        others |= set(current[1])
    return reviewed_key, tuple(sorted(others))[:_MAX_OTHER_KEYS]


_LANG_BYTES = {"zh": b',"lang":"zh","turns":', "en": b',"lang":"en","turns":'}


class _Kind(NamedTuple):
    """What two converted lines with equal kinds share: everything in a record but the text and line number."""

    output: str
    lang: str
    turns: int
    reviewed: bool


@lru_cache(maxsize=1 << 14)
def _record_tail(kind: _Kind) -> tuple[bytes, bytes, str]:
    """(record bytes after the text up to the line number, train.json output, canonical call string) for one
    kind, encoded once."""
    parsed = _parse_output(kind.output)
    reviewed = b"true" if kind.reviewed else b"false"
    tail = b',%b%b%d,"reviewed":%b,"source_line":' % (
        parsed.record_fields,
        _LANG_BYTES[kind.lang],
        kind.turns,
        reviewed,
    )
    return tail, parsed.train_output, parsed.canonical


def _count_kinds(batch: _Batch, kinds: list[_Kind]) -> None:
    """Fill the batch's per-language/intent/shape counts from the converted lines' kinds (counted in C)."""
    for kind, count in Counter(kinds).items():
        parsed = _parse_output(kind.output)
        batch.languages[kind.lang] = batch.languages.get(kind.lang, 0) + count
        batch.intents[parsed.intent] = batch.intents.get(parsed.intent, 0) + count
        batch.reviewed += count if kind.reviewed else 0
        batch.multi_intent += count if parsed.calls > 1 else 0
        batch.multi_turn += count if kind.turns > 1 else 0


def _convert_chunk(first_line: int, chunk: bytes) -> _Batch:
    """Convert the newline-separated lines of `chunk`, numbered from `first_line` (runs in worker processes).

    Per line, only the text is encoded: the rest of a record depends on the line's kind (output, language,
    turns, reviewed), which repeats heavily and is encoded once (`_record_tail`); counts come from the kinds at
    the end. That, and the typed decoder of `_regular`, is what keeps a million-line manifest fast.
    """
    batch = _Batch()
    encode = _encode
    han = _HAN.search
    kinds: list[_Kind] = []
    records: list[bytes] = []
    train: list[bytes] = []
    decoder: msgspec.json.Decoder | None = None
    decoder_keys: tuple[str, tuple[str, ...]] | None = None
    overrides = 0
    lines = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        lines.pop()  # the block ends with a complete line, not with an empty one
    if first_line == 1 and lines and lines[0].startswith(_BOM):
        lines[0] = lines[0][3:]
    for number, line in enumerate(lines, start=first_line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line or line.isspace():
            batch.empty += 1
            continue
        regular = _regular(line, decoder) if decoder is not None else None
        if regular is not None:
            text, output = regular
            turns, reviewed, overridden = 1, True, False
        else:
            try:
                item = _decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                reason = "not_json" if _is_utf8(line) else "not_utf8"
                batch.reject(number, reason, line, f"not valid JSON: {exc}" if reason == "not_json" else "")
                continue
            if type(item) is dict:
                keys = _decoder_for(item, decoder_keys)
                if keys != decoder_keys and keys[0]:
                    decoder, decoder_keys = _line_decoder(*keys), keys
            labelled = _careful(item)
            if type(labelled) is _Excluded:
                if labelled.reason == "abandoned":
                    batch.abandoned += 1
                else:
                    batch.reject(number, labelled.reason, line, labelled.detail)
                continue
            text, turns, output, reviewed, overridden = labelled
        kind = _Kind(output, "zh" if han(text) else "en", turns, reviewed)  # detect_lang, inlined
        try:
            tail, train_output, canonical = _record_tail(kind)
        except GrammarError as exc:
            batch.reject(number, "unparseable_output", line, exc.reason)
            continue
        overrides += overridden  # only lines that become records count (a rejected line is no override)
        text_json = encode(text)
        record_id = content_id(text, canonical).encode()  # stable across files and orders
        records.append(b'{"id":"%b","text":%b%b%d}\n' % (record_id, text_json, tail, number))
        train.append(b'{"instruction":%b,"output":%b}' % (text_json, train_output))
        kinds.append(kind)
    _count_kinds(batch, kinds)
    batch.human_overrides = overrides
    batch.converted = len(records)
    batch.records = b"".join(records)  # one blob each: cheap to send back from a worker process
    batch.train = b",\n".join(train)
    return batch


def _convert_file_chunk(path: str, offset: int, length: int, first_line: int) -> _Batch:
    """`_convert_chunk` on a block a worker reads itself from a local manifest (page cache, not a pipe)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        chunk = handle.read(length)
    if len(chunk) != length:
        raise OSError(f"{path}: changed while being converted (short read at byte {offset})")
    return _convert_chunk(first_line, chunk)


class _Chunker:
    """Cuts a binary stream into blocks of whole lines, counting lines and bytes on the way.

    A helper thread hashes the blocks (hashlib releases the GIL on large buffers), so the manifest digest costs
    the converting thread nothing. Use as a context manager; `sha256()` waits for the last block.
    """

    def __init__(self, stream: IO[bytes], progress: tqdm) -> None:
        self.stream = stream
        self.progress = progress
        self.bytes_read = 0
        self.lines = 0
        self._digest = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="manifest-sha256")

    def __enter__(self) -> _Chunker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._hasher.shutdown(wait=True)

    def sha256(self) -> str:
        self._hasher.shutdown(wait=True)
        return self._digest.hexdigest()

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        """(number of the first line, byte offset, block of whole lines including their newlines)."""
        while block := self.stream.read(_CHUNK):
            if not block.endswith(b"\n"):
                block += self.stream.readline()  # finish the last line
            self._hasher.submit(self._digest.update, block)
            yield self.lines + 1, self.bytes_read, block
            self.bytes_read += len(block)
            self.lines += block.count(b"\n") + (not block.endswith(b"\n"))
            self.progress.update(len(block))


def _parallel(chunks: Iterator[tuple[int, int, bytes]], workers: int, local_path: str | None) -> Iterator[_Batch]:
    """Convert chunks in worker processes, yielding results in order with a bounded number in flight.

    Workers read blocks of a local manifest from the file themselves; blocks of an S3 stream are sent to them.
    """
    context = multiprocessing.get_context("spawn")  # safe even when the caller runs threads (boto3, moto)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    pending: deque[Future[_Batch]] = deque()
    try:
        for first, offset, chunk in chunks:
            if local_path is not None:
                pending.append(pool.submit(_convert_file_chunk, local_path, offset, len(chunk), first))
            else:
                pending.append(pool.submit(_convert_chunk, first, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def default_workers(manifest_bytes: int | None) -> int:
    """One process for small manifests (worker start-up would dominate), else up to 4 worker processes."""
    if manifest_bytes is not None and manifest_bytes < _PARALLEL_FROM_BYTES:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


class _Writer:
    """records.jsonl, train.json (a JSON array written element by element) and rejects.jsonl."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.records = open(folder / RECORDS_FILE, "wb", buffering=1 << 20)  # noqa: SIM115
        self.rejects = open(folder / REJECTS_FILE, "wb", buffering=1 << 20)  # noqa: SIM115
        self.train = open(folder / QUICKSTART_FILE, "wb", buffering=1 << 20)  # noqa: SIM115
        self.train.write(b"[")
        self._separator = b"\n"

    def write(self, batch: _Batch) -> None:
        self.records.write(batch.records)
        self.rejects.writelines(batch.rejects)
        if batch.train:
            self.train.write(self._separator)
            self.train.write(batch.train)
            self._separator = b",\n"

    def close(self) -> None:
        self.train.write(b"\n]\n")
        for handle in (self.records, self.rejects, self.train):
            handle.close()


def convert_manifest(
    manifest_uri: str | Path,
    out_dir: str | Path,
    max_reject_rate: float = 0.05,
    workers: int | None = None,
) -> ConvertReport:
    """Stream an iTAG manifest (local or s3://) into records.jsonl, train.json, rejects.jsonl, report.json.

    Memory stays flat whatever the manifest length: the file is read in 4 MiB blocks and each block is
    written out before more than a few are in flight. `workers` processes convert blocks in parallel (None:
    one for small files, else up to 4); the output is identical for any worker count. The report is always
    written, also when the reject rate is above `max_reject_rate` (check `report.passed`, or call
    `report.raise_for_status()`), so nothing is lost.
    """
    uri = str(manifest_uri)
    size = Path(uri).stat().st_size if not is_s3(uri) and Path(uri).is_file() else None
    processes = workers if workers is not None else default_workers(size)
    report = ConvertReport(uri, "", 0, str(out_dir), max_reject_rate)
    totals = _Batch()
    started = time.perf_counter()
    with (
        open_uri(uri, "rb") as stream,
        atomic_path(out_dir) as tmp,
        tqdm(total=size, unit="B", unit_scale=True, desc="convert-itag", disable=None) as progress,
        _Chunker(stream, progress) as chunker,
    ):
        writer = _Writer(tmp)
        chunks = iter(chunker)
        batches = (
            (_convert_chunk(first, chunk) for first, _, chunk in chunks)
            if processes <= 1
            else _parallel(chunks, processes, None if is_s3(uri) else uri)
        )
        for batch in batches:
            writer.write(batch)
            for name in (
                "converted",
                "empty",
                "abandoned",
                "human_overrides",
                "reviewed",
                "multi_intent",
                "multi_turn",
            ):
                setattr(totals, name, getattr(totals, name) + getattr(batch, name))
            for name in ("rejected", "languages", "intents"):
                merged = getattr(totals, name)
                for key, count in getattr(batch, name).items():
                    merged[key] = merged.get(key, 0) + count
        writer.close()
        report.total_lines = chunker.lines
        report.converted = totals.converted
        report.empty_lines = totals.empty
        report.abandoned = totals.abandoned
        report.human_overrides = totals.human_overrides
        report.reviewed = totals.reviewed
        report.system_only = report.converted - totals.reviewed
        report.multi_intent = totals.multi_intent
        report.multi_turn = totals.multi_turn
        report.rejected = dict(sorted(totals.rejected.items()))
        report.languages = dict(sorted(totals.languages.items()))
        report.intents = dict(sorted(totals.intents.items()))
        report.manifest_sha256 = chunker.sha256()
        report.manifest_bytes = chunker.bytes_read
        report.workers = processes
        report.seconds = round(time.perf_counter() - started, 3)
        write_json(tmp / CONVERT_REPORT_FILE, report.to_dict())
    (log.info if report.passed else log.error)("convert-itag %s -> %s: %s", uri, out_dir, report.message)
    return report
