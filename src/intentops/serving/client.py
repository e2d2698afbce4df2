"""Ask a deployed intent detector: `IntentClient(endpoint).predict(text) -> {intent, params, call, raw, valid, latency_ms}`.

Two kinds of endpoint, one answer shape:

* `openai`: vLLM's OpenAI-compatible server (KServe or plain Kubernetes). The request is the training prompt
  (`PromptBuilder.messages`: catalog as tools) and carries vLLM's `structured_outputs` constraint, so the server can
  only answer with calls to catalog intents with the right number of arguments (`choice` when every answer is a
  fixed string, else a `regex` of the call grammar; in thought mode the reasoning block is free text).
* `mlflow`: the registered pyfunc behind MLflow's model server (`/invocations`), which builds the same prompt itself;
  its answers are checked against the same catalog, so an endpoint answering outside it is never `valid`.

Answers are read back with the same builder and `intentops.grammar`, so `intent`/`params` mean exactly what they mean
in evaluation: the first call's name and positional arguments.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from intentops.catalog import Catalog, load_catalog
from intentops.config import PromptConfig
from intentops.grammar import Call, GrammarError, parse_calls
from intentops.prompting import PromptBuilder

Kind = Literal["openai", "mlflow"]
KINDS: tuple[str, ...] = ("openai", "mlflow")
# Calls one answer may hold (multi-intent "a();b(x)"); a bound keeps constrained decoding from looping on ';'.
MAX_CALLS = 4
# Completion budgets: a call string is short; a reasoning block needs room.
ANSWER_MAX_TOKENS = 64
THOUGHT_MAX_TOKENS = 512
DEFAULT_TIMEOUT_S = 30.0
# The key vLLM's server requires (`--api-key`, read by vLLM from this variable); clients send it as the bearer token.
API_KEY_ENV = "VLLM_API_KEY"

# One argument as `render_call` writes it: double-quoted with escapes, or bare without separators and without
# leading/trailing blanks. Explicit characters instead of \s keep the pattern portable across regex engines.
_BARE = r"[^ \t\n,;()\"'\\（），；]"
_BARE_INNER = r"[^\n,;()\"'\\（），；]"
ARG_REGEX = rf'(?:"(?:[^"\\]|\\.)*"|{_BARE}(?:{_BARE_INNER}*{_BARE})?)'
_REGEX_SPECIAL = set("\\.^$|?*+()[]{}")


class ClientError(RuntimeError):
    """An endpoint that cannot be asked (unreachable, wrong kind, error reply); names the endpoint."""


def _literal(text: str) -> str:
    return "".join(f"\\{ch}" if ch in _REGEX_SPECIAL else ch for ch in text)


def _answer_tokens(builder: PromptBuilder) -> dict[str, str]:
    """Label -> the token the model writes for it (the name, or `#N` with numeric labels)."""
    answer_cfg = builder.cfg.model_copy(update={"output_mode": "answer", "few_shot": "none"})
    continuations = PromptBuilder(builder.catalog, answer_cfg).label_continuations()
    return {label: continuation.removesuffix("(") for label, continuation in continuations.items()}


def _arity(builder: PromptBuilder, label: str) -> tuple[int, int]:
    """(required, total) positional arguments of a label; `uncertain` takes none."""
    intent = builder.catalog.get(label)
    if intent is None:
        return 0, 0
    return len(intent.required_parameters), len(intent.parameters)


def _args_regex(required: int, total: int) -> str:
    """Positional arguments: the first `required` always present, each later one only after its predecessor."""
    regex = ""
    for index in reversed(range(total)):
        piece = ("," if index else "") + ARG_REGEX + regex
        regex = f"(?:{piece})?" if index >= required else piece
    return regex


def call_regex(builder: PromptBuilder) -> str:
    """One call to any label the builder offers, with that label's number of arguments."""
    tokens = _answer_tokens(builder)
    alternatives = [
        f"{_literal(tokens[label])}\\({_args_regex(*_arity(builder, label))}\\)" for label in builder.labels
    ]
    return "(?:" + "|".join(alternatives) + ")"


