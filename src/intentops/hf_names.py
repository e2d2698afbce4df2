"""Names transformers changed during 5.x, resolved against the installed release.

The trainer image pins transformers 5.17 (the newest vLLM allows) while a laptop may have a later 5.x: the key/value
cache is `cache` in recent releases and `past_key_values` before, and activation checkpointing is
`activation_checkpointing` in recent TrainingArguments and `gradient_checkpointing` before. Passing the wrong cache
keyword is not even an error (the model's `**kwargs` swallows it and the cache is silently ignored), so every forward
that passes a cache, and every trainer argument that names checkpointing, goes through here.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any


def _unwrapped(model: Any) -> Any:
    """The transformers model inside DDP/DeepSpeed (`.module`) and PEFT (`get_base_model`) wrappers."""
    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def cache_arg(model: Any) -> str:
    """The keyword under which `model`'s forward takes a key/value cache (looked up once per model class: decoding
    asks at every step)."""
    return _cache_arg_of(type(_unwrapped(model)))


@functools.cache
def _cache_arg_of(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The key/value cache a forward returned, under either name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def checkpointing_arg(args_class: type, on: bool) -> dict[str, bool]:
    """Activation checkpointing under the name `args_class` (a TrainingArguments dataclass) reads; the old name
    warns where the new one exists."""
    fields = {f.name for f in dataclasses.fields(args_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": on}


def checkpointing_on(args: Any) -> bool:
    """Whether trainer arguments turn activation checkpointing on, under either name."""
    return bool(getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", False))
