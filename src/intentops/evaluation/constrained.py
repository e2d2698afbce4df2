"""Constrained decoding on the transformers path: only calls the catalog allows, as vLLM structured outputs serve.

The server's constraint (`intentops.serving.client.structured_outputs`) is a regex: one to `MAX_CALLS` calls joined by
`;`, each a catalog label with its number of arguments (required ones always, optional ones in order), arguments bare
or double-quoted, wrapped in the builder's thought template in thought mode (`Thought:...`, `Action: calls`,
`Finish!` lines, or `<think>...</think><answer>calls</answer>`; the reasoning may be empty and never holds the
character that starts the template's middle, a newline or `<`). `CallGrammar` is that language as a character
automaton; `TokenGrammar` lifts it to the tokenizer's byte-level tokens (a multi-byte character split
over tokens is tracked byte by byte), and `CallGrammarProcessor` masks every token that would leave the language.

Each step also keeps only tokens after which the answer can still be closed within the remaining token budget, so an
answer is a complete valid call whenever `max_new_tokens` is at least the shortest call; vLLM would cut such an
answer off instead. Allowed-token sets are computed once per grammar state by walking a trie of the vocabulary's
byte strings, pruned where the automaton rejects; the arguments' states do not depend on the label, so a catalog of
any size has few distinct states.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from transformers import LogitsProcessor

from intentops.catalog import UNCERTAIN_INTENT
from intentops.grammar import BLANKS, SEPARATORS
from intentops.prompting import PromptBuilder, ThoughtTemplate
from intentops.serving.client import MAX_CALLS

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

_NOT_BARE = SEPARATORS | BLANKS
_BLANKS = BLANKS
# Characters that can take the automaton towards acceptance from any state: closing punctuation, a bare argument,
# the literals of the thought template and every label character. Shortest closings are searched over these.
_CLOSING_CHARS = '()",;a'

# Where the grammar takes characters beyond ASCII (arguments, reasoning) it takes all but a few separators; this one
# stands for them when a character is still arriving byte by byte.
_GENERIC_CHARACTER = "中"

State = tuple[Any, ...]


class CallGrammar:
    """The catalog's call language as a deterministic character automaton (states are hashable tuples).

    States: ("lit", text, pos, next) emits a literal; ("think",) the free reasoning text; ("name", n, prefix)
    a label being written in call n; ("arg", n, required_left, total_left, first, sub) inside the argument list, where
    sub is open/bare/blank/quoted/escape/closed; ("end", n) after call n's ')'; ("done",) after the thought template.
    """

    def __init__(
        self,
        labels: dict[str, tuple[int, int]],
        *,
        template: ThoughtTemplate | None = None,
        max_calls: int = MAX_CALLS,
    ):
        if not labels:
            raise ValueError("the call grammar needs at least one label")
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {max_calls}")
        self.labels = dict(labels)  # label token as written -> (required, total) arguments
        self.template = template
        self.thought = template is not None
        self.max_calls = max_calls
        self.prefixes = {label[:k] for label in self.labels for k in range(len(label) + 1)}
        literals = template.opening + template.middle + template.closing if template else ""
        self.alphabet = sorted(set(_CLOSING_CHARS + literals + "".join(self.labels)))
        self.min_close = cache(self._min_close)

    @classmethod
    def for_builder(cls, builder: PromptBuilder, max_calls: int = MAX_CALLS) -> CallGrammar:
        """The grammar serving enforces for answers to this builder's prompt."""
        answer_builder = PromptBuilder(builder.catalog, builder.cfg.model_copy(update={"output_mode": "answer"}))
        labels = {}
        for name, continuation in answer_builder.label_continuations().items():
            intent = None if name == UNCERTAIN_INTENT else builder.catalog.get(name)
            arity = (len(intent.required_parameters), len(intent.parameters)) if intent else (0, 0)
            labels[continuation.removesuffix("(")] = arity
        return cls(labels, template=builder.template, max_calls=max_calls)

    @property
    def start(self) -> State:
        first_call = ("name", 0, "")
        return ("lit", self.template.opening, 0, ("think",)) if self.template else first_call

    def after_label(self, label: str) -> State:
        """The state once `label` (as written) has been emitted as the first call's name."""
        if label not in self.labels:
            raise KeyError(f"{label!r} is not a label of this grammar")
        return ("name", 0, label)

    def accepting(self, state: State) -> bool:
        return state == ("done",) or (state[0] == "end" and not self.thought)

    def step(self, state: State, ch: str) -> State | None:
        """The state after one character, or None when the character leaves the language."""
        kind = state[0]
        if kind == "lit":
            _, text, pos, after = state
            if ch != text[pos]:
                return None
            return after if pos + 1 == len(text) else ("lit", text, pos + 1, after)
        if kind == "think":
            assert self.template is not None
            middle = self.template.middle
            return ("lit", middle, 1, ("name", 0, "")) if ch == middle[0] else state
        if kind == "name":
            _, n, prefix = state
            if ch == "(" and prefix in self.labels:
                required, total = self.labels[prefix]
                return ("arg", n, required, total, True, "open")
            return ("name", n, prefix + ch) if prefix + ch in self.prefixes else None
        if kind == "arg":
            return self._step_arg(state, ch)
        if kind == "end":
            n = state[1]
            if ch == ";" and n + 1 < self.max_calls:
                return ("name", n + 1, "")
            if self.template is not None and ch == self.template.closing[0]:
                return ("lit", self.template.closing, 1, ("done",))
        return None

    def _step_arg(self, state: State, ch: str) -> State | None:
        _, n, required, total, first, sub = state

        def to(new_sub: str) -> State:
            return ("arg", n, required, total, first, new_sub)

        if sub == "quoted":
            return to("closed") if ch == '"' else to("escape") if ch == "\\" else to("quoted")
        if sub == "escape":
            return to("quoted") if ch != "\n" else None
        if sub == "open":
            if ch == ")" and first and required == 0:
                return ("end", n)
            if total == 0:
                return None
            if ch == '"':
                return to("quoted")
            return to("bare") if ch not in _NOT_BARE else None
        if sub == "blank":
            return to("blank") if ch in _BLANKS else to("bare") if ch not in _NOT_BARE else None
        # bare or closed: the argument may end here
        if ch == ")" and required <= 1:
            return ("end", n)
        if ch == "," and total > 1:
            return ("arg", n, max(required - 1, 0), total - 1, False, "open")
        if sub == "bare":
            return to("blank") if ch in _BLANKS else to("bare") if ch not in _NOT_BARE else None
        return None

    def _min_close(self, state: State) -> int:
        """Fewest characters that take `state` to acceptance (breadth-first over the closing alphabet)."""
        seen, queue = {state}, deque([(state, 0)])
        while queue:
            current, distance = queue.popleft()
            if self.accepting(current):
                return distance
            for ch in self.alphabet:
                nxt = self.step(current, ch)
                if nxt is not None and nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, distance + 1))
        raise ValueError(f"grammar state {state!r} cannot be completed")

    def matches(self, text: str) -> bool:
        """Whether `text` is a complete answer of the language."""
        state: State | None = self.start
        for ch in text:
            state = self.step(state, ch)
            if state is None:
                return False
        return self.accepting(state)


