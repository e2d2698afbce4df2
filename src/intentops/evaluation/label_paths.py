"""What label scoring scores for each label: the tokens a trained model writes first when it answers with that label.

Every answer for a label starts with the same text, `name(` (intents with parameters) or `name()` (parameterless
intents and `uncertain`), but not always with the same tokens: a plain byte-level BPE merges the bracket with what
follows (`(Grandma`, `()`, `();`), while the tiny profile's copy tokens make `name(` one token and `(`, `)` tokens of
their own. So a label's scored path is derived from how answers for it actually tokenize after the generation prompt:
the canonical prefix is tokenized followed by probe continuations (arguments, the end of the answer, a further call),
the path's fixed tokens are the longest token prefix every one of them shares, and the prefix text those tokens leave
unwritten (`rest`, e.g. `(`) is scored as the probability mass of every token that begins with it. A gold target for
the label therefore begins with the fixed tokens and, where there is a rest, then a token of the opening set.

`LabelTrie` lays the paths out as the token trie one forward pass scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from intentops.prompting import PromptBuilder

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_PROBE_USER_TEXT = "probe"
OPEN_ARGUMENTS, NO_ARGUMENTS = "(", "()"
# What may follow `name(` in an answer: every kind of first argument character (letters, digits, CJK, quotes,
# punctuation, space) and `)` (no arguments). The bracket can only merge with text after it, so these decide where
# the answer's tokens stop being the same for every argument.
ARGUMENT_PROBES = ("", ")", '"', "'", " ", "a", "Grandma", "X", "1", "27", "-", "_", "#", ".", "/", "杭州", "中", "é")
# What may follow `name()`: the end of the answer, or `;` and the next call (every label is tried there).
END_PROBES = ("", ";", " ", "\n")


@dataclass(frozen=True)
class LabelPath:
    """One label's scored path: `tokens` (fixed, in order) write `text`; then, when `rest` is not empty, one token of
    `openers` (every token whose text begins with `rest`, plus those the probes produced there)."""

    label: str
    prefix: str  # the answer prefix every answer for the label shares: `name(` or `name()`
    text: str
    tokens: tuple[int, ...]
    rest: str
    openers: tuple[int, ...]

    @property
    def steps(self) -> int:
        """Tokens the label's score covers (its per-token mean divides by this)."""
        return len(self.tokens) + (1 if self.openers else 0)


def probe_prompt(tokenizer: PreTrainedTokenizerBase, builder: PromptBuilder) -> str:
    """A real rendered generation prompt: answers are tokenized after it, as the model sees them."""
    return tokenizer.apply_chat_template(builder.messages(_PROBE_USER_TEXT), add_generation_prompt=True, tokenize=False)


def answer_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, prompt_ids: Sequence[int], answer: str) -> list[int]:
    """Token ids of `answer` exactly as they follow `prompt`.

    BPE may merge across the prompt/answer boundary, so the answer is tokenized after the prompt and the prompt's own
    tokens are stripped; only if the prompt tokens are not a prefix (a merge did happen) is the answer tokenized alone.
    """
    joint = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
    if joint[: len(prompt_ids)] == list(prompt_ids):
        return joint[len(prompt_ids) :]
    log.debug("answer %r merges with the prompt when tokenized; using its standalone tokens", answer)
    return tokenizer(answer, add_special_tokens=False)["input_ids"]


def label_name_ids(tokenizer: PreTrainedTokenizerBase, builder: PromptBuilder, names: Sequence[str]) -> list[list[int]]:
    """Token ids of each text in `names` as it follows the generation prompt (answer prefixes, bare names)."""
    prompt = probe_prompt(tokenizer, builder)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    result = [answer_ids(tokenizer, prompt, prompt_ids, name) for name in names]
    for name, ids in zip(names, result, strict=True):
        if not ids:
            raise ValueError(f"label {name!r} tokenizes to nothing")
    return result


def token_texts(tokenizer: PreTrainedTokenizerBase) -> dict[int, str]:
    """The text of every ordinary token (special tokens excluded; added non-special tokens, such as the tiny
    tokenizer's copy tokens, are ordinary text the model can emit)."""
    special = {index for index, token in tokenizer.added_tokens_decoder.items() if token.special}
    skip = set(tokenizer.all_special_ids) | special
    ids = sorted(i for i in tokenizer.get_vocab().values() if i not in skip)
    return dict(zip(ids, tokenizer.batch_decode([[i] for i in ids]), strict=True))


