"""Convert a PAI iTAG export manifest into IntentOps records, accounting for every line.

The usual throwaway script (seed 002) loads the whole file, takes the first `label-*` key it meets (often the machine
pre-label), prints and drops anything odd and dumps one big list at the end. Here the manifest is streamed in chunks
(local or s3://), the reviewed label `label-<id>` wins over the pre-label `label-<id>-system`, every excluded line is
written to rejects.jsonl with a reason id, and all outputs are written as they go into a temporary folder that only
becomes DIR when the run completes.

Manifest line (one JSON object per line):

    {"data": {"instruction": "我想聽音樂"},
     "label-194...-system": {"results": [{"MarkResult": "{\\"annotations\\": [{\\"labels\\": {\\"output\\": ...}}]}"}],
                             "abandonFlag": 0},
     "label-194...": {"results": [...]},
     "abandonFlag": 0}
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import orjson
from tqdm import tqdm

from intentops.grammar import Call, GrammarError, parse_calls, render_calls
from intentops.io import atomic_path, write_json
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
_BOM = b"\xef\xbb\xbf"
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
                "records.jsonl": self.converted,
                "train.json": self.converted,
                "rejects.jsonl": self.rejected_total,
            },
        }


def detect_lang(text: str) -> str:
    """`zh` when the text has any Han character, else `en` (the catalog is bilingual zh + en)."""
    return "zh" if _HAN.search(text) else "en"


def join_turns(turns: list[str]) -> str:
    """Concatenate user turns as seed 002 does (`我想聽音樂。給我放個X的音樂吧。`); a space separates Latin-script turns."""
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
    if not isinstance(data, dict):
        return "", 0
    value = data.get("instruction")
    if value is None:
        value = next((data[key] for key in _TURN_KEYS if isinstance(data.get(key), list)), None)
    if isinstance(value, str):
        return value.strip(), 1
    if isinstance(value, list):
        turns = [turn for turn in _user_turns(value) if turn.strip()]
        return join_turns(turns), len(turns)
    return "", 0


def _first_mark(label: Any) -> Any:
    """The raw MarkResult of a label's first result (compared before parsing: equal strings need no parse)."""
    if isinstance(label, dict):
        results = label.get("results")
        if isinstance(results, list) and results and isinstance(results[0], dict):
            return results[0].get("MarkResult")
    return None


def _label_output(label: Any) -> tuple[str | None, str]:
    """(output, why not) for one `label-*` object: the first result whose annotation has a non-empty output."""
    if not isinstance(label, dict):
        return None, "label is not an object"
    results = label.get("results")
    if not isinstance(results, list) or not results:
        return None, "label has no results"
    why = "no annotation with labels.output"
    for result in results:
        mark = result.get("MarkResult") if isinstance(result, dict) else None
        if isinstance(mark, str):
            try:
                mark = orjson.loads(mark)
            except orjson.JSONDecodeError:
                why = "MarkResult is not valid JSON"
                continue
        annotations = mark.get("annotations") if isinstance(mark, dict) else None
        for annotation in annotations if isinstance(annotations, list) else ():
            labels = annotation.get("labels") if isinstance(annotation, dict) else None
            output = labels.get("output") if isinstance(labels, dict) else None
            if isinstance(output, str) and output.strip():
                return output, ""
            if output is not None and not isinstance(output, str):
                why = f"labels.output is a {type(output).__name__}, not a string"
    return None, why


def _pick_labels(line: dict[str, Any]) -> tuple[Any, Any]:
    """(reviewed label, system pre-label): `label-<id>` and its `label-<id>-system` twin, else whichever exists."""
    reviewed_key = system_key = None
    for key in line:
        if key.startswith("label-"):
            if key.endswith("-system"):
                system_key = system_key or key
            elif reviewed_key is None:
                reviewed_key = key
    if reviewed_key is not None and f"{reviewed_key}-system" in line:
        system_key = f"{reviewed_key}-system"
    return (line[reviewed_key] if reviewed_key else None), (line[system_key] if system_key else None)


def _is_abandoned(holder: Any) -> bool:
    return isinstance(holder, dict) and holder.get("abandonFlag") in (1, "1")


@lru_cache(maxsize=1 << 16)
def _canonical(output: str) -> tuple[str, tuple[Call, ...]]:
    """Canonical call string and calls; cached because labelled outputs repeat heavily (`play_music()`)."""
    calls = parse_calls(output)
    return render_calls(calls), tuple(calls)


def _same_output(reviewed: str, system: str | None) -> bool:
    if system is None:
        return False
    try:
        return _canonical(reviewed)[0] == _canonical(system)[0]
    except GrammarError:
        return reviewed.strip() == system.strip()


def _lines(stream: IO[bytes], digest: Any, progress: tqdm) -> Iterator[bytes]:
    """Split a binary stream into lines in large chunks, hashing the bytes on the way."""
    rest = b""
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        progress.update(len(chunk))
        pieces = (rest + chunk).split(b"\n")
        rest = pieces.pop()
        yield from pieces
    if rest:
        yield rest


