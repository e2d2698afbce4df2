"""The MLflow pyfunc an IntentOps model is registered as: text in, `{intent, params, confidence, call, raw}` out.

This file is logged as the model's code ("models from code", no pickle): MLflow executes it when the model is
loaded, and `set_model` at the bottom tells MLflow which object serves. The weights travel as an ordinary Hugging
Face folder artifact (`hf_model`, with its catalog and model card), so the very same folder is what vLLM
or KServe loads; this wrapper only makes the registered version usable with `mlflow.pyfunc.load_model` and
`mlflow models serve`.

Model config (set at logging, overridable with `mlflow.pyfunc.load_model(uri, model_config={...})`):
`decoding` (`generate` or `label_scoring`), `batch_size`, `max_new_tokens`, `dtype`, and the evaluation knobs that
shape answers (`constrained`, `copy_arguments`, `label_score`, `label_normalization`), so serving decodes as the model was evaluated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel
from mlflow.pyfunc.model import PythonModelContext

# A fixed name: MLflow executes this file under a generated module name when it loads the model.
log = logging.getLogger("intentops.registry_pyfunc")

HF_MODEL_ARTIFACT = "hf_model"
TEXT_COLUMN = "text"
OUTPUT_COLUMNS = ("intent", "params", "confidence", "call", "raw")
PYFUNC_DECODINGS = ("generate", "label_scoring")
DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "decoding": "generate",
    "batch_size": 16,
    "max_new_tokens": 64,
    "dtype": "auto",
    "constrained": False,
    "copy_arguments": False,
    "label_score": "sum",
    "label_normalization": "vocabulary",
}


def texts_from_input(model_input: Any) -> list[str]:
    """The utterances of a pyfunc input: a DataFrame with a `text` column, a list of strings, a dict or a string."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise ValueError(f"input DataFrame needs a {TEXT_COLUMN!r} column, got columns {list(model_input.columns)}")
        values = model_input[TEXT_COLUMN].tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, Mapping):
        if TEXT_COLUMN not in model_input:
            raise ValueError(f"input mapping needs a {TEXT_COLUMN!r} key, got keys {sorted(model_input)}")
        raw = model_input[TEXT_COLUMN]
        values = [raw] if isinstance(raw, str) else list(raw)
    elif isinstance(model_input, Sequence):
        values = [item[TEXT_COLUMN] if isinstance(item, Mapping) else item for item in model_input]
    else:
        raise ValueError(f"unsupported input type {type(model_input).__name__}; send a DataFrame with a 'text' column")
    for index, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"input row {index}: {TEXT_COLUMN!r} must be a non-empty string, got {value!r}")
    return values


class IntentDetectorModel(PythonModel):
    """Loads the HF folder with the prompt it was trained with and answers with the predicted call per utterance."""

    def __init__(self) -> None:
        self.predictor: Any = None
        self.decoding = DEFAULT_MODEL_CONFIG["decoding"]

    def load_context(self, context: PythonModelContext) -> None:
        from intentops.config import RunConfig
        from intentops.evaluation.predictors import make_predictor
        from intentops.prompting import PromptBuilder

        settings = {**DEFAULT_MODEL_CONFIG, **(context.model_config or {})}
        decoding = settings["decoding"]
        if decoding not in PYFUNC_DECODINGS:
            raise ValueError(f"model_config decoding={decoding!r}: expected one of {', '.join(PYFUNC_DECODINGS)}")
        model_dir = context.artifacts[HF_MODEL_ARTIFACT]
        cfg = RunConfig()
        cfg.evaluation.batch_size = int(settings["batch_size"])
        cfg.evaluation.max_new_tokens = int(settings["max_new_tokens"])
        cfg.model.dtype = settings["dtype"]
        cfg.evaluation.constrained = bool(settings["constrained"])
        cfg.evaluation.copy_arguments = bool(settings["copy_arguments"])
        cfg.evaluation.label_score = settings["label_score"]
        cfg.evaluation.label_normalization = settings["label_normalization"]
        builder = PromptBuilder.from_model_dir(model_dir)
        self.predictor = make_predictor(decoding, model_dir, cfg, builder, progress=False)
        self.decoding = decoding
        log.info("intent detector loaded from %s (%s decoding, %d intents)", model_dir, decoding, len(builder.labels))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """One row per utterance: intent and params of the first call (None if the answer is malformed), the
        confidence (label scoring only), the canonical call string (several calls joined by ';') and the raw text.

        MLflow enforces the signature first, so served requests arrive as a DataFrame with a `text` column.
        """
        if self.predictor is None:
            raise RuntimeError("IntentDetectorModel.predict called before load_context")
        texts = texts_from_input(model_input)
        predictions = self.predictor.predict(texts)
        return pd.DataFrame(
            [
                {
                    "intent": p.intent,
                    "params": list(p.params) if p.params is not None else [],
                    "confidence": p.confidence,
                    "call": p.call,
                    "raw": p.raw,
                }
                for p in predictions
            ],
            columns=list(OUTPUT_COLUMNS),
        )


def signature() -> mlflow.models.ModelSignature:
    """Input: a `text` string column. Output: the prediction columns (params as a list of strings)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array

    return ModelSignature(
        inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
        outputs=Schema(
            [
                ColSpec("string", "intent", required=False),
                ColSpec(Array("string"), "params"),
                ColSpec("double", "confidence", required=False),
                ColSpec("string", "call", required=False),
                ColSpec("string", "raw"),
            ]
        ),
    )


set_model(IntentDetectorModel())
