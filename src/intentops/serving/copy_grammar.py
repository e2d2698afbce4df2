"""The vLLM `structured_outputs` grammar for one request when argument values must be spans of its utterance.

The transformers path enforces this with `evaluation.copying.CopyingGrammar`; a regex of every span would repeat
O(n^2) alternatives for each argument of each label, so the server gets an EBNF grammar (xgrammar, vLLM's default
structured-output backend) in which each argument refers to one rule per span start: `s3 ::= "c3" s4?` reads
"the character at 3, then optionally the rest from 4", O(n) rules for an n-character utterance. Labels of the same
arity share one argument list. The language is the catalog call grammar's (`client.structured_outputs`) with every
bare or double-quoted value a non-empty span; a quoted value writes `"` and `\\` escaped and may escape any other
character but a newline, as the automaton reads it.
"""

from __future__ import annotations

from collections import defaultdict

from intentops.grammar import BLANKS, SEPARATORS
from intentops.prompting import PromptBuilder

_ESCAPED = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _literal(text: str) -> str:
    """An EBNF string literal."""
    return '"' + "".join(_ESCAPED.get(ch, ch) for ch in text) + '"'


def _bare_rules(source: str) -> tuple[list[str], list[str]]:
    """Rules `bI` (an unquoted span starting at I) and the starts a bare value may have.

    A bare value holds no separator and neither starts nor ends with a blank, as `grammar.render_call` writes it.
    """
    n = len(source)
    ends_well = [False] * (n + 1)  # from i, a bare run can continue and end on a non-blank
    for i in reversed(range(n)):
        ch = source[i]
        if ch in SEPARATORS:
            continue
        nxt = i + 1 < n and ends_well[i + 1]
        ends_well[i] = nxt if ch in BLANKS else True
    rules = []
    for i, ch in enumerate(source):
        if not ends_well[i]:
            continue
        more = i + 1 < n and ends_well[i + 1]
        if ch in BLANKS:
            rules.append(f"b{i} ::= {_literal(ch)} b{i + 1}")
        else:
            rules.append(f"b{i} ::= {_literal(ch)}" + (f" b{i + 1}?" if more else ""))
    starts = [f"b{i}" for i, ch in enumerate(source) if ends_well[i] and ch not in BLANKS]
    return rules, starts


def _quoted_rules(source: str) -> list[str]:
    """Rules `qI`: the characters of a double-quoted span from I, each as written (escaped where it must be)."""
    rules = []
    for i, ch in enumerate(source):
        if ch in '"\\':
            written = _literal("\\" + ch)
        elif ch == "\n":
            written = _literal(ch)
        else:
            written = f"({_literal(ch)} | {_literal(chr(92) + ch)})"
        rules.append(f"q{i} ::= {written}" + (f" q{i + 1}?" if i + 1 < len(source) else ""))
    return rules


def _argument_list(required: int, total: int) -> str:
    """Positional arguments: the first `required` always present, each later one only after its predecessor."""
    rest = ""
    for index in reversed(range(total)):
        piece = ('"," ' if index else "") + "arg" + (f" {rest}" if rest else "")
        rest = f"({piece})?" if index >= required else piece
    return rest


def copied_arguments_grammar(builder: PromptBuilder, source: str, answer_tokens: dict[str, str], max_calls: int) -> str:
    """The EBNF grammar for answers to `source`; `answer_tokens` maps each label to what the model writes for it."""
    if not source:
        raise ValueError("copied arguments need a non-empty utterance")
    by_arity: dict[tuple[int, int], list[str]] = defaultdict(list)
    for label in builder.labels:
        intent = builder.catalog.get(label)
        arity = (len(intent.required_parameters), len(intent.parameters)) if intent else (0, 0)
        by_arity[arity].append(answer_tokens[label])
    calls = []
    for (required, total), names in sorted(by_arity.items()):
        arguments = _argument_list(required, total)
        names_rule = " | ".join(_literal(name) for name in names)
        calls.append(f'({names_rule}) "("' + (f" {arguments}" if arguments else "") + ' ")"')
    bare, starts = _bare_rules(source)
    value = [f'"\\"" ({" | ".join(f"q{i}" for i in range(len(source)))}) "\\""']
    if starts:
        value.append("(" + " | ".join(starts) + ")")
    more = ""
    for _ in range(max_calls - 1):
        more = f'(";" call{f" {more}" if more else ""})?'
    answer = "call" + (f" {more}" if more else "")
    template = builder.template
    if template is not None:
        stop = _ESCAPED.get(template.middle[0], template.middle[0])
        answer = (
            f"{_literal(template.opening)} [^{stop}]* {_literal(template.middle)} {answer} {_literal(template.closing)}"
        )
    rules = [
        f"root ::= {answer}",
        "call ::= " + " | ".join(calls),
        "arg ::= " + " | ".join(value),
        *bare,
        *_quoted_rules(source),
    ]
    return "\n".join(rules) + "\n"