# ---- tokens -------------------------------------------------------------------------------------------------------

# A byte-level state: the character state plus the bytes of a character split over tokens.
ByteState = tuple[State, bytes]


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    if 0xF0 <= lead < 0xF5:
        return 4
    return 0  # a continuation byte or an invalid lead


def token_bytes(tokenizer: PreTrainedTokenizerBase) -> dict[int, bytes]:
    """The bytes each token the model may write produces: byte-level BPE vocabularies.

    Special tokens write nothing. Added non-special tokens (the tiny profile's `name(` and Chinese-character tokens)
    are stored as their text, not in the byte-level alphabet, and write that text's UTF-8.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {ch: byte for byte, ch in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items() if i not in special}
    result = {token_id: text.encode("utf-8") for token_id, text in added.items()}
    for token, token_id in tokenizer.get_vocab().items():
        if token_id in special or token_id in added:
            continue
        if any(ch not in byte_of for ch in token):
            raise ValueError(
                f"token {token!r} is not byte-level BPE: constrained decoding supports byte-level tokenizers "
                "(GPT-2/Qwen style)"
            )
        result[token_id] = bytes(byte_of[ch] for ch in token)
    return result


class TokenGrammar:
    """`CallGrammar` over a tokenizer's tokens: per state, the allowed tokens and how close each leaves the answer."""

    def __init__(self, grammar: CallGrammar, tokenizer: PreTrainedTokenizerBase, eos_ids: Sequence[int]) -> None:
        self.grammar = grammar
        self.eos_ids = [int(i) for i in eos_ids]
        self.bytes_of = token_bytes(tokenizer)
        self.vocab_size = max(len(tokenizer), max(self.bytes_of) + 1)
        # vocabulary byte trie: node = (children by byte, token ids ending here)
        self.trie: tuple[dict[int, Any], list[int]] = ({}, [])
        for token_id, data in self.bytes_of.items():
            node = self.trie
            for byte in data:
                node = node[0].setdefault(byte, ({}, []))
            node[1].append(token_id)
        self._options: dict[ByteState, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def start(self) -> ByteState:
        return (self.grammar.start, b"")

    def step_byte(self, state: ByteState, byte: int) -> ByteState | None:
        char_state, pending = state
        data = pending + bytes([byte])
        need = _utf8_length(data[0])
        if need == 0 or (len(data) > 1 and not 0x80 <= byte < 0xC0):
            return None
        if len(data) < need:  # part of a character: only where characters beyond ASCII may follow
            return (char_state, data) if self.grammar.step(char_state, _GENERIC_CHARACTER) is not None else None
        try:
            ch = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        nxt = self.grammar.step(char_state, ch)
        return (nxt, b"") if nxt is not None else None

    def advance(self, state: ByteState, token_id: int) -> ByteState | None:
        """The state after a token, or None when the token is not allowed there."""
        return walk_bytes(self, state, self.bytes_of.get(int(token_id)))

    def min_close(self, state: ByteState) -> int:
        """Fewest tokens to acceptance: finish a split character (a generic one), then close character by character."""
        char_state, pending = state
        if not pending:
            return self.grammar.min_close(char_state)
        missing = _utf8_length(pending[0]) - len(pending)
        return missing + self.grammar.min_close(self.grammar.step(char_state, _GENERIC_CHARACTER))

    def accepting(self, state: ByteState) -> bool:
        return not state[1] and self.grammar.accepting(state[0])

    def start_for(self, source: str) -> ByteState:
        """The start state for an answer to `source` (the catalog grammar does not depend on the utterance)."""
        return self.start

    def state_after(self, text: str, source: str) -> ByteState:
        """The state once the answer to `source` has written `text` (a label path's fixed tokens)."""
        return state_after(self, text, source)

    def options(self, state: ByteState) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids allowed after `state`, fewest tokens to acceptance after each), EOS included where it ends."""
        if state not in self._options:
            self._options[state] = allowed_tokens(self, state)
        return self._options[state]


def walk_bytes(grammar: Any, state: Any, data: bytes | None) -> Any:
    """`grammar`'s state after `data` from `state`; None when a byte leaves the language (or there is no data)."""
    if data is None:
        return None
    current = state
    for byte in data:
        current = grammar.step_byte(current, byte)
        if current is None:
            return None
    return current