def structured_outputs(builder: PromptBuilder, max_calls: int = MAX_CALLS, source: str | None = None) -> dict[str, Any]:
    """vLLM's `structured_outputs` request field limiting the answer to the catalog.

    `choice` when the answer can only be one of finitely many strings (parameterless labels, one call, no reasoning),
    else `regex` over the call grammar (several calls joined by ';', wrapped in the builder's thought template in
    thought mode: the reasoning may be empty and holds no character that starts the template's middle). With
    `source`, every argument value must be a span of that utterance: a per-request EBNF `grammar` (`copy_grammar`).
    """
    if max_calls < 1:
        raise ValueError(f"max_calls must be at least 1, got {max_calls}")
    template = builder.template
    takes_arguments = any(_arity(builder, label)[1] for label in builder.labels)
    if max_calls == 1 and template is None and not takes_arguments:
        tokens = _answer_tokens(builder)
        return {"choice": [f"{tokens[label]}()" for label in builder.labels]}
    if source is not None and takes_arguments:
        from intentops.serving.copy_grammar import copied_arguments_grammar

        return {"grammar": copied_arguments_grammar(builder, source, _answer_tokens(builder), max_calls)}
    one = call_regex(builder)
    calls = one if max_calls == 1 else f"{one}(?:;{one}){{0,{max_calls - 1}}}"
    if template is not None:
        stop = _literal(template.middle[0]).replace("\n", "\\n")
        middle, closing = (_literal(part).replace("\n", "\\n") for part in (template.middle, template.closing))
        return {"regex": f"{_literal(template.opening)}[^{stop}]*{middle}{calls}{closing}"}
    return {"regex": calls}


def valid_calls(builder: PromptBuilder, calls: list[Call] | None) -> bool:
    """Whether an answer parsed, names only catalog labels and gives each its number of arguments."""
    if not calls:
        return False
    for call in calls:
        if call.name not in builder.labels:
            return False
        required, total = _arity(builder, call.name)
        if not required <= len(call.args) <= total:
            return False
    return True


def _parse_or_none(text: Any) -> list[Call] | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return parse_calls(text)
    except GrammarError:
        return None


