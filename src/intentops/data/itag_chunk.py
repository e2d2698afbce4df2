"""Converting one block of iTAG manifest lines into serialised records (in the main process or a worker).

Nearly every line of an export has one shape: a string instruction and a reviewed label `label-<id>` next to
its pre-label `label-<id>-system`, each with a MarkResult string. A typed msgspec decoder built for that shape
(its keys are learnt from the first line the careful path sees) materialises only the fields conversion reads
and skips the rest (ids, timestamps, titles) without building Python objects. A line it decodes costs one
cache lookup of its MarkResult string (what the label yields: output, record tails, id suffix), one sha256 for
its content id and two byte-string formats; lines are sliced out of the block as memoryviews, not copied.
Every other line (broken JSON, other keys, no instruction, an output that does not parse) takes
`itag_rules.careful`, which applies every rule and names the reject reason; `convert_chunk(..., fast=False)`
sends every line there, which is how the tests check that both paths agree.
"""

from __future__ import annotations

import hashlib
from binascii import hexlify
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

import msgspec

from intentops.data.itag_rules import (
    ABANDON,
    HAN,
    REJECT_REASONS,
    Excluded,
    careful,
    is_utf8,
    mark_output,
    parse_output,
    reviewed_key,
    same_output,
)
from intentops.grammar import GrammarError
from intentops.io import content_id

RAW_CHARS = 500
_decode = msgspec.json.decode
_encode = msgspec.json.encode
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)
_BOM = b"\xef\xbb\xbf"
_DECODED_KEYS = ("data", "abandonFlag")
_MAX_OTHER_KEYS = 16
_MAX_MARKS = 1 << 14
_LANG_BYTES = {"zh": b',"lang":"zh","turns":', "en": b',"lang":"en","turns":'}


@dataclass
class Batch:
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
    lines: int = 0
    careful: int = 0  # lines that took the careful path (not reported; the tests read it)
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
    parsed = parse_output(kind.output)
    reviewed = b"true" if kind.reviewed else b"false"
    tail = b',%b%b%d,"reviewed":%b,"source_line":' % (
        parsed.record_fields,
        _LANG_BYTES[kind.lang],
        kind.turns,
        reviewed,
    )
    return tail, parsed.train_output, parsed.canonical


class _Mark(NamedTuple):
    """What a reviewed MarkResult string yields on the fast path, for English and Chinese text."""

    output: str
    id_suffix: bytes  # b"\x1f" + canonical output: the content id hashes text + this
    train_output: bytes
    tail_en: bytes
    tail_zh: bytes
    kind_en: _Kind
    kind_zh: _Kind


_MARKS: dict[bytes, _Mark | None] = {}
_MISSING = object()


def _mark(mark: bytes) -> _Mark | None:
    """Fill the MarkResult cache (keyed by its JSON text in the line); None (no output, or one that does not
    parse) sends such lines to `careful`."""
    output = mark_output(_decode(mark))[0]
    entry = None
    if output is not None:
        kind_en, kind_zh = _Kind(output, "en", 1, True), _Kind(output, "zh", 1, True)
        try:
            tail_en, train_output, canonical = _record_tail(kind_en)
            tail_zh = _record_tail(kind_zh)[0]
        except GrammarError:
            pass
        else:
            suffix = f"\x1f{canonical}".encode()
            entry = _Mark(output, suffix, train_output, tail_en, tail_zh, kind_en, kind_zh)
    if len(_MARKS) >= _MAX_MARKS:
        _MARKS.clear()  # MarkResult strings with per-line ids would otherwise grow the cache without bound
    _MARKS[mark] = entry
    return entry


# gc=False: these hold only decoded JSON values, never cycles, so the collector need not track them.
class _Data(msgspec.Struct, gc=False):
    instruction: Any = None


class _Result(msgspec.Struct, gc=False):
    MarkResult: msgspec.Raw  # compared and looked up as the bytes of the line: no unescaping per line


class _Label(msgspec.Struct, gc=False):
    results: list[_Result]
    abandonFlag: Any = None


