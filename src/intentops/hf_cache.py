"""The key/value cache's name in transformers: `cache` in recent 5.x releases, `past_key_values` before (the trainer
image pins 5.17, the newest vLLM allows). Decoding, label scoring and SFT's shared prefix pass and read the cache
through these two functions, so they run on either release: an unknown keyword would be swallowed by the model's
`**kwargs` and the cache silently ignored.
"""

from __future__ import annotations

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
    """The keyword under which `model`'s forward takes a key/value cache."""
    parameters = inspect.signature(type(_unwrapped(model)).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The key/value cache a forward returned, under either name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
