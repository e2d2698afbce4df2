"""Argument substitution: training records whose arguments must be read from the utterance, not recalled.

A small model trained on a few hundred phrasings learns to answer each phrasing with the argument it saw next to it
in training (on the bundled example: 0.94 parameter accuracy on the training split, 0.46 on the test split, with
wrong arguments that are other training values, e.g. `call_contact(Olivia)` for "Ring David a call"). A substituted
copy of a record keeps its phrasing and swaps every argument that appears verbatim in the utterance for another value
the same parameter of the same intent takes elsewhere in the training split (or, with a shared pool, any argument
of any intent), in the same script (Chinese, digits, other), in the text and in the answer alike; `similar_length`
draws from the shared pool only values within one character of the original's length where there are any, so a
two-character city is not swapped for a sentence-long message and the phrasing keeps saying where a value of its kind
sits. The phrasing then no longer predicts the argument;
only the words of the utterance do, which is what the prompt asks for ("Copy argument values from the user's
words"). Records without such arguments get no copies; the originals are always kept.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from intentops.grammar import Call, GrammarError, parse_calls, render_calls

log = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")

PoolKey = tuple[str, int, str]


def _calls(record: dict[str, Any]) -> list[Call] | None:
    try:
        return parse_calls(record["output"])
    except (GrammarError, KeyError, TypeError):
        return None


def script(value: str) -> str:
    """What a value is written in: "zh" (any Chinese character), "digits" (digits only) or "latin" (the rest)."""
    if _CJK.search(value):
        return "zh"
    return "digits" if value.isdigit() else "latin"


def _key(call: Call, position: int, value: str, shared: bool) -> PoolKey:
    return ("", -1, script(value)) if shared else (call.name, position, script(value))


def value_pools(records: Sequence[dict[str, Any]], shared: bool = False) -> dict[PoolKey, list[str]]:
    """Distinct argument values that appear verbatim in their utterance, by (intent, argument position, script).

    `shared`: one pool per script over every intent and position (more values to copy, less plausible sentences).
    """
    pools: dict[PoolKey, set[str]] = {}
    for record in records:
        for call in _calls(record) or []:
            for position, value in enumerate(call.args):
                if value.strip() and value in record["text"]:
                    pools.setdefault(_key(call, position, value, shared), set()).add(value)
    return {key: sorted(values) for key, values in pools.items()}


def _spans(text: str, calls: list[Call]) -> list[tuple[int, int, int, int]] | None:
    """(start, end, call index, arg position) of every argument found exactly once in `text`, without overlaps."""
    spans = []
    for index, call in enumerate(calls):
        for position, value in enumerate(call.args):
            if value.strip() and text.count(value) == 1:
                start = text.index(value)
                spans.append((start, start + len(value), index, position))
    spans.sort()
    if any(prev[1] > nxt[0] for prev, nxt in pairwise(spans)):
        return None  # one argument inside another (e.g. "7" and "7 am"): leave the record alone
    return spans


def substitute(
    record: dict[str, Any],
    pools: dict[PoolKey, list[str]],
    rng: random.Random,
    shared: bool = False,
    similar_length: bool = False,
) -> dict[str, Any] | None:
    """A copy of `record` with each argument found once in its text replaced by another pool value; None if none."""
    calls = _calls(record)
    text = record["text"]
    spans = _spans(text, calls) if calls else None
    if not calls or not spans:
        return None
    args = [list(call.args) for call in calls]
    pieces, cursor, changed = [], 0, False
    for start, end, index, position in spans:
        value = args[index][position]
        choices = [
            v for v in pools.get(_key(calls[index], position, value, shared), []) if v != value and v not in text
        ]
        if similar_length:
            choices = [v for v in choices if abs(len(v) - len(value)) <= 1] or choices
        new = rng.choice(choices) if choices else value
        changed |= new != value
        args[index][position] = new
        pieces += [text[cursor:start], new]
        cursor = end
    if not changed:
        return None
    new_calls = [Call(call.name, tuple(values)) for call, values in zip(calls, args, strict=True)]
    new_text = "".join(pieces) + text[cursor:]
    return {
        **record,
        "id": f"{record.get('id', '')}~sub",
        "text": new_text,
        "output": render_calls(new_calls),
        "params": list(new_calls[0].args),
        "calls": [{"name": c.name, "args": list(c.args)} for c in new_calls],
    }


def substituted_copies(
    records: Sequence[dict[str, Any]], copies: int, seed: int, shared: bool = False, similar_length: bool = False
) -> list[dict[str, Any]]:
    """Up to `copies` argument-substituted copies of every record (drawn reproducibly from `seed`; `value_pools`)."""
    if copies <= 0:
        return []
    pools = value_pools(records, shared)
    rng = random.Random(seed)
    out = []
    for record in records:
        for copy in range(copies):
            new = substitute(record, pools, rng, shared, similar_length)
            if new is not None:
                out.append({**new, "id": f"{new['id']}{copy}"})
    log.info("%d argument-substituted copies of %d training records added", len(out), len(records))
    return out