def state_after(grammar: Any, text: str, source: str) -> Any:
    """`grammar`'s state once the answer to `source` has written `text`; ValueError when it cannot start so."""
    state = walk_bytes(grammar, grammar.start_for(source), text.encode("utf-8"))
    if state is None:
        raise ValueError(f"the call grammar does not accept {text!r} as the start of an answer")
    return state


def allowed_tokens(grammar: Any, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Walk `grammar`'s vocabulary trie from `state`, pruned where `step_byte` rejects: the tokens allowed there and
    the fewest tokens to acceptance after each, EOS included where the answer may end."""
    import torch

    ids: list[int] = []
    distances: list[int] = []
    stack = [(grammar.trie, state)]
    while stack:
        (children, ending), current = stack.pop()
        if ending:
            closing = grammar.min_close(current)
            ids.extend(ending)
            distances.extend([closing] * len(ending))
        for byte, child in children.items():
            nxt = grammar.step_byte(current, byte)
            if nxt is not None:
                stack.append((child, nxt))
    if grammar.accepting(state):
        ids.extend(grammar.eos_ids)
        distances.extend([0] * len(grammar.eos_ids))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(distances, dtype=torch.long)


class CallGrammarProcessor(LogitsProcessor):
    """A transformers logits processor for one `generate` call: rows may only write answers of the grammar.

    `grammar` is a `TokenGrammar`, or a `copying.CopyingGrammar` when arguments must be spans of the utterance;
    `sources` gives each row's utterance. Row states advance with each chosen token; a row that wrote an
    end-of-sequence token is left alone (generate pads it). `start_states` lets a row begin mid-answer (label scoring
    continues after the chosen label).
    """

    def __init__(
        self,
        grammar: Any,
        max_new_tokens: int,
        start_states: Sequence[Any] | None = None,
        sources: Sequence[str] | None = None,
    ) -> None:
        self.grammar = grammar
        self.max_new_tokens = max_new_tokens
        if start_states is None and sources is not None:
            start_states = [grammar.start_for(source) for source in sources]
        self.start_states = list(start_states) if start_states is not None else None
        self.states: list[Any] = []
        self.prompt_length: int | None = None
        # The processor keeps the tokens after which the answer can still close in the remaining budget: it can
        # write something for every row iff each start state has a token that leaves at most max_new_tokens - 1.
        shortest = max(1 + int(grammar.options(s)[1].min()) for s in (self.start_states or [grammar.start]))
        if max_new_tokens < shortest:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} cannot hold a complete call (the shortest needs {shortest} tokens)"
            )

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        rows = input_ids.shape[0]
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
            self.states = list(self.start_states) if self.start_states is not None else [self.grammar.start] * rows
            if len(self.states) != rows:
                raise ValueError(f"{len(self.states)} start states for {rows} rows")
        else:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                state = self.states[row]
                if state is not None:
                    self.states[row] = None if token in self.grammar.eos_ids else self.grammar.advance(state, token)
        remaining = self.max_new_tokens - (input_ids.shape[1] - self.prompt_length)
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        for row, state in enumerate(self.states):
            if state is None:  # finished: generate writes padding whatever the scores say
                allowed[row] = True
                continue
            ids, distances = self.grammar.options(state)
            allowed[row, ids[distances <= remaining - 1].to(scores.device)] = True
        return scores.masked_fill(~allowed, float("-inf"))