class _Writer:
    """The four outputs, written line by line into the temporary folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.records = open(folder / "records.jsonl", "wb", buffering=1 << 20)  # noqa: SIM115
        self.rejects = open(folder / "rejects.jsonl", "wb", buffering=1 << 20)  # noqa: SIM115
        self.train = open(folder / "train.json", "wb", buffering=1 << 20)  # noqa: SIM115
        self.train.write(b"[")
        self._train_separator = b"\n"

    def record(self, record: dict[str, Any]) -> None:
        self.records.write(orjson.dumps(record))
        self.records.write(b"\n")
        self.train.write(self._train_separator)
        self.train.write(orjson.dumps({"instruction": record["text"], "output": record["output"]}))
        self._train_separator = b",\n"

    def reject(self, line: int, reason: str, raw: bytes, detail: str) -> None:
        text = raw.decode("utf-8", "replace")
        row = {"line": line, "reason": reason, "detail": detail, "raw": text[:RAW_CHARS]}
        if len(text) > RAW_CHARS:
            row["raw_chars"] = len(text)
        self.rejects.write(orjson.dumps(row))
        self.rejects.write(b"\n")

    def close(self) -> None:
        self.train.write(b"\n]\n")
        for handle in (self.records, self.rejects, self.train):
            handle.close()


def convert_manifest(
    manifest_uri: str | Path, out_dir: str | Path, max_reject_rate: float = 0.05
) -> ConvertReport:
    """Stream an iTAG manifest (local or s3://) into records.jsonl, train.json, rejects.jsonl and report.json.

    Memory stays flat whatever the manifest length. The report is always written, also when the reject rate is above
    `max_reject_rate` (check `report.passed`, or call `report.raise_for_status()`), so nothing is lost.
    """
    uri = str(manifest_uri)
    size = None if is_s3(uri) else Path(uri).stat().st_size if Path(uri).is_file() else None
    digest = hashlib.sha256()
    rejected: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    intents: Counter[str] = Counter()
    report = ConvertReport(uri, "", 0, str(out_dir), max_reject_rate)
    started = time.perf_counter()
    loads = orjson.loads
    with (
        atomic_path(out_dir) as tmp,
        open_uri(uri, "rb") as stream,
        tqdm(total=size, unit="B", unit_scale=True, desc="convert-itag", disable=None) as progress,
    ):
        writer = _Writer(tmp)

        def reject(line: int, reason: str, raw: bytes, detail: str = "") -> None:
            rejected[reason] += 1
            writer.reject(line, reason, raw, detail or REJECT_REASONS[reason])

        number = 0
        for number, line in enumerate(_lines(stream, digest, progress), start=1):
            raw = line[3:] if number == 1 and line.startswith(_BOM) else line
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw.strip():
                report.empty_lines += 1
                continue
            try:
                item = loads(raw)
            except orjson.JSONDecodeError as exc:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    reject(number, "not_utf8", raw)
                else:
                    reject(number, "not_json", raw, f"not valid JSON: {exc}")
                continue
            if not isinstance(item, dict):
                reject(number, "not_object", raw, f"JSON {type(item).__name__}, expected an object")
                continue
            reviewed, system = _pick_labels(item)
            label = reviewed if reviewed is not None else system
            if _is_abandoned(item) or _is_abandoned(label):
                report.abandoned += 1
                continue
            text, turns = _instruction(item.get("data"))
            if not text:
                reject(number, "missing_instruction", raw)
                continue
            output, why = _label_output(label) if label is not None else (None, "no label-* key")
            if output is None:
                reject(number, "missing_output", raw, why)
                continue
            try:
                canonical, calls = _canonical(output)
            except GrammarError as exc:
                reject(number, "unparseable_output", raw, exc.reason)
                continue
            if reviewed is not None:
                report.reviewed += 1
                if system is not None and _first_mark(system) != _first_mark(reviewed):
                    system_output, _ = _label_output(system)
                    report.human_overrides += not _same_output(output, system_output)
            else:
                report.system_only += 1
            lang = detect_lang(text)
            first = calls[0]
            writer.record(
                {
                    "id": f"itag-{number}",
                    "text": text,
                    "output": canonical,
                    "intent": first.name,
                    "params": list(first.args),
                    "calls": [{"name": call.name, "args": list(call.args)} for call in calls],
                    "lang": lang,
                    "turns": turns,
                    "reviewed": reviewed is not None,
                    "source_line": number,
                }
            )
            report.converted += 1
            report.multi_intent += len(calls) > 1
            report.multi_turn += turns > 1
            languages[lang] += 1
            intents[first.name] += 1
        writer.close()
        report.total_lines = number
        report.manifest_sha256 = digest.hexdigest()
        report.manifest_bytes = progress.n
        report.rejected = dict(sorted(rejected.items()))
        report.languages = dict(sorted(languages.items()))
        report.intents = dict(sorted(intents.items()))
        report.seconds = round(time.perf_counter() - started, 3)
        write_json(tmp / "report.json", report.to_dict())
    (log.info if report.passed else log.error)("convert-itag %s -> %s: %s", uri, out_dir, report.message)
    return report
