"""Constrained decoding in which every argument value is a span of the utterance, on top of the catalog grammar.

Extraction-style parameters (a city, a contact, an order number) are words of what the user said. A small model
that learned which value goes with which phrasing writes a value it saw in training instead (`Ring David a call` ->
`call_contact(Olivia)`, bench/README.md "copied arguments"); decoding that may only copy cannot. `CopyingGrammar`
wraps `constrained.TokenGrammar`: inside an argument value it keeps the set of byte offsets of the utterance's UTF-8
where the value written so far can continue, and a byte no occurrence continues, or an empty value, leaves the
language. Quoted values are compared unescaped (`\\"` writes `"`). Outside values it is the catalog grammar.

The server enforces the same language (`intentops.serving.copy_grammar`), so evaluation, the local pyfunc and vLLM
decode alike. Only for catalogs whose arguments are always spans of the utterance: `data` reports the share that is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from intentops.evaluation.constrained import ByteState, TokenGrammar, allowed_tokens, state_after, walk_bytes
from intentops.grammar import BLANKS, SEPARATORS

if TYPE_CHECKING:
    import torch

# (catalog grammar state, utterance bytes, offsets where the value written so far ends; None outside a value or
# before its first byte)
CopyState = tuple[ByteState, bytes, frozenset[int] | None]

_VALUE = frozenset({"bare", "blank"})
_QUOTED_VALUE = frozenset({"quoted", "escape"})
# Options of states outside the argument list are the catalog grammar's; only tokens that can open the argument
# list, and so reach into a value within the same token, are checked against the utterance.
_OPENS_ARGUMENTS = ord("(")
# Bound on cached option sets (and per-utterance facts): states depend on the utterance, so what is cached serves
# one request and may be dropped.
_CACHE_LIMIT = 50_000


def _is_arg(char_state: tuple[Any, ...]) -> bool:
    return char_state[0] == "arg"


def _writes_value(before: tuple[Any, ...], after: tuple[Any, ...], pending: bytes) -> bool:
    """Whether the byte taking `before` to `after` is part of an argument's value (not a quote, escape or separator)."""
    if pending:  # inside a multi-byte character, which only arguments and free reasoning hold
        return _is_arg(before)
    if not _is_arg(after):
        return False
    return after[5] in _VALUE or (after[5] == "quoted" and _is_arg(before) and before[5] in _QUOTED_VALUE)