def openai_base_url(endpoint: str) -> str:
    """`http://host[:port][/prefix]` or the same ending in /v1 -> the OpenAI client's base URL (ending in /v1)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


class IntentClient:
    """Predicts the intent of one utterance against a served model; see the module docstring for the kinds."""

    def __init__(
        self,
        endpoint: str,
        kind: Kind = "openai",
        model: str | None = None,
        catalog: Catalog | str | Path | None = None,
        *,
        prompt: PromptConfig | None = None,
        builder: PromptBuilder | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_tokens: int | None = None,
        api_key: str | None = None,
        copy_arguments: bool = False,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown endpoint kind {kind!r} (expected one of {', '.join(KINDS)})")
        if builder is None and catalog is not None:
            loaded = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
            builder = PromptBuilder(loaded, prompt or PromptConfig())
        if builder is None:
            raise ValueError(
                f"an {kind} endpoint's answers are checked against the catalog the model was trained with (and an "
                "openai endpoint is sent its prompt): pass builder= (PromptBuilder.from_model_dir) or catalog="
            )
        self.endpoint = endpoint.rstrip("/")
        self.kind = kind
        self.builder = builder
        self.timeout_s = timeout_s
        self._model = model
        self._constraint = structured_outputs(builder)
        self.copy_arguments = copy_arguments
        if max_tokens is None and builder.cfg.output_mode == "thought":
            max_tokens = THOUGHT_MAX_TOKENS
        self.max_tokens = max_tokens or ANSWER_MAX_TOKENS
        self._api_key = api_key or os.environ.get(API_KEY_ENV) or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._openai: Any = None
        self._http: Any = None

    # ---- public API ------------------------------------------------------------------------------------------

    @property
    def constraint(self) -> dict[str, Any]:
        return self._constraint

    def constraint_for(self, text: str) -> dict[str, Any]:
        """What an openai request for `text` carries: the catalog's constraint, with argument values copied from
        `text` when the client was made with `copy_arguments` (as the model was evaluated)."""
        return structured_outputs(self.builder, source=text) if self.copy_arguments else self._constraint

    def predict(self, text: str) -> dict[str, Any]:
        """`{intent, params, call, raw, valid, latency_ms}`; intent/params are None/[] when the answer is malformed."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        start = time.perf_counter()
        raw, remote = self._ask_openai(text) if self.kind == "openai" else self._ask_mlflow(text)
        latency_ms = (time.perf_counter() - start) * 1000.0
        # The pyfunc read its answer with the model's own PromptBuilder: its canonical `call` is the result, checked
        # against this client's catalog like any other answer.
        calls = _parse_or_none(remote.get("call")) if remote is not None else self.builder.extract_calls(raw)
        first = calls[0] if calls else None
        return {
            "intent": first.name if first else None,
            "params": list(first.args) if first else [],
            "call": ";".join(str(c) for c in calls) if calls else None,
            "raw": raw,
            "valid": valid_calls(self.builder, calls),
            "latency_ms": round(latency_ms, 3),
        }

    def model_name(self) -> str:
        """The served model name (openai kind): the one given, else the first the server lists."""
        if self._model is None:
            from openai import OpenAIError

            client = self._openai_client()
            try:
                models = client.models.list().data
            except OpenAIError as exc:
                raise ClientError(f"{self.endpoint}: cannot list models: {exc}") from exc
            if not models:
                raise ClientError(f"{self.endpoint}: the server serves no model")
            self._model = models[0].id
        return self._model

    def close(self) -> None:
        if self._openai is not None:
            self._openai.close()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> IntentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transports ------------------------------------------------------------------------------------------

    def _openai_client(self) -> Any:
        if self._openai is None:
            from openai import OpenAI

            self._openai = OpenAI(
                base_url=openai_base_url(self.endpoint),
                api_key=self._api_key,
                timeout=self.timeout_s,
                max_retries=0,
            )
        return self._openai

    def _ask_openai(self, text: str) -> tuple[str, None]:
        from openai import OpenAIError

        client = self._openai_client()
        model = self.model_name()
        try:
            response = client.chat.completions.create(
                model=model,
                messages=self.builder.messages(text),
                temperature=0.0,
                max_tokens=self.max_tokens,
                extra_body={"structured_outputs": self.constraint_for(text)},
            )
        except OpenAIError as exc:
            raise ClientError(f"{self.endpoint}: chat completion failed: {exc}") from exc
        if not response.choices:
            raise ClientError(f"{self.endpoint}: the reply has no choices")
        return response.choices[0].message.content or "", None

    def _ask_mlflow(self, text: str) -> tuple[str, dict[str, Any]]:
        import httpx

        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout_s)
        try:
            reply = self._http.post(f"{self.endpoint}/invocations", json={"dataframe_records": [{"text": text}]})
        except httpx.HTTPError as exc:
            raise ClientError(f"{self.endpoint}/invocations: {exc}") from exc
        if reply.status_code != 200:
            raise ClientError(f"{self.endpoint}/invocations answered {reply.status_code}: {reply.text[:500]}")
        predictions = reply.json().get("predictions")
        if not isinstance(predictions, list) or len(predictions) != 1 or not isinstance(predictions[0], dict):
            raise ClientError(f"{self.endpoint}/invocations: expected one prediction record, got {predictions!r}")
        row = predictions[0]
        return str(row.get("raw") or ""), row