def tokens_starting_with(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Every ordinary token whose text begins with `text`."""
    found = [i for i, piece in token_texts(tokenizer).items() if piece.startswith(text)]
    if not found:
        raise ValueError(f"no token of the vocabulary begins with {text!r}")
    return found


def _shared_prefix(sequences: Sequence[Sequence[int]]) -> list[int]:
    first, length = sequences[0], 0
    while length < len(first) and all(len(s) > length and s[length] == first[length] for s in sequences):
        length += 1
    return list(first[:length])


def label_paths(
    tokenizer: PreTrainedTokenizerBase,
    builder: PromptBuilder,
    names: Sequence[str],
    takes_arguments: Sequence[bool],
    labels: Sequence[str] | None = None,
) -> list[LabelPath]:
    """Each label's scored path, from how its answers tokenize after the generation prompt (module docstring).

    `names[l]` is the label as the answer writes it (the name, or `#n` with numeric labels).
    """
    prompt = probe_prompt(tokenizer, builder)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    texts = token_texts(tokenizer)
    paths = []
    for index, (name, arguments) in enumerate(zip(names, takes_arguments, strict=True)):
        prefix = name + (OPEN_ARGUMENTS if arguments else NO_ARGUMENTS)
        probes = ARGUMENT_PROBES if arguments else END_PROBES + tuple(f";{other}(" for other in names)
        answers = [answer_ids(tokenizer, prompt, prompt_ids, prefix + probe) for probe in probes]
        tokens = _shared_prefix(answers)  # answers[0] is the prefix alone: these tokens write part of it
        text = tokenizer.decode(tokens)
        if not prefix.startswith(text):
            raise ValueError(f"label {name!r}: tokens {tokens} decode to {text!r}, not a prefix of {prefix!r}")
        rest = prefix[len(text) :]
        openers: list[int] = []
        if rest:
            seen = {answer[len(tokens)] for answer in answers if len(answer) > len(tokens)}
            openers = sorted({t for t, piece in texts.items() if piece.startswith(rest)} | seen)
            if not openers:
                raise ValueError(f"label {name!r}: no token of the vocabulary begins with {rest!r}")
        label = labels[index] if labels is not None else name
        paths.append(LabelPath(label, prefix, text, tuple(tokens), rest, tuple(openers)))
    return paths


@dataclass(frozen=True)
class LabelTrie:
    """The labels as a token trie over the answer, and the edges a label's score adds up.

    `nodes` are the token prefixes fed to the model after the prompt (each stands for its last token). A scoring
    position is 0 for the prompt's last token, p > 0 for node p - 1. `edges[e] = (position, tokens)`: the log of the
    probability mass of `tokens` at that position; `paths[label]` lists the label's edges, fixed tokens first, then
    its opening set (if it has one). Shared prefixes share edges.
    """

    nodes: tuple[tuple[int, ...], ...]
    edges: tuple[tuple[int, tuple[int, ...]], ...]
    paths: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, fixed: Sequence[Sequence[int]], openers: Sequence[Sequence[int]]) -> LabelTrie:
        """The trie of labels scored as the tokens `fixed[l]`, then one token of the set `openers[l]` (none when
        empty). Only prefixes some edge leaves from become nodes."""
        nodes: dict[tuple[int, ...], int] = {}
        edges: dict[tuple[int, tuple[int, ...]], int] = {}
        paths = []
        for ids, opener in zip(fixed, openers, strict=True):
            if not ids and not opener:
                raise ValueError("a label has neither tokens nor an opening set to score")
            path = []
            for end in range(len(ids) + (1 if opener else 0)):
                position = 1 + nodes.setdefault(tuple(ids[:end]), len(nodes)) if end else 0
                tokens = (ids[end],) if end < len(ids) else tuple(sorted(set(opener)))
                path.append(edges.setdefault((position, tokens), len(edges)))
            paths.append(tuple(path))
        return cls(tuple(nodes), tuple(edges), tuple(paths))

    @property
    def n_labels(self) -> int:
        return len(self.paths)

    def lengths(self) -> list[int]:
        """Tokens each label's score covers (its fixed tokens plus the opening token)."""
        return [len(path) for path in self.paths]

    def allowed(self, position: int) -> list[int]:
        """Every token some label takes at `position`."""
        return sorted({t for p, tokens in self.edges if p == position for t in tokens})

    def for_catalog(self) -> LabelTrie:
        """The same scores under catalog normalisation with less work: a position where only one edge leaves has
        probability 1 there, so its edge is dropped, and nodes that neither score nor lead to a scoring node go too."""
        edges_at: dict[int, int] = {}
        for position, _ in self.edges:
            edges_at[position] = edges_at.get(position, 0) + 1
        kept_edges = [e for e, (position, _) in enumerate(self.edges) if edges_at[position] > 1]
        scoring = {self.nodes[position - 1] for e in kept_edges if (position := self.edges[e][0]) > 0}
        nodes = [node for node in self.nodes if any(s[: len(node)] == node for s in scoring)]
        new_position = {0: 0, **{1 + self.nodes.index(node): 1 + i for i, node in enumerate(nodes)}}
        renumber = {e: i for i, e in enumerate(kept_edges)}
        edges = tuple((new_position[self.edges[e][0]], self.edges[e][1]) for e in kept_edges)
        paths = tuple(tuple(renumber[e] for e in path if e in renumber) for path in self.paths)
        return LabelTrie(tuple(nodes), edges, paths)

    def tokens(self) -> list[int]:
        """The token each node feeds to the model."""
        return [node[-1] for node in self.nodes]

    def depths(self) -> list[int]:
        return [len(node) - 1 for node in self.nodes]

    def ancestry(self) -> list[list[bool]]:
        """ancestry[n][m]: node m is node n or one of its ancestors, i.e. what node n may attend to."""
        return [[n_prefix[: len(m_prefix)] == m_prefix for m_prefix in self.nodes] for n_prefix in self.nodes]