class CopyingGrammar:
    """`TokenGrammar`'s language with every argument value a non-empty span of the row's utterance."""

    def __init__(self, base: TokenGrammar) -> None:
        self.base = base
        self.eos_ids = base.eos_ids
        self.trie = base.trie
        self.vocab_size = base.vocab_size
        self._opening_ids = sorted(i for i, data in base.bytes_of.items() if _OPENS_ARGUMENTS in data)
        self._single_tokens = {data for data in base.bytes_of.values()}
        self._most_arguments = max(total for _, total in base.grammar.labels.values())
        self._char_cost: dict[bytes, int] = {}
        self._goes_on: dict[bytes, frozenset[int]] = {}
        self._options: dict[CopyState, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def start(self) -> CopyState:
        raise ValueError("copied arguments need each row's utterance: use start_for(source)")

    def start_for(self, source: str) -> CopyState:
        return (self.base.start, source.encode("utf-8"), None)

    def state_after(self, text: str, source: str) -> CopyState:
        return state_after(self, text, source)

    def step_byte(self, state: CopyState, byte: int) -> CopyState | None:
        base_state, source, offsets = state
        nxt = self.base.step_byte(base_state, byte)
        if nxt is None:
            return None
        before, after = base_state[0], nxt[0]
        if _writes_value(before, after, nxt[1]):
            candidates = offsets if offsets is not None else range(len(source))
            ends = frozenset(p + 1 for p in candidates if p < len(source) and source[p] == byte)
            if not nxt[1] and after[5] == "blank":  # a bare value cannot end on a blank: keep spans that go on
                ends = ends & self._bare_goes_on(source)
            return (nxt, source, ends) if ends else None
        if offsets is None and _is_arg(before) and before[5] == "quoted" and _is_arg(after) and after[5] == "closed":
            return None  # "" copies nothing
        if _is_arg(after) and after[5] == "escape":  # an escape must be followed by a character of the span
            candidates = offsets if offsets is not None else range(len(source))
            if not any(p < len(source) and source[p] != 0x0A for p in candidates):
                return None
            return (nxt, source, offsets)
        return (nxt, source, None)

    def advance(self, state: CopyState, token_id: int) -> CopyState | None:
        return walk_bytes(self, state, self.base.bytes_of.get(int(token_id)))

    def accepting(self, state: CopyState) -> bool:
        return self.base.accepting(state[0])

    def min_close(self, state: CopyState) -> int:
        """The catalog grammar's count (one token per argument character), plus what copying adds: a value
        character of this utterance may need several tokens, and an opened quote needs one character before it
        closes."""
        base_state, source, offsets = state
        extra = (self._cheapest_character(source) - 1) * self._most_arguments
        char_state = base_state[0]
        if offsets is None and _is_arg(char_state) and char_state[5] == "quoted":
            extra += 1
        return self.base.min_close(base_state) + extra

    def options(self, state: CopyState) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids allowed after `state`, fewest tokens to acceptance after each), as `TokenGrammar.options`."""
        cached = self._options.get(state)
        if cached is not None:
            return cached
        if len(self._options) >= _CACHE_LIMIT:  # a server answers unboundedly many utterances
            for per_state_or_source in (self._options, self._char_cost, self._goes_on):
                per_state_or_source.clear()
        base_state = state[0]
        if _is_arg(base_state[0]) or base_state[1]:
            result = allowed_tokens(self, state)
        else:
            result = self._outside_arguments(state)
        self._options[state] = result
        return result

    def _outside_arguments(self, state: CopyState) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        ids, distances = self.base.options(state[0])
        extra = self.min_close(state) - self.base.min_close(state[0])
        distances = distances + extra
        opening = torch.isin(ids, torch.tensor(self._opening_ids, dtype=torch.long))
        if not bool(opening.any()):
            return ids, distances
        keep = ~opening
        checked_ids: list[int] = []
        checked_distances: list[int] = []
        for token_id in ids[opening].tolist():
            nxt = self.advance(state, token_id)
            if nxt is not None:
                checked_ids.append(token_id)
                checked_distances.append(self.min_close(nxt))
        return (
            torch.cat([ids[keep], torch.tensor(checked_ids, dtype=torch.long)]),
            torch.cat([distances[keep], torch.tensor(checked_distances, dtype=torch.long)]),
        )

    def _bare_goes_on(self, source: bytes) -> frozenset[int]:
        """Byte offsets from which the utterance continues with blanks and then a character a bare value may end
        on: where a bare value that has just written a blank can still be completed."""
        cached = self._goes_on.get(source)
        if cached is None:
            text = source.decode("utf-8")
            starts, offset = [], 0
            for ch in text:
                starts.append(offset)
                offset += len(ch.encode("utf-8"))
            found: set[int] = set()
            ends_well = False  # from the next character on
            for ch, start in zip(reversed(text), reversed(starts), strict=True):
                ends_well = False if ch in SEPARATORS else (ends_well if ch in BLANKS else True)
                if ends_well:
                    found.add(start)
            cached = self._goes_on[source] = frozenset(found)
        return cached

    def _cheapest_character(self, source: bytes) -> int:
        """Fewest tokens that write one character of the utterance (1 when any character is a token of its own)."""
        cost = self._char_cost.get(source)
        if cost is None:
            text = source.decode("utf-8")
            cost = min((1 if ch.encode() in self._single_tokens else len(ch.encode()) for ch in text), default=1)
            self._char_cost[source] = cost
        return cost