@lru_cache(maxsize=16)
def line_decoder(reviewed_key: str, other_keys: tuple[str, ...]) -> msgspec.json.Decoder:
    """A typed decoder for lines of one labelling task (`label-<id>`, `label-<id>-system`).

    Any top-level key it was not built for (another task's `label-*` key, say), a MarkResult that is not a
    string or a label without results fails the decode, so such lines take the careful path.
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


def _decoder_keys(item: dict[str, Any], current: tuple[str, tuple[str, ...]] | None) -> tuple[str, tuple[str, ...]]:
    """The (reviewed key, other top-level keys) a fast decoder should know after seeing `item`.

    Other keys accumulate (lines may carry optional keys such as abandonRemark), up to a bound.
    """
    reviewed = reviewed_key(item)
    if reviewed is None:
        return current or ("", ())
    others = {key for key in item if not key.startswith("label-") and key not in _DECODED_KEYS}
    if current is not None and current[0] == reviewed:
        others |= set(current[1])
    return reviewed, tuple(sorted(others))[:_MAX_OTHER_KEYS]


def _overridden(output: str, system: _Label) -> bool:
    """`itag_rules._override` for a decoded pre-label whose first MarkResult differs from the reviewed one."""
    for result in system.results:
        system_output = mark_output(_decode(result.MarkResult))[0]
        if system_output is not None:
            return not same_output(output, system_output)
    return True  # no pre-label output: the reviewer supplied one


def _count_kinds(batch: Batch, kinds: list[_Kind]) -> None:
    """Fill the batch's per-language/intent/shape counts from the converted lines' kinds (counted in C)."""
    for kind, count in Counter(kinds).items():
        parsed = parse_output(kind.output)
        batch.languages[kind.lang] = batch.languages.get(kind.lang, 0) + count
        batch.intents[parsed.intent] = batch.intents.get(parsed.intent, 0) + count
        batch.reviewed += count if kind.reviewed else 0
        batch.multi_intent += count if parsed.calls > 1 else 0
        batch.multi_turn += count if kind.turns > 1 else 0


def convert_chunk(first_line: int, chunk: bytes, fast: bool = True) -> Batch:
    """Convert the newline-separated lines of `chunk`, numbered from `first_line` (runs in worker processes).

    One loop with everything in locals: at about a microsecond of Python per line, a function call per line
    would be a measurable share. Counts come from the converted lines' kinds at the end.
    """
    batch = Batch()
    records: list[bytes] = []
    train: list[bytes] = []
    kinds: list[_Kind] = []
    overrides = abandoned = 0
    marks, missing, encode, sha256, han, abandon = _MARKS, _MISSING, _encode, hashlib.sha256, HAN.search, ABANDON
    decode: Any = None
    keys: tuple[str, tuple[str, ...]] | None = None
    view = memoryview(chunk)
    find = chunk.find
    end = len(chunk)
    pos = 3 if first_line == 1 and chunk.startswith(_BOM) else 0
    number = first_line - 1
    if pos == end == 3:  # a manifest holding nothing but a byte order mark: one empty line
        number, batch.empty = first_line, 1
    while pos < end:
        stop = find(b"\n", pos)
        if stop < 0:
            stop = end
        start, pos = pos, stop + 1
        number += 1
        if decode is not None:
            try:
                item = decode(view[start:stop])
            except _DECODE_ERRORS:
                item = None
            label = item.reviewed if item is not None else None
            if label is not None:
                if item.abandonFlag in abandon or label.abandonFlag in abandon:
                    abandoned += 1
                    continue
                data = item.data
                text = data.instruction if data is not None else None
                results = label.results
                if type(text) is str and results and (text := text.strip()):
                    mark = results[0].MarkResult
                    entry = marks.get(key := bytes(mark), missing)
                    if entry is missing:
                        entry = _mark(key)
                    if entry is not None:
                        system = item.system
                        if system is not None and (not system.results or system.results[0].MarkResult != mark):
                            overrides += _overridden(entry.output, system)
                        # detect_lang, inlined: ASCII is English, a leading CJK ideograph settles Chinese
                        if not text.isascii() and ("\u4e00" <= text[0] <= "\u9fff" or han(text) is not None):
                            tail, kind = entry.tail_zh, entry.kind_zh
                        else:
                            tail, kind = entry.tail_en, entry.kind_en
                        text_json = encode(text)
                        record_id = hexlify(sha256(text.encode() + entry.id_suffix).digest()[:8])  # content_id
                        records.append(b'{"id":"r-%b","text":%b%b%d}\n' % (record_id, text_json, tail, number))
                        train.append(b'{"instruction":%b,"output":%b}' % (text_json, entry.train_output))
                        kinds.append(kind)
                        continue
        line = chunk[start:stop]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line or line.isspace():
            batch.empty += 1
            continue
        batch.careful += 1
        try:
            parsed = _decode(line)
        except _DECODE_ERRORS as exc:
            reason = "not_json" if is_utf8(line) else "not_utf8"
            batch.reject(number, reason, line, f"not valid JSON: {exc}" if reason == "not_json" else "")
            continue
        if fast and type(parsed) is dict:
            learnt = _decoder_keys(parsed, keys)
            if learnt != keys and learnt[0]:
                keys = learnt
                decode = line_decoder(*keys).decode
        labelled = careful(parsed)
        if type(labelled) is Excluded:
            if labelled.reason == "abandoned":
                abandoned += 1
            else:
                batch.reject(number, labelled.reason, line, labelled.detail)
            continue
        text, turns, output, reviewed, overridden = labelled
        kind = _Kind(output, "zh" if han(text) else "en", turns, reviewed)
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
    batch.lines = number - first_line + 1
    batch.abandoned = abandoned
    batch.human_overrides = overrides
    batch.converted = len(records)
    batch.records = b"".join(records)  # one blob each: cheap to send back from a worker process
    batch.train = b",\n".join(train)
    return batch


def convert_file_chunk(path: str, offset: int, length: int, first_line: int) -> Batch:
    """`convert_chunk` on a block a worker reads itself from a local manifest (page cache, not a pipe)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        chunk = handle.read(length)
    if len(chunk) != length:
        raise OSError(f"{path}: changed while being converted (short read at byte {offset})")
    return convert_chunk(first_line, chunk)
