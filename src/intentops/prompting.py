"""One prompt builder for training, evaluation and serving.

The catalog is rendered as tool APIs (name, parameters, description), so adding, splitting or merging an intent
changes the prompt, not the weights. Prompt strategies are options: category definitions, fixed or
similar in-context examples, numeric labels, an explicit uncertain label; the output is either the call string alone
(`answer`) or a reasoning block then the call (`thought`), in one of two templates (`prompt.thought_template`):

- `react`, the ReAct-style lines of the RCS paper: `Thought: <reasoning>` / `Action: <calls>` / `Finish!`;
- `think_answer`, R1-style tags: `<think><reasoning></think><answer><calls></answer>`.

The reasoning is the model's own: the supervised target (`target`) leaves it empty, so SFT teaches the template and
the answer, and GRPO, whose rewards read only the format and the calls, lets the model fill it where that pays.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intentops.artifacts import CATALOG_FILE, FEWSHOT_FILE, MODEL_CARD
from intentops.catalog import UNCERTAIN_INTENT, Catalog, load_catalog
from intentops.config import PromptConfig
from intentops.grammar import Call, GrammarError, parse_calls, render_calls


@dataclass(frozen=True)
class ThoughtTemplate:
    """A thought-mode answer: `opening`, the reasoning, `middle`, the calls, `closing`.

    `strict` matches a completion that is exactly the template (the reasoning may be empty); `answer` finds the
    calls' span anywhere (loose format and extraction). Constrained decoding keeps `middle[0]` out of the reasoning,
    which is how it knows the reasoning has ended.
    """

    name: str
    opening: str
    middle: str
    closing: str
    strict: re.Pattern[str]
    answer: re.Pattern[str]
    instruction: str
    example_thought: str

    def render(self, thought: str, answer: str) -> str:
        return f"{self.opening}{thought}{self.middle}{answer}{self.closing}"


THOUGHT_TEMPLATES: dict[str, ThoughtTemplate] = {
    "react": ThoughtTemplate(
        name="react",
        opening="Thought:",
        middle="\nAction: ",
        closing="\nFinish!",
        strict=re.compile(
            r"^\s*Thought:(?P<think>(?:(?!\nAction:).)*)\nAction:[ \t]*(?P<answer>[^\n]+?)[ \t]*\nFinish!\s*$",
            re.DOTALL,
        ),
        answer=re.compile(r"^[ \t]*Action:[ \t]*(?P<answer>[^\n]+?)[ \t]*$", re.MULTILINE),
        instruction="First reason briefly after 'Thought:', then give the call after 'Action:' and end with "
        "'Finish!', each on its own line",
        example_thought=" ...",
    ),
    "think_answer": ThoughtTemplate(
        name="think_answer",
        opening="<think>",
        middle="</think><answer>",
        closing="</answer>",
        strict=re.compile(r"^\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.+?)</answer>\s*$", re.DOTALL),
        answer=re.compile(r"<answer>(?P<answer>.+?)</answer>", re.DOTALL),
        instruction="First reason briefly inside <think></think>, then give the call inside <answer></answer>",
        example_thought="...",
    ),
}
_NUMERIC_LABEL = re.compile(r"#(\d+)(?=\s*[(（])")
# Chat control tokens as they appear in text: ChatML/Qwen/Llama-3 `<|...|>` and Llama/Mistral `<s>`, `</s>`, `[INST]`.
_CONTROL_TOKEN = re.compile(r"<\|[^<>|\s]{1,64}\|>|</?s>|\[/?INST\]")
_WORD_JOINER = "\u2060"
_LOOSE_CALL = re.compile(
    r"[A-Za-z_#][A-Za-z0-9_.]*\s*[(（][^()（）]*[)）](?:\s*[;；]\s*[A-Za-z_#][A-Za-z0-9_.]*\s*[(（][^()（）]*[)）])*"
)


def neutralise_control_tokens(text: str) -> str:
    """User text with every chat control token broken by an invisible word joiner after its first character.

    The words stay readable to the model, but no tokenizer matches them as special tokens, so a request cannot
    close its own turn and speak as the assistant or the system.
    """
    return _CONTROL_TOKEN.sub(lambda m: m.group(0)[0] + _WORD_JOINER + m.group(0)[1:], text)


class PromptBuilder:
    """Builds chat messages and assistant targets, and reads the call back out of a completion."""

    def __init__(self, catalog: Catalog, cfg: PromptConfig, examples: list[dict[str, Any]] | None = None) -> None:
        self.catalog = catalog
        self.cfg = cfg
        self.examples = list(examples or [])
        self._labels = list(catalog.names) + ([UNCERTAIN_INTENT] if cfg.uncertain_label else [])
        self._number_of = {name: index for index, name in enumerate(self._labels, start=1)}
        self._name_of = {str(index): name for name, index in self._number_of.items()}
        self._fixed_examples = self._pick_fixed_examples() if cfg.few_shot == "fixed" else []
        self._retriever = _TfidfRetriever(self.examples) if cfg.few_shot == "similar" and self.examples else None
        self._base_system = self._render_system()

    @property
    def template(self) -> ThoughtTemplate | None:
        """The thought template answers follow, None in answer mode."""
        return THOUGHT_TEMPLATES[self.cfg.thought_template] if self.cfg.output_mode == "thought" else None

    @property
    def labels(self) -> list[str]:
        """Every answer the model may give: the catalog intents, plus `uncertain` when enabled."""
        return list(self._labels)

    # ---- prompts -------------------------------------------------------------------------------------------

    def system_prompt(self, text: str | None = None) -> str:
        examples = self._examples_for(text)
        if not examples:
            return self._base_system
        shots = "\n".join(
            f"User: {neutralise_control_tokens(ex['text'])}\nAssistant: {self.target(ex['output'])}" for ex in examples
        )
        return f"{self._base_system}\n\nExamples:\n{shots}"

    def messages(self, text: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system_prompt(text)},
            {"role": "user", "content": neutralise_control_tokens(text)},
        ]

    def target(self, output: str) -> str:
        """What the assistant should answer for a gold call string.

        In thought mode the reasoning is left empty: the data has no reasoning to teach, and a paraphrase of the gold
        answer would only teach the model to restate its answer; GRPO lets the model write its own.
        """
        answer = self._render_answer(parse_calls(output))
        template = self.template
        return template.render("", answer) if template else answer

    # ---- reading completions ---------------------------------------------------------------------------------

    def extract(self, completion: str) -> str | None:
        """The canonical call string a completion answers with, or None when its format is broken."""
        calls = self.extract_calls(completion)
        return render_calls(calls) if calls is not None else None

    def extract_calls(self, completion: str) -> list[Call] | None:
        """The calls of a completion: the whole of it in answer mode, the template's answer span in thought mode
        (the first `<answer>` tag, or the first line starting with `Action:`), None when there is none or it does
        not parse."""
        text = completion.strip()
        template = self.template
        if template is not None:
            match = template.answer.search(text)
            if not match:
                return None
            text = match.group("answer").strip()
        return self._parse_answer(text)

    def format_ok(self, completion: str, strict: bool = True) -> bool:
        """Strict: the completion is exactly the template. Loose: a well-formed answer appears somewhere in it."""
        text = completion.strip()
        template = self.template
        if template is not None:
            match = template.strict.match(text) if strict else template.answer.search(text)
            return bool(match) and self._parse_answer(match.group("answer").strip()) is not None
        if strict:
            return self._parse_answer(text) is not None
        return any(self._parse_answer(m.group(0)) is not None for m in _LOOSE_CALL.finditer(text))

    def label_continuations(self) -> dict[str, str]:
        """Intent -> the assistant text that commits to it; label scoring ranks these continuations."""
        if self.cfg.output_mode != "answer":
            raise ValueError("label scoring needs prompt.output_mode='answer'")
        return {name: f"{self._label_token(name)}(" for name in self._labels}

    # ---- persistence -------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return self.cfg.model_dump()

    def save(self, model_dir: str | Path) -> None:
        """Write what serving needs to rebuild this builder next to the weights (catalog and few-shot pool)."""
        from intentops.io import write_jsonl

        model_dir = Path(model_dir)
        self.catalog.to_yaml(model_dir / CATALOG_FILE)
        if self.cfg.few_shot != "none":
            fields = ("text", "output", "intent")
            write_jsonl(model_dir / FEWSHOT_FILE, ({k: e.get(k) for k in fields} for e in self.examples))

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> PromptBuilder:
        """Rebuild the builder a model was trained with, from its folder (catalog.yaml + intentops.json)."""
        model_dir = Path(model_dir)
        card_path = model_dir / MODEL_CARD
        if not card_path.exists():
            raise FileNotFoundError(f"{card_path}: model card missing; is {model_dir} an IntentOps model folder?")
        card = json.loads(card_path.read_text(encoding="utf-8"))
        # Cards written before a prompt knob was removed (e.g. `similarity`) still load: only current knobs are read.
        # Cards written before `thought_template` existed were trained with the <think>/<answer> tags.
        prompt = {"thought_template": "think_answer"} | card.get("prompt", {})
        cfg = PromptConfig.model_validate({k: v for k, v in prompt.items() if k in PromptConfig.model_fields})
        examples = []
        if (model_dir / FEWSHOT_FILE).exists():
            from intentops.io import read_jsonl

            examples = list(read_jsonl(model_dir / FEWSHOT_FILE))
        return cls(load_catalog(model_dir / CATALOG_FILE), cfg, examples)

    # ---- internals ---------------------------------------------------------------------------------------------

    def _label_token(self, name: str) -> str:
        return f"#{self._number_of[name]}" if self.cfg.numeric_labels else name

    def _render_answer(self, calls: list[Call]) -> str:
        return ";".join(
            render_calls([Call(self._label_token(c.name) if c.name in self._number_of else c.name, c.args)])
            for c in calls
        )

    def _parse_answer(self, text: str) -> list[Call] | None:
        if self.cfg.numeric_labels:
            text = _NUMERIC_LABEL.sub(lambda m: self._name_of.get(m.group(1), f"unknown_label_{m.group(1)}"), text)
        try:
            return parse_calls(text)
        except GrammarError:
            return None

    def _render_system(self) -> str:
        lines = [self.cfg.system_prompt.strip(), "", "Tools:"]
        for name in self._labels:
            prefix = f"#{self._number_of[name]} " if self.cfg.numeric_labels else ""
            if name == UNCERTAIN_INTENT:
                lines.append(f"- {prefix}uncertain(): none of the tools fits, or the request is unclear.")
                continue
            intent = self.catalog.get(name)
            assert intent is not None
            if not self.cfg.category_definitions:
                lines.append(f"- {prefix}{intent.signature()}")
                continue
            lines.append(f"- {prefix}{intent.signature()}: {intent.description}")
            lines.extend(f"    {p.name}: {p.description}" for p in intent.parameters if p.description)
        label = "the tool's number" if self.cfg.numeric_labels else "the tool's name"
        template = self.template
        if template is None:
            lines += ["", f"Answer with the call only, using {label}, e.g. {self._example_answer()}."]
        else:
            example = template.render(template.example_thought, self._example_answer())
            lines += ["", f"{template.instruction}, using {label}, e.g.", example]
        lines.append("Several requests: separate the calls with ';'. Copy argument values from the user's words.")
        return "\n".join(lines)

    def _example_answer(self) -> str:
        intent = next((i for i in self.catalog.intents if i.parameters), self.catalog.intents[0])
        args = tuple(f"<{p.name}>" for p in intent.parameters)
        return render_calls([Call(self._label_token(intent.name), args)])

    def _pick_fixed_examples(self) -> list[dict[str, Any]]:
        """The same k examples for every prompt, spread over intents, chosen reproducibly."""
        by_intent: dict[str, list[dict[str, Any]]] = {}
        for example in self.examples:
            by_intent.setdefault(example.get("intent", ""), []).append(example)
        rng = random.Random(0)
        order = sorted(by_intent)
        rng.shuffle(order)
        picked = [rng.choice(by_intent[name]) for name in order[: self.cfg.few_shot_k]]
        return picked

    def _examples_for(self, text: str | None) -> list[dict[str, Any]]:
        if self.cfg.few_shot == "fixed":
            return self._fixed_examples
        if self._retriever is not None and text is not None:
            return self._retriever.nearest(text, self.cfg.few_shot_k)
        return []


class _TfidfRetriever:
    """k most similar training utterances by character n-gram TF-IDF (works for zh and en alike)."""

    def __init__(self, examples: list[dict[str, Any]]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.examples = examples
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
        self.matrix = self.vectorizer.fit_transform([e["text"] for e in examples])

    def nearest(self, text: str, k: int) -> list[dict[str, Any]]:
        scores = (self.matrix @ self.vectorizer.transform([text]).T).toarray().ravel()
        ranked = [i for i in scores.argsort()[::-1] if self.examples[i]["text"] != text]
        return [self.examples[i] for i in ranked[:k]]
