"""The per-line rules of iTAG conversion: which label wins, what is abandoned, why a line is rejected.

`careful` applies every rule to one decoded line and is the reference the fast path of `itag_chunk` must agree
with (tests/test_itag.py checks the agreement). Parsed MarkResult strings and call outputs are cached: they carry
no per-line ids, so equal labels give equal strings and each distinct one is parsed once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import msgspec

from intentops.grammar import GrammarError, parse_calls, render_calls

REJECT_REASONS: dict[str, str] = {
    "not_utf8": "the line is not valid UTF-8",
    "not_json": "the line is not valid JSON",
    "not_object": "the line is JSON but not an object",
    "missing_instruction": "no data.instruction (nor user turns) with text",
    "missing_output": "no label carries an annotation output",
    "unparseable_output": "the annotation output does not parse as a call string",
}
ABANDON = (1, "1")
_decode = msgspec.json.decode
_encode = msgspec.json.encode
_TURN_KEYS = ("turns", "messages")
_USER_ROLES = ("user", "human")
HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_CJK_END = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]$")


def detect_lang(text: str) -> str:
    """`zh` when the text has any Han character, else `en` (the catalog is bilingual zh + en)."""
    return "zh" if HAN.search(text) else "en"


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


def is_utf8(line: bytes) -> bool:
    """Whether a line that failed to decode is valid UTF-8 (msgspec >= 0.19 reports bad UTF-8 as a DecodeError)."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def is_abandoned(holder: Any) -> bool:
    return type(holder) is dict and holder.get("abandonFlag") in ABANDON


def _first_mark(label: Any) -> Any:
    """The raw MarkResult of a label's first result (equal strings need no parse to compare)."""
    try:
        return label["results"][0]["MarkResult"]
    except (KeyError, IndexError, TypeError):
        return None


def mark_output(mark: Any) -> tuple[str | None, str]:
    """(output, why not) for one MarkResult: the first annotation with a non-empty `labels.output`."""
    if type(mark) is str:
        return mark_text_output(mark)
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
def mark_text_output(mark: str) -> tuple[str | None, str]:
    """MarkResult strings carry no per-line ids, so equal labels give equal strings: parse each once."""
    try:
        parsed = _decode(mark)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None, "MarkResult is not valid JSON"
    return mark_output(parsed) if type(parsed) is not str else (None, "MarkResult is a JSON string")


def label_output(label: Any) -> tuple[str | None, str]:
    """(output, why not) for one `label-*` object: the first result with an annotation output."""
    results = label.get("results") if type(label) is dict else None
    if type(results) is not list or not results:
        return None, "the label has no results"
    why = ""
    for result in results:
        output, why = mark_output(result.get("MarkResult") if type(result) is dict else None)
        if output is not None:
            return output, ""
    return None, why


def reviewed_key(item: dict[str, Any]) -> str | None:
    """The first `label-*` key without the `-system` suffix: the reviewed (human) label."""
    for key in item:
        if key.startswith("label-") and not key.endswith("-system"):
            return key
    return None


def _pick_labels(item: dict[str, Any]) -> tuple[Any, Any]:
    """(reviewed, system pre-label): `label-<id>` and its `label-<id>-system` twin, else whichever exists."""
    reviewed = reviewed_key(item)
    system_key = f"{reviewed}-system" if reviewed is not None else None
    if system_key not in item:
        system_key = next((key for key in item if key.startswith("label-") and key.endswith("-system")), None)
    return (item[reviewed] if reviewed else None), (item[system_key] if system_key else None)


@dataclass(frozen=True)
class Output:
    """A parsed label output with its JSON fragments serialised once (outputs repeat heavily)."""

    canonical: str
    intent: str
    calls: int
    record_fields: bytes
    train_output: bytes


@lru_cache(maxsize=1 << 14)
def parse_output(output: str) -> Output:
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
    return Output(canonical, calls[0].name, len(calls), fields[1:-1], _encode(canonical))


def same_output(reviewed: str, system: str | None) -> bool:
    if system is None:
        return False
    try:
        return parse_output(reviewed).canonical == parse_output(system).canonical
    except GrammarError:
        return reviewed.strip() == system.strip()


class Labelled(NamedTuple):
    """What a usable line contributes: the utterance, its user turns and the winning label's output."""

    text: str
    turns: int
    output: str
    reviewed: bool
    overridden: bool


class Excluded(NamedTuple):
    """Why a line contributes nothing: `abandoned` or a reject reason id, with a human-readable detail."""

    reason: str
    detail: str = ""


def _override(output: str, reviewed: Any, system: Any) -> bool:
    """Whether the reviewer changed the pre-label (identical MarkResult strings need no parsing)."""
    if system is None or _first_mark(system) == _first_mark(reviewed):
        return False
    return not same_output(output, label_output(system)[0])


def careful(item: Any) -> Labelled | Excluded:
    """Apply every rule to one parsed line, in order: abandoned, instruction, label output."""
    if type(item) is not dict:
        return Excluded("not_object", f"JSON {type(item).__name__}, expected an object")
    reviewed, system = _pick_labels(item)
    label = reviewed if reviewed is not None else system
    if is_abandoned(item) or is_abandoned(label):
        return Excluded("abandoned")
    text, turns = _instruction(item.get("data"))
    if not text:
        return Excluded("missing_instruction")
    if label is None:
        return Excluded("missing_output", "no label-* key")
    output, why = label_output(label)
    if output is None:
        return Excluded("missing_output", why)
    overridden = reviewed is not None and _override(output, reviewed, system)
    return Labelled(text, turns, output, reviewed is not None, overridden)
