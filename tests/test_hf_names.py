"""The key/value cache keyword follows the installed transformers: `cache` in recent 5.x, `past_key_values` in the
5.17 the trainer image pins. Passing `cache=` to a 5.17 model is swallowed by its `**kwargs` and the cache is ignored."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from transformers.modeling_outputs import CausalLMOutputWithPast

from intentops.hf_names import cache_arg, output_cache


class Before:  # transformers <= 5.17
    def forward(self, input_ids: Any = None, past_key_values: Any = None, **kwargs: Any) -> None: ...


class After:  # transformers with the rename
    def forward(self, input_ids: Any = None, cache: Any = None, **kwargs: Any) -> None: ...


class Peft:
    def __init__(self, base: Any) -> None:
        self.base = base

    def get_base_model(self) -> Any:
        return self.base


def test_the_cache_keyword_is_the_one_the_models_forward_names() -> None:
    assert cache_arg(Before()) == "past_key_values"
    assert cache_arg(After()) == "cache"
    assert cache_arg(SimpleNamespace(module=Peft(After()))) == "cache"  # DDP/DeepSpeed around PEFT around the model
    assert cache_arg(SimpleNamespace(module=Before())) == "past_key_values"


def test_the_installed_qwen2_takes_what_cache_arg_says() -> None:
    import inspect

    from transformers import Qwen2ForCausalLM

    assert (
        cache_arg(Qwen2ForCausalLM.__new__(Qwen2ForCausalLM)) in inspect.signature(Qwen2ForCausalLM.forward).parameters
    )


def test_the_returned_cache_is_found_under_either_name() -> None:
    marker = object()
    assert output_cache(SimpleNamespace(past_key_values=marker)) is marker
    assert output_cache(SimpleNamespace(cache=marker)) is marker
    name = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
    assert output_cache(CausalLMOutputWithPast(logits=None, **{name: marker})) is marker  # the installed release


def test_checkpointing_is_named_as_the_arguments_class_reads_it() -> None:
    import dataclasses

    from intentops.hf_names import checkpointing_arg, checkpointing_on

    @dataclasses.dataclass
    class Old:  # transformers 5.17 TrainingArguments
        gradient_checkpointing: bool = False

    @dataclasses.dataclass
    class New(Old):  # later 5.x: the new name, the old one kept (and warning)
        activation_checkpointing: bool = False

    assert checkpointing_arg(Old, True) == {"gradient_checkpointing": True}
    assert checkpointing_arg(New, True) == {"activation_checkpointing": True}
    assert checkpointing_on(Old(gradient_checkpointing=True)) and not checkpointing_on(Old())
    assert checkpointing_on(New(activation_checkpointing=True)) and not checkpointing_on(New())
