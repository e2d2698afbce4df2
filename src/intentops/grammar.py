"""Parse and render the call strings the model answers with: `weather_search(杭州)`, `a();b("x, y")`.

Accepts the forms people type in labelling tools: full-width parentheses, commas and semicolons (（），；), quoted
arguments that contain separators, and surrounding whitespace. Rendering is canonical (ASCII punctuation, quotes only
where needed), so `parse_calls(render_calls(calls)) == calls`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# What a bare (unquoted) argument never holds, and the blanks it holds only between other characters.
SEPARATORS = frozenset("\n,;()\"'\\（），；")
BLANKS = frozenset(" \t")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_QUOTES = {'"': '"', "'": "'", "“": "”", "「": "」"}
_NEEDS_QUOTES = re.compile(r"""[,;()"'\\（），；]|^\s|\s$""")


class GrammarError(ValueError):
    """A call string that does not parse; carries the offending text and why."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"cannot parse call {text!r}: {reason}")
        self.text = text
        self.reason = reason


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[str, ...] = ()

    def __str__(self) -> str:
        return render_call(self)


def parse_calls(text: str) -> list[Call]:
    """Parse one call or several separated by `;` (multi-intent)."""
    if not isinstance(text, str):
        raise GrammarError(str(text), f"expected a string, got {type(text).__name__}")
    source = text.strip()
    if not source:
        raise GrammarError(text, "empty output")
    calls: list[Call] = []
    pos = 0
    while True:
        call, pos = _parse_one(text, source, pos)
        calls.append(call)
        pos = _skip_space(source, pos)
        if pos == len(source):
            return calls
        if source[pos] not in ";；":
            raise GrammarError(text, f"unexpected {source[pos]!r} after {render_call(call)}")
        pos = _skip_space(source, pos + 1)
        if pos == len(source):  # a trailing separator is harmless
            return calls


def parse_call(text: str) -> Call:
    """Parse exactly one call."""
    calls = parse_calls(text)
    if len(calls) != 1:
        raise GrammarError(text, f"expected one call, found {len(calls)}")
    return calls[0]


def render_call(call: Call) -> str:
    return f"{call.name}({','.join(_render_arg(arg) for arg in call.args)})"


def render_calls(calls: list[Call]) -> str:
    return ";".join(render_call(call) for call in calls)


def normalise(text: str) -> str:
    """Canonical form of a call string (raises GrammarError when it does not parse)."""
    return render_calls(parse_calls(text))


def _render_arg(arg: str) -> str:
    if not _NEEDS_QUOTES.search(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _skip_space(source: str, pos: int) -> int:
    while pos < len(source) and source[pos].isspace():
        pos += 1
    return pos


def _parse_one(text: str, source: str, pos: int) -> tuple[Call, int]:
    pos = _skip_space(source, pos)
    match = _NAME.match(source, pos)
    if not match:
        raise GrammarError(text, f"expected a function name at position {pos}")
    name = match.group(0)
    pos = _skip_space(source, match.end())
    if pos >= len(source) or source[pos] not in "(（":
        raise GrammarError(text, f"expected '(' after {name!r}")
    pos += 1
    args: list[str] = []
    pos = _skip_space(source, pos)
    if pos < len(source) and source[pos] in ")）":
        return Call(name, ()), pos + 1
    while True:
        arg, pos = _parse_arg(text, source, pos)
        args.append(arg)
        if pos >= len(source):
            raise GrammarError(text, f"missing ')' to close {name}(")
        if source[pos] in ")）":
            return Call(name, tuple(args)), pos + 1
        pos += 1  # a comma


def _parse_arg(text: str, source: str, pos: int) -> tuple[str, int]:
    pos = _skip_space(source, pos)
    if pos < len(source) and source[pos] in _QUOTES:
        closing = _QUOTES[source[pos]]
        pos += 1
        chars: list[str] = []
        while pos < len(source) and source[pos] != closing:
            if source[pos] == "\\" and pos + 1 < len(source):
                pos += 1
            chars.append(source[pos])
            pos += 1
        if pos >= len(source):
            raise GrammarError(text, "unterminated quoted argument")
        pos = _skip_space(source, pos + 1)
        if pos < len(source) and source[pos] not in ",，)）":
            raise GrammarError(text, f"unexpected {source[pos]!r} after a quoted argument")
        return "".join(chars), pos
    start = pos
    while pos < len(source) and source[pos] not in ",，)）":
        if source[pos] in "(（;；":
            raise GrammarError(text, f"unexpected {source[pos]!r} inside an argument")
        pos += 1
    arg = source[start:pos].strip()
    if not arg:
        raise GrammarError(text, "empty argument")
    return arg, pos
